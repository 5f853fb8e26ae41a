"""Jobs: one per modality, and the nightly job over the whole graph."""

import dagster as dg

image_job = dg.define_asset_job(
    "image_job",
    selection=dg.AssetSelection.tag("modality", "image"),
    description="Every image asset: collection to metrics.",
)

text_job = dg.define_asset_job(
    "text_job",
    selection=dg.AssetSelection.tag("modality", "text"),
    description="Every text asset: collection to metrics.",
)

nightly_job = dg.define_asset_job(
    "nightly_job",
    selection=dg.AssetSelection.all(),
    description="The whole graph, every modality; run by nightly_schedule.",
)

jobs = [image_job, text_job, nightly_job]
JOBS_BY_MODALITY = {"image": "image_job", "text": "text_job", "all": "nightly_job"}
