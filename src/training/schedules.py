"""Learning-rate schedules as factors f(step) ∈ [0, 1] that multiply each parameter group's own LR.

They run through ``torch.optim.lr_scheduler.LambdaLR``, which scales every group from its own base
LR, so per-group ratios set by a parametrization are kept (an absolute ``eta_min`` would undo them).
``warmup`` and ``decay`` are fractions of the total number of steps; the warmup is linear from
1/warmup_steps to 1.
"""

from __future__ import annotations

import math


def warmup_steps(total: int, warmup: float = 0.0) -> int:
    return math.ceil(warmup * total)


def _warmup(step: int, total: int, warmup: float) -> float | None:
    steps = warmup_steps(total, warmup)
    return (step + 1) / steps if step < steps else None


def constant(step: int, total: int, warmup: float = 0.0) -> float:
    """f = 1 after the warmup."""
    return _warmup(step, total, warmup) or 1.0


def cosine(step: int, total: int, warmup: float = 0.1, final_ratio: float = 0.1) -> float:
    """Half-cosine from 1 to ``final_ratio`` between the end of warmup and the last step."""
    if (w := _warmup(step, total, warmup)) is not None:
        return w
    start = warmup_steps(total, warmup)
    progress = min(1.0, (step - start) / max(1, total - start))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd(step: int, total: int, warmup: float = 0.1, decay: float = 0.2, final_ratio: float = 0.0) -> float:
    """Warmup–stable–decay: 1 until the last ``decay`` fraction, then linear to ``final_ratio``."""
    if (w := _warmup(step, total, warmup)) is not None:
        return w
    decay_start = total - warmup_steps(total, decay)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / max(1, total - decay_start))
    return 1.0 + (final_ratio - 1.0) * progress
