"""Jobs: one per modality, and the nightly job over the whole graph."""

import dagster as dg

# A run started without run config (by a schedule, a sensor, the UI's launchpad) gets the Config classes'
# defaults: the demo profile.
DEFAULT_PROFILE = "demo"


def run_tags(profile: str, modality: str) -> dict[str, str]:
    """The tags of every run the project starts: the profile its config comes from and the modality it is
    for ("all": both), so the UI's run list can be filtered by either."""
    return {"gen_assets/profile": profile, "gen_assets/modality": modality}


image_job = dg.define_asset_job(
    "image_job",
    selection=dg.AssetSelection.tag("modality", "image") | dg.AssetSelection.assets("feedback"),
    description="Every image asset: collection to metrics.",
)

text_job = dg.define_asset_job(
    "text_job",
    selection=dg.AssetSelection.tag("modality", "text") | dg.AssetSelection.assets("feedback"),
    description="Every text asset: collection to metrics.",
)

nightly_job = dg.define_asset_job(
    "nightly_job",
    selection=dg.AssetSelection.all(),
    description="The whole graph, every modality; run by nightly_schedule.",
)

# what a retrain for one modality's feedback materializes, in graph order
RETRAIN_ASSETS = {
    "image": ["feedback", "image_reward_model", "tuned_image_generator", "image_champion", "generated_images",
              "curated_images", "image_metrics"],
    "text": ["feedback", "text_reward_model", "tuned_text_generator", "text_champion", "generated_texts",
             "curated_texts", "text_metrics"],
}

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets(*sorted({key for keys in RETRAIN_ASSETS.values() for key in keys})),
    description="Feedback -> reward model -> generator tuned on feedback -> champion (promoted or refused) -> "
    "generation -> curation with the new reward model -> evaluation. feedback_sensor runs it for the modality its new ratings concern.",
)

jobs = [image_job, text_job, nightly_job, retrain_job]
JOBS_BY_MODALITY = {"image": "image_job", "text": "text_job", "all": "nightly_job"}
