"""Spectral norms for the μP diagnostics: ‖A‖_R = √(fan_in/fan_out)·σ_max(A), the RMS→RMS operator
norm, which μP keeps flat in width and depth for ‖W‖_R and ‖ΔW‖_R of hidden matrices
(docs/mup.md). σ_max comes from power iteration v ← AᵀAv/‖AᵀAv‖, which converges in a few
iterations when warm-started from the previous call's v.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from src.mup.shapes import fan_dims


def rms_norm_factor(module: nn.Module, attr: str, shape: torch.Size) -> float:
    """√(fan_in/fan_out) of a matrix, with fan dims read from its module type (rows/cols otherwise)."""
    out_dim, in_dim = fan_dims(module, attr) or (0, 1)
    fan_in = shape[in_dim] * math.prod(shape[2:])
    return math.sqrt(fan_in / shape[out_dim])


def power_iteration(matrix: torch.Tensor, v: torch.Tensor, iters: int) -> tuple[float, torch.Tensor]:
    """(σ_max(matrix), the updated right singular vector estimate)."""
    a = matrix.detach().float().flatten(1)
    for _ in range(iters):
        v = a.T @ (a @ v)
        v = v / v.norm().clamp_min(1e-30)
    return float((a @ v).norm()), v
