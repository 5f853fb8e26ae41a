"""Pure training code (no dagster import): fit (Lightning: checkpoints, resume, early stopping, DDP), data
loaders, fine-tuning on feedback, sampling."""
