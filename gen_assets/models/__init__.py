"""Pure torch / Lightning models (no dagster import): dcgan, vae, evaluator, gpt.

Load a saved model with `gen_assets.models.checkpoint.load_model(path)`.
"""
