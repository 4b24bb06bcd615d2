"""μP for any PyTorch model, in plain PyTorch (no Hydra, no Lightning).

    from src import mup

    def factory(width, depth, embed_mult=1.0, branch_mult=1.0, readout_mult=1.0):
        return MyModel(width, depth, embed_mult, branch_mult, readout_mult)

    arm = mup.Parametrization.named("completep", base_width=64, base_depth=2)
    adamw = mup.OptimizerSpec(torch.optim.AdamW, lr=3e-3, weight_decay=0.1)
    model, optimizer, plan = mup.setup(factory, width=512, depth=16, parametrization=arm, optimizer=adamw)

The factory builds the same architecture at any ``(width, depth)`` and takes the scalar multipliers
the plan gives it by keyword: ``embed_mult`` (α_in on the embedding output), ``branch_mult`` (α/r_L^β
on every residual branch), ``readout_mult`` (α_out/r_n on the logits) and, when ``head_dim`` is given,
``attn_scale`` (α_attn·√d_base/d_head on the attention logits). It may leave out any multiplier that is
neutral for the arm (an SP or width-only model needs no ``branch_mult``); one the arm needs and the
factory does not take is refused in one line. A model with no knob for a multiplier gets one from
:func:`scale_output`, a forward hook, so no model code is forked.

Roles come from shapes (``shapes.py``): the factory is also called at twice the base width and twice
the base depth on the meta device. The coordinate check on the same factory is :func:`coordinate_check`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from src.multipliers import scale_output  # noqa: F401 — part of the API
from src.mup import coord_check as cc
from src.mup.optim import OptimizerSpec, build_optimizer
from src.mup.plan import Parametrization, Plan, build_model, make_plan
from src.mup.shapes import ModelFactory


class Setup(NamedTuple):
    model: nn.Module
    optimizer: torch.optim.Optimizer
    plan: Plan


def setup(factory: ModelFactory, width: int, depth: int, parametrization: Parametrization,
          optimizer: OptimizerSpec, head_dim: int | None = None) -> Setup:
    """The plan at ``(width, depth)``, the model it initialises (μP init rescaled from the base-size
    twin's SP init) and the optimizer over its named parameter groups (LR, weight decay and ε per group).
    ``head_dim``: the attention head dimension at this size, when the factory takes ``attn_scale``; when
    it differs from the base size's, set the parametrization's ``base_head_dim``."""
    plan = make_plan(factory, width, depth, head_dim, parametrization, optimizer)
    model = build_model(plan)
    return Setup(model, build_optimizer(model, plan), plan)


def coordinate_check(factory: ModelFactory, arms: Sequence[str | Parametrization], optimizer: OptimizerSpec,
                loss: Callable[[nn.Module], torch.Tensor], probes: Mapping[str, Any], base: tuple[int, int],
                widths: Sequence[int] = (), depths: Sequence[int] = (), seeds: Sequence[int] = (0, 1, 2),
                steps: int = 5, judge_step: int | None = None, threshold: float = 0.1,
                tolerance: float = 0.2, head_dim: Callable[[int], int] | None = None,
                settings: Mapping[str, Any] | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """The coordinate check of ``factory`` (src/mup/coord_check.py): every arm over ``widths`` at the base
    depth and ``depths`` at the base width, ``steps`` optimizer steps of ``loss(model)`` (one fixed batch,
    a large constant LR), judged at ``judge_step`` (default: the last step).

    ``arms``: names (``Parametrization.named``, with ``base`` as their base size and ``settings`` as
    their other fields, e.g. ``zero_readout=True``) or Parametrizations (taken as they are, with their
    own base sizes). ``probes``: module names of the
    model, as in ``conf/probes/``: ``embedding``, ``blocks`` (the list of residual blocks), ``final``,
    ``branches`` (submodules of a block whose outputs are its branches) and ``preact`` (the inner layer
    of a block whose update tells the depth rules apart). ``head_dim(width)``: the head dimension, when
    the factory takes ``attn_scale`` (``base_head_dim`` defaults to ``head_dim(base width)``).
    Returns slopes, depth rules and a pass/fail verdict per ``"<arm>/<axis>"``; with ``out_dir``,
    also coord_check.{csv,png,json} there."""
    if not 0 < tolerance < cc.max_tolerance():
        raise ValueError(f"tolerance={tolerance!r} must be in (0, {cc.max_tolerance()}): above it one depth slope "
                         "would fit both depth rules")
    fields = dict(settings or {})
    base_head_dim = head_dim(base[0]) if head_dim is not None else None  # μP's √d_base/d_head needs it
    resolved: dict[str, Parametrization] = {}
    for arm in arms:
        arm = arm if isinstance(arm, Parametrization) else Parametrization.named(arm, *base, **fields)
        if arm.base_head_dim is None and base_head_dim is not None:
            arm = replace(arm, base_head_dim=base_head_dim)
        if arm.name in resolved:
            raise ValueError(f"two arms are named {arm.name!r}; give each Parametrization its own name")
        resolved[arm.name] = arm

    def run(name: str, width: int, depth: int, seed: int) -> list[dict[str, float]]:
        torch.manual_seed(seed)
        model, opt, plan = setup(factory, width, depth, resolved[name], optimizer,
                                 head_dim(width) if head_dim else None)
        return cc.measure(model, opt, lambda: loss(model), probes, plan.model_kwargs.get("branch_mult", 1.0),
                          steps)

    rows = cc.sweep(list(resolved), widths, depths, base, seeds, run)
    rules = {name: arm.depth_rule for name, arm in resolved.items()}
    step = steps if judge_step is None else judge_step
    if out_dir is None:
        return cc.judge(rows, step, threshold, rules, tolerance)
    return cc.save(rows, step, threshold, sorted({0, 1, step, steps}), Path(out_dir), rules, tolerance)
