"""Causal language modelling: next-token cross-entropy in nats per token."""

from __future__ import annotations

import torch

from src.tasks.base import Task


class CausalLMTask(Task):
    item_name = "tokens"

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        x, y = batch
        logits = self(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        return loss, y.numel()
