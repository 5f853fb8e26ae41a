"""Where state lives (GEN_ASSETS_HOME) and the named run profiles (smoke / demo / full).

Pure module: no dagster import. A profile is a mapping from asset name to the config of that asset's
Config class; `gen-assets run --profile NAME` and the tests turn it into Dagster run config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gen_assets.store.files import Location, is_url, location

DEFAULT_HOME = "./data"


@dataclass(frozen=True)
class Paths:
    """Every location under one home directory; moving GEN_ASSETS_HOME moves all of it.

    The artifacts (snapshots, model files, batches, reports) may live elsewhere: GEN_ASSETS_ARTIFACTS
    takes a folder or an fsspec URL (s3://bucket/gen-assets, gs://..., file:///mnt/shared/...). The
    warehouse file, Dagster's instance, the feedback landing zone and Lightning's training folders
    (resumable checkpoints, local scratch of the worker that trains) stay under the home directory.
    """

    home: Path
    artifacts_location: str | None = None  # None: <home>/artifacts

    @classmethod
    def from_env(cls) -> "Paths":
        home = Path(os.environ.get("GEN_ASSETS_HOME", DEFAULT_HOME)).expanduser().resolve()
        return cls(home, artifacts_location(os.environ.get("GEN_ASSETS_ARTIFACTS")))

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def artifacts(self) -> Location:
        return location(self.artifacts_location) if self.artifacts_location else self.home / "artifacts"

    @property
    def snapshots(self) -> Location:
        return self.artifacts / "snapshots"

    @property
    def models(self) -> Location:
        return self.artifacts / "models"

    @property
    def training(self) -> Path:
        return self.home / "artifacts" / "training"

    @property
    def batches(self) -> Location:
        return self.artifacts / "batches"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def feedback(self) -> Path:
        return self.home / "feedback"

    def ensure(self) -> "Paths":
        for p in (self.home, self.home / "artifacts", self.dagster_home, self.feedback):
            p.mkdir(parents=True, exist_ok=True)
        return self


def artifacts_location(value: str | None) -> str | None:
    """GEN_ASSETS_ARTIFACTS as given: None when unset or blank, a URL as it is, a folder made absolute."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if is_url(value):
        try:  # an unknown protocol or a missing filesystem package fails here, not at the first write
            location(value).fs
        except (ValueError, ImportError) as e:
            raise ValueError(
                f"GEN_ASSETS_ARTIFACTS={value!r}: {e}. s3:// needs s3fs, gs:// needs gcsfs "
                "(pip install 'gen-assets[s3]' or '[gcs]')"
            ) from None
        return value
    return str(Path(value).expanduser().resolve())


def timezone_from_env() -> str:
    """The schedule's timezone: GEN_ASSETS_TIMEZONE, else TZ, else UTC."""
    return os.environ.get("GEN_ASSETS_TIMEZONE") or os.environ.get("TZ") or "UTC"


# Run config per profile: asset name -> that asset's Config fields. "demo" is the Config classes'
# defaults (what the UI materializes); "smoke" is the whole graph in well under a minute for tests;
# "full" trains longer for better models.
PROFILES: dict[str, dict[str, dict]] = {
    "smoke": {
        "image_evaluator": {"max_epochs": 4, "patience": 2},
        "image_generator": {"max_epochs": 8, "patience": 8},
        "generated_images": {"samples_per_class": 20},
        "text_generator": {"max_iters": 4, "iters_per_epoch": 2, "batch_size": 4},
        "generated_texts": {"samples_per_brief": 1, "max_new_tokens": 16},
        "tuned_image_generator": {"candidates_per_category": 20, "steps": 20, "max_fid_increase": 10.0},
        "tuned_text_generator": {"candidates_per_brief": 1, "steps": 4, "batch_size": 4},
        "image_reward_model": {"min_ratings": 10},
        "text_reward_model": {"min_ratings": 10},
        # smoke models are barely trained, so their FID and loss move a lot from run to run: the gate's
        # plumbing runs, loosely (the decision rule itself is tested in gen_assets_tests/rules/test_promotion.py)
        "image_champion": {"per_class": 20, "tolerance": 10.0, "max_ratio_to_floor": None},
        "text_champion": {"tolerance": 0.5, "max_bits_per_byte": None, "max_degenerate_share": None,
                          "max_out_of_length_share": None, "reward_tolerance": None, "guard_briefs": 2,
                          "guard_samples_per_brief": 1, "max_new_tokens": 16},
    },
    "demo": {},
    "full": {
        "image_evaluator": {"max_epochs": 60, "patience": 10},
        "image_generator": {"max_epochs": 200, "patience": 50, "width": 32, "d_width": 32},
        "generated_images": {"samples_per_class": 500},
        "text_generator": {"max_iters": 60, "iters_per_epoch": 15, "patience": 3},
        "generated_texts": {"samples_per_brief": 8},
    },
}


def profile_run_config(profile: str, ops: set[str] | None = None) -> dict:
    """Dagster run config for a profile, limited to the ops (asset names) of the job being run."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return {
        "ops": {
            name: {"config": dict(cfg)}
            for name, cfg in PROFILES[profile].items()
            if ops is None or name in ops
        }
    }
