"""Rectified flow (SD3 / MMDiT style): a straight path from data to noise and its velocity.

    x_t = (1 − t) x_0 + t ε,  t ∈ [0, 1]
    v   = ε − x_0,            L = mean ‖v − v_θ(x_t, t, y)‖²

Training t is drawn by the shared ``TimestepSampler`` (``task.timesteps``: iid uniform by default;
``logit_normal``, t = sigmoid(u) with u ~ N(0, 1), as SD3 trains MMDiT). Sampling integrates dx/dt = v_θ from t = 1 to 0 with Euler steps on a shifted
grid σ' = sσ/(1 + (s − 1)σ) (s > 1 spends more steps at high noise). The model sees t × ``time_scale``
so that the same sinusoidal timestep embedder serves DDPM's 0..999 and the flow's [0, 1].
"""

from __future__ import annotations

import torch

from src.diffusion.gaussian import ModelFn


class RectifiedFlow:
    can_learn_sigma = False  # it predicts a velocity only (a model with learn_sigma does not fit)

    def __init__(self, time_scale: float = 1000.0) -> None:
        self.time_scale = time_scale

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        t = t.float().view(-1, *([1] * (x0.ndim - 1)))
        return (1.0 - t) * x0 + t * noise

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-item velocity MSE (B,), t continuous in [0, 1)."""
        v = model_fn(self.q_sample(x0, t, noise), t.float() * self.time_scale)
        return ((noise - x0 - v) ** 2).flatten(1).mean(1)

    heldout_loss = loss  # the held-out loss is the training loss at fixed t and noise

    @staticmethod
    def eval_timesteps(count: int) -> torch.Tensor:
        """The fixed grid t_k = (k − ½)/count, k = 1..count."""
        return (torch.arange(count, dtype=torch.float64) + 0.5) / count

    @staticmethod
    def sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
        """steps + 1 times from 1 down to 0, shifted: σ' = sσ/(1 + (s − 1)σ)."""
        sigma = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return shift * sigma / (1.0 + (shift - 1.0) * sigma)

    @torch.no_grad()
    def sample(self, model_fn: ModelFn, noise: torch.Tensor, gen: torch.Generator | None = None, steps: int = 50,
               shift: float = 1.0) -> torch.Tensor:
        """Euler integration of dx/dt = v_θ(x, t) from x_1 = ``noise`` to t = 0 (deterministic: ``gen``
        is unused, accepted for the shared sampler signature)."""
        x = noise
        sigmas = self.sigmas(steps, shift)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            t = torch.full((x.shape[0],), float(s) * self.time_scale, device=x.device)
            x = x + float(s_next - s) * model_fn(x, t)
        return x
