"""Masked-diffusion language modelling (LLaDA): pretraining on token streams, SFT on prompt–response rows.

Training loss (``src/diffusion/masked.py``): the t-form masked-diffusion loss with the ε floor, one
timestep and mask per sequence from a generator seeded by (seed, step, rank) alone. Pretraining
batches (x, y windows) make every token maskable; SFT batches (``src/data/pairs.py``) mask the
response and its EOS padding, never the prompt.

Validation, deterministic given the weights: ``val/loss`` is the same loss over ``heldout_copies``
fixed draws per held-out row (row i's from generator(seed, "heldout", i)); for SFT data
``val/accuracy`` is the exact-match rate of answers sampled with a fixed sampler (low-confidence
remasking, ``sample_steps`` per answer, temperature 0 unless set) against the held-out completions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from src.diffusion import masked
from src.diffusion.masked import answer_hits
from src.estimators import masks
from src.estimators.timesteps import Draw, generator
from src.tasks.base import OptimizerFactory, Task


class MaskedLMTask(Task):
    item_name = "tokens"
    metric_goals = {"val/loss": "min", "val/accuracy": "max"}

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, scheduler: Callable[..., float],
                 steps: int, compile: bool = False, record: Mapping[str, Any] | None = None, *, seed: int = 0, eps: float = 1e-3, timesteps: str = "iid",
                 heldout_copies: int = 8, sample_accuracy: bool = True, sample_steps: int | None = None,
                 temperature: float = 0.0) -> None:
        super().__init__(model, optimizer, scheduler, steps, compile, record)
        self.seed, self.eps, self.timesteps, self.heldout_copies = seed, eps, timesteps, heldout_copies
        self.sample_accuracy, self.sample_steps, self.temperature = sample_accuracy, sample_steps, temperature

    @staticmethod
    def maskable(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, maskable): every token of a pretraining window; response and padding of an SFT row."""
        if isinstance(batch, Mapping):
            return batch["completion"], batch["completion_response"] | batch["completion_padding"]
        tokens = batch[0]
        return tokens, torch.ones_like(tokens, dtype=torch.bool)

    def heldout_draw(self, index: torch.Tensor, length: int) -> Draw:
        """Fixed draws of held-out rows: row i's from its own generator, independent of batching."""
        draws = [masks.draw(self.heldout_copies, 1, 1, length, generator(self.seed, "heldout", i))
                 for i in index.tolist()]
        return Draw(torch.cat([d.t for d in draws], 1), torch.cat([d.noise for d in draws], 1))

    def loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        tokens, maskable = self.maskable(batch)
        if self.training:
            gen = generator(self.seed, self.global_step, self.global_rank, "masks")
            d = masks.draw(1, 1, len(tokens), tokens.shape[1], gen, self.timesteps)
        else:
            index = batch["index"] if isinstance(batch, Mapping) else torch.arange(len(tokens))
            d = self.heldout_draw(index.cpu(), tokens.shape[1])
        loss = masked.loss(self, tokens, maskable, d.to(tokens.device), self.model.mask_id, self.eps)
        return loss, int(tokens.numel())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self.sample_accuracy and isinstance(batch, Mapping):
            gen = generator(self.seed, "sampler", batch_idx) if self.temperature else None
            hits = answer_hits(self, batch["completion"], batch["completion_response"], batch["completion_padding"],
                               self.trainer.datamodule.layout, self.model.mask_id, steps=self.sample_steps,
                               temperature=self.temperature, gen=gen)
            self.add_val("val/accuracy", hits, len(batch["completion"]))
