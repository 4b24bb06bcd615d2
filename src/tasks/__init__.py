"""LightningModules: one per task, sharing the training loop in ``base.Task``."""
