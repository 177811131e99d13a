"""Training and fine-tuning (single process or DDP under torchrun)."""
