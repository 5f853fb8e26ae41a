"""Pure decisions (no dagster import): which samples are curated, when a model may become champion."""
