"""Pure wrappers over torchmetrics, one module per modality."""
