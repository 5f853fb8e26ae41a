"""PNG encoding, sample grids and plots (no dagster import)."""
