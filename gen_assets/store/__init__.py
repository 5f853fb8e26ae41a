"""The warehouse (DuckDB tables and views), artifacts on disk, and the model registry. No dagster import."""
