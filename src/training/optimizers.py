"""Optimizers the maintained libraries do not ship in the form a CPU study needs.

``Muon`` is ``torch.optim.Muon`` with the Newton–Schulz iteration run in a chosen dtype. torch casts
the momentum to bfloat16 before the iteration, which suits GPUs; on a CPU a bfloat16 matmul is about
6× slower than a float32 one (a 256 × 1024 by 1024 × 256 product: 36 ms against 6 ms,
experiments/optimizer_families/README.md), which made Muon 17× AdamW's step at width 256.
Everything else — momentum, Nesterov, the ``adjust_lr_fn`` step sizes, decoupled decay, state names —
is torch's own code path, so checkpoints and μP rules are the same.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import _muon


def newton_schulz(update: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> Tensor:
    """torch's quintic iteration X ← aX + (bXXᵀ + c(XXᵀ)²)X from X₀ = G/‖G‖_F, computed in ``dtype``
    on the wide orientation (≈ UVᵀ of G = USVᵀ), returned in G's dtype."""
    a, b, c = coefficients
    x = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).to(update.dtype)


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with ``ns_dtype`` for the Newton–Schulz iteration (torch: bfloat16)."""

    def __init__(self, params, *args, ns_dtype: str | torch.dtype = "bfloat16", **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        self.ns_dtype = getattr(torch, ns_dtype) if isinstance(ns_dtype, str) else ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            buffers: list[Tensor] = []
            self._init_group(group, params, grads, buffers)
            for param, grad, buf in zip(params, grads, buffers):
                buf.lerp_(grad, 1 - group["momentum"])
                update = grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                update = newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       self.ns_dtype)
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update, alpha=-_muon._adjust_lr(group["lr"], group["adjust_lr_fn"], param.shape))
        return loss
