"""The project file (gen_assets.yaml): what a project is, and the settings it makes effective.

Pure package: no dagster import. The Dagster layer hands in the asset Config classes to validate
against (gen_assets.defs.project).
"""
