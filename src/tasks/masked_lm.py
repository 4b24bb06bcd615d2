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
from src.estimators import masks
from src.estimators.timesteps import Draw, generator
from src.mup.plan import Plan
from src.tasks.base import Task


def sampled_answers(model: nn.Module, tokens: torch.Tensor, prompt_mask: torch.Tensor, mask_id: int,
                    gen: torch.Generator | None = None, **sampler: Any) -> list[torch.Tensor]:
    """Answers for each row's prompt (the first prompt_mask.sum() tokens), sampled over the rest of the
    row's length; rows are grouped by prompt length so each group is one batched sampler run."""
    lengths = prompt_mask.sum(-1)
    answers: list[torch.Tensor | None] = [None] * len(tokens)
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero().squeeze(-1)
        out = masked.sample(model, tokens[rows, :length], tokens.shape[1] - length, mask_id, gen=gen, **sampler)
        for i, row in enumerate(rows.tolist()):
            answers[row] = out[i]
    return answers


def answer_hits(model: nn.Module, tokens: torch.Tensor, response: torch.Tensor, padding: torch.Tensor, layout: Any,
                mask_id: int, **sampler: Any) -> int:
    """How many rows' sampled answers (from their prompts) decode to the same text as their responses."""
    answers = sampled_answers(model, tokens, ~(response | padding), mask_id, **sampler)
    return sum(layout.decode(a.tolist()) == layout.decode(t[r].tolist()) for a, t, r in zip(answers, tokens, response))


class MaskedLMTask(Task):
    item_name = "tokens"
    history_keys = ("val/loss", "val/accuracy")

    def __init__(self, model: nn.Module, plan: Plan, optimizer: Mapping[str, Any], scheduler: Callable[..., float],
                 steps: int, compile: bool = False, *, seed: int = 0, eps: float = 1e-3, timesteps: str = "iid",
                 heldout_copies: int = 8, sample_accuracy: bool = True, sample_steps: int | None = None,
                 temperature: float = 0.0) -> None:
        super().__init__(model, plan, optimizer, scheduler, steps, compile)
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
