"""Named parameter groups and the optimizer factory: the single place where per-group LRs are set.

Under SP every group gets the base LR; weight decay applies to matrices and embedding tables (≥ 2-D),
not to biases and norm gains, as in nanoGPT. Group names show up in LR monitors (``lr-AdamW/matrices``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import get_class
from torch import nn

# Keys of an optimizer config that are not constructor arguments of the torch optimizer.
_NOT_KWARGS = ("_target_", "grad_clip")


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """SP groups: ``matrices`` (decayed) and ``vectors`` (not decayed), both at the base LR."""
    groups: dict[str, dict[str, Any]] = {
        "matrices": {"name": "matrices", "params": [], "param_names": [], "lr": lr, "weight_decay": weight_decay},
        "vectors": {"name": "vectors", "params": [], "param_names": [], "lr": lr, "weight_decay": 0.0},
    }
    for name, param in model.named_parameters():
        if param.requires_grad:
            group = groups["matrices" if param.ndim >= 2 else "vectors"]
            group["params"].append(param)
            group["param_names"].append(name)
    return [g for g in groups.values() if g["params"]]


def build_optimizer(model: nn.Module, spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Instantiate ``spec['_target_']`` on the named groups of ``model``; other keys are its kwargs."""
    kwargs = {k: v for k, v in spec.items() if k not in _NOT_KWARGS}
    cls = get_class(spec["_target_"])
    groups = param_groups(model, kwargs.pop("lr"), kwargs.pop("weight_decay", 0.0))
    return cls(groups, lr=groups[0]["lr"], **kwargs)


def describe_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The plan as data: one row per group with its size and base hyperparameters (LR before any schedule)."""
    rows = []
    for group in optimizer.param_groups:
        row = {"name": group.get("name"), "tensors": len(group["params"]),
               "numel": sum(p.numel() for p in group["params"]), "lr": group.get("initial_lr", group["lr"])}
        row.update({k: v for k, v in group.items() if k in ("weight_decay", "eps")})
        rows.append(row)
    return rows
