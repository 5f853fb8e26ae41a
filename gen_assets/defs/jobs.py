"""Jobs: one per modality, the nightly job over the whole graph, and the retrain job.

They are built with the project's run config (gen_assets.yaml) as their default config, so a job
launched from the UI's launchpad collects the project's data with the project's settings."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

# what a retrain for one modality's feedback materializes, in graph order: the ratings and the events (clicks
# are reward-model labels too) first
RETRAIN_ASSETS = {
    "image": ["feedback", "events", "experiments", "image_reward_model", "tuned_image_generator", "image_champion",
              "generated_images", "curated_images", "image_metrics"],
    "text": ["feedback", "events", "experiments", "text_reward_model", "tuned_text_generator", "text_champion",
             "generated_texts", "curated_texts", "text_metrics"],
}

# name -> (selection, description)
JOB_SPECS: dict[str, tuple[dg.AssetSelection, str]] = {
    "image_job": (dg.AssetSelection.tag("modality", "image")
                  | dg.AssetSelection.assets("feedback", "events", "experiments"),
                  "Every image asset: collection to metrics."),
    "text_job": (dg.AssetSelection.tag("modality", "text")
                 | dg.AssetSelection.assets("feedback", "events", "experiments"),
                 "Every text asset: collection to metrics."),
    "nightly_job": (dg.AssetSelection.all(), "The whole graph, every modality; run by nightly_schedule."),
    "retrain_job": (
        dg.AssetSelection.assets(*sorted({key for keys in RETRAIN_ASSETS.values() for key in keys})),
        "Feedback and events -> experiments -> reward model -> generator tuned on feedback -> champion (promoted, "
        "refused, a challenger, or decided by its experiment) -> "
        "generation -> curation with the new reward model -> evaluation. feedback_sensor runs it for the modality "
        "its new ratings concern.",
    ),
}
JOBS_BY_MODALITY = {"image": "image_job", "text": "text_job", "all": "nightly_job"}

# A run started without a profile (by a schedule, a sensor, the UI's launchpad) gets the project's settings
# over the Config classes' defaults: the demo profile.
DEFAULT_PROFILE = "demo"


def run_tags(profile: str, modality: str) -> dict[str, str]:
    """The tags of every run the project starts: the profile its config comes from and the modality it is
    for ("all": both), so the UI's run list can be filtered by either."""
    return {"gen_assets/profile": profile, "gen_assets/modality": modality}


def build_jobs(config_for: Callable[[dg.AssetSelection], dict] | None = None) -> dict:
    """The jobs by name; config_for(selection) gives a job's default run config (None: the Config defaults)."""
    return {
        name: dg.define_asset_job(name, selection=selection, description=description,
                                  config=config_for(selection) if config_for else None)
        for name, (selection, description) in JOB_SPECS.items()
    }
