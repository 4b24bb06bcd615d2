"""Class-conditional image diffusion for every diffusion Transformer (DiT, U-ViT, PixArt-α, MMDiT),
with a DDPM or rectified-flow objective.

Training: per image one timestep and one noise draw (``TimestepSampler``: iid, stratified or
logit-normal), from a generator seeded by (seed, step, rank) alone, so every arm and width of a sweep
sees the same t and ε (common random numbers) and a resumed run the same ones it would have seen;
labels are replaced by the null label with probability ``label_dropout`` (classifier-free guidance).

Validation, ``val/loss``: the held-out denoising loss, deterministic given the weights — the mean
ε-MSE (velocity MSE for the flow) over every held-out image × ``heldout_timesteps`` fixed timesteps
t_k = (k − ½)/K × one fixed noise draw per (image, k). It is the sweep metric of the DiT-μP studies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from src.estimators.timesteps import TimestepSampler, generator
from src.tasks.base import OptimizerFactory, Task


class ImageDiffusionTask(Task):
    item_name = "images"
    report_extras = ("samples",)  # sample grids, Fréchet distance and class accuracy of each size's best run

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, scheduler: Callable[..., float],
                 steps: int, compile: bool = False, record: Mapping[str, Any] | None = None, *, objective: Any, timesteps: str = "iid",
                 label_dropout: float = 0.1, seed: int = 0, heldout_timesteps: int = 10) -> None:
        super().__init__(model, optimizer, scheduler, steps, compile, record)
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout={label_dropout!r} must be in [0, 1)")
        if label_dropout > 0:
            model.null_label  # noqa: B018 — raises when the model has no null label
        self.objective, self.sampler = objective, TimestepSampler(timesteps)
        self.label_dropout, self.seed, self.heldout_timesteps = label_dropout, seed, heldout_timesteps
        self._heldout_noise: dict[int, torch.Tensor] = {}

    def model_fn(self, y: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x, t: self(x, t, y)

    def loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, int]:
        if not self.training:
            return self.heldout_loss(*batch), len(batch[0])
        x, y = batch
        gen = generator(self.seed, self.global_step, self.global_rank, "diffusion")
        draw = self.sampler.draw(1, len(x), gen, tuple(x.shape[1:])).copy(0).to(x.device)
        if self.label_dropout > 0:
            drop = (torch.rand(len(y), generator=gen) < self.label_dropout).to(y.device)
            y = torch.where(drop, torch.full_like(y, self.model.null_label), y)
        return self.objective.loss(self.model_fn(y), x, draw.t, draw.noise).mean(), len(x)

    def heldout_noise(self, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The fixed noise of held-out images ``index``, (B, K, *shape): image i's comes from its own
        generator (seed, "heldout", i), so it does not depend on batch size or order. Cached."""
        for i in index.tolist():
            if i not in self._heldout_noise:
                gen = generator(self.seed, "heldout", i)
                self._heldout_noise[i] = torch.randn((self.heldout_timesteps, *shape), generator=gen)
        return torch.stack([self._heldout_noise[i] for i in index.tolist()])

    @torch.no_grad()
    def heldout_loss(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Mean over the batch's images and the K fixed timesteps of the per-image denoising loss."""
        noise = self.heldout_noise(index.cpu(), tuple(x.shape[1:])).to(x.device)
        grid = self.objective.eval_timesteps(self.heldout_timesteps)
        losses = [self.objective.heldout_loss(self.model_fn(y), x, grid[k].expand(len(x)).to(x.device), noise[:, k])
                  for k in range(self.heldout_timesteps)]
        return torch.stack(losses).mean()
