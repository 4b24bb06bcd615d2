"""Optimizers as the μP rules see them, named parameter groups, and the optimizer factory.

Every optimizer implementation declares its family (``rules.FAMILIES``) and how its ε enters the
update; the plan turns that into per-group LR, weight decay and ε. Parameter groups are named by role
(``input``, ``hidden``, ``output``, ``vector``, ``finite``, with a ``branch.`` prefix inside residual
blocks, and ``<Optimizer>/`` in hybrids), so LR monitors show ``lr-AdamW/branch.hidden``. Biases,
norm gains and other vectors are never weight-decayed (nanoGPT's convention, for every parametrization).

Gradient-norm clipping (``optimizer.grad_clip``) is a base HP carried as is: a global norm sums over
all parameters, so it grows with the parameter count and is not width-invariant; keep it loose (or
off) in transfer sweeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_class

# Keys of an optimizer config that are not constructor arguments of the optimizer.
_NOT_KWARGS = ("_target_", "grad_clip", "rest", "lr_ratio")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_forward_module.", "_fsdp_wrapped_module.")


@dataclass(frozen=True)
class OptimizerRule:
    """What the μP rules need to know about an optimizer implementation."""

    family: str  # how its raw update direction scales (rules.FAMILIES)
    eps_kind: str = "none"  # what its ε is added to (rules.EPS_KINDS)
    eps_key: str | None = None  # the constructor argument holding a per-group ε
    relative_step: bool = False  # step multiplied by RMS(W) (torch's Adafactor)
    matrices_only: bool = False  # takes 2-D hidden matrices only; the rest goes to the ``rest`` optimizer
    vector_family: str | None = None  # family of its 1-D updates; None: sign-like (an Adam inside)
    decay: str = "decoupled"  # "decoupled": W ← W − ηλW; "l2": λW is added to the gradient


def _choice(spec: Mapping[str, Any], key: str, table: Mapping[Any, str]) -> str:
    value = spec.get(key)
    if value not in table:
        raise ValueError(f"optimizer.{key}={value!r}; choose one of {', '.join(str(k) for k in table if k is not None)}")
    return table[value]


_MUON_FAMILY = {None: "orthogonal", "original": "orthogonal", "match_rms_adamw": "kimi",
                "spectral_unclamped": "spectral"}
# pytorch_optimizer's LayerWiseGrafting (NONE, SGD, ADAGRAD, RMSPROP, SQRTN): a grafted Shampoo takes
# its step size, hence its μP rule, from the graft.
_GRAFT_FAMILY = {None: "gradient", 0: "orthogonal", 1: "gradient", 2: "sign", 3: "sign", 4: "sign"}


def _decay(spec: Mapping[str, Any], key: str, default: bool) -> str:
    """How the optimizer applies weight decay: its flag ``key`` (the library's default when unset)."""
    return "decoupled" if spec.get(key, default) else "l2"


RULES: dict[str, OptimizerRule | Callable[[Mapping[str, Any]], OptimizerRule]] = {
    # torch's SGD adds λW to the gradient, which is exactly ΔW = −η(∇L + λW) of the paper's rule
    "torch.optim.SGD": OptimizerRule("gradient"),
    "torch.optim.Adam": lambda spec: OptimizerRule("sign", "adam", "eps",
                                                   decay=_decay(spec, "decoupled_weight_decay", False)),
    "torch.optim.AdamW": OptimizerRule("sign", "adam", "eps"),
    "torch.optim.Adafactor": OptimizerRule("sign", "adafactor", "eps", relative_step=True),
    "torch.optim.Muon": lambda spec: OptimizerRule(_choice(spec, "adjust_lr_fn", _MUON_FAMILY), matrices_only=True),
    "src.training.optimizers.Muon": lambda spec: RULES["torch.optim.Muon"](spec),  # torch's, NS dtype chosen
    "pytorch_optimizer.Lion": lambda spec: OptimizerRule("sign", decay=_decay(spec, "weight_decouple", True)),
    "pytorch_optimizer.SOAP": lambda spec: OptimizerRule(  # its Adam ε is a base HP (not in the tables)
        "orthogonal", "base", "eps", vector_family="orthogonal" if spec.get("precondition_1d") else None),
    # Shampoo preconditions 1-D parameters itself (update RMS ∝ n^-½): vectors follow the orthogonal rule.
    # Without weight_decouple it adds λW to the gradient before preconditioning (L2).
    "pytorch_optimizer.Shampoo": lambda spec: OptimizerRule(
        "orthogonal", "shampoo", "matrix_eps", vector_family="orthogonal",
        decay=_decay(spec, "weight_decouple", False)),
    # ScalableShampoo reads matrix_eps from the optimizer, not per group: its ε stays a base HP. Its
    # coupled decay adds λW to the grafted, preconditioned step, so either way it is ΔW = −η(A + λW).
    "pytorch_optimizer.ScalableShampoo": lambda spec: OptimizerRule(_choice(spec, "graft_type", _GRAFT_FAMILY)),
}


def optimizer_rule(spec: Mapping[str, Any], required: bool = True) -> OptimizerRule:
    """The rule of ``spec['_target_']``; without one, an error when ``required`` (μP), else a rule that
    only SP can use (one LR, ε left as configured)."""
    target = spec["_target_"]
    if target not in RULES:
        if required:
            raise ValueError(f"optimizer._target_={target} has no μP rule; use parametrization=sp or one "
                             f"of {', '.join(sorted(RULES))}")
        return OptimizerRule("unknown")
    rule = RULES[target]
    return rule(spec) if callable(rule) else rule


@dataclass(frozen=True)
class Part:
    """One optimizer of a (possibly hybrid) optimizer config."""

    name: str  # class name, used in group names
    target: str
    rule: OptimizerRule
    lr: float
    weight_decay: float
    kwargs: dict[str, Any]


def _part(spec: Mapping[str, Any], lr: float, required: bool) -> Part:
    kwargs = {k: v for k, v in spec.items() if k not in (*_NOT_KWARGS, "lr", "weight_decay")}
    return Part(spec["_target_"].rsplit(".", 1)[1], spec["_target_"], optimizer_rule(spec, required), lr,
                spec.get("weight_decay", 0.0), kwargs)


def optimizer_parts(spec: Mapping[str, Any], required: bool = True) -> list[Part]:
    """The optimizer, plus for a matrices-only one (Muon) the ``rest`` optimizer at lr_ratio × lr."""
    main, rest = _part(spec, spec["lr"], required), spec.get("rest")
    if not main.rule.matrices_only:
        return [main]
    if rest is None:
        raise ValueError(f"{main.target} only takes 2-D hidden matrices; give optimizer.rest "
                         "(e.g. torch.optim.AdamW) for the other parameters")
    return [main, _part(rest, spec["lr"] * rest.get("lr_ratio", 1.0), required)]


def _scaled_eps(value: Any, mult: float | tuple[float, float]) -> Any:
    """ε × mult; Adafactor's (ε₁, ε₂) element-wise by the plan's pair, or both by one SP multiplier
    (ε₁ None means float32's machine epsilon, torch's default)."""
    if not isinstance(value, (list, tuple)):
        return value * mult
    eps1 = torch.finfo(torch.float32).eps if value[0] is None else value[0]
    mult1, mult2 = mult if isinstance(mult, (list, tuple)) else (mult, mult)
    return (eps1 * mult1, value[1] * mult2)


class HybridOptimizer(torch.optim.Optimizer):
    """Several optimizers stepping disjoint parameter groups as one (Muon on hidden matrices, AdamW on
    the rest). Written here because torch has no such wrapper and Lightning's automatic optimization
    takes one optimizer; the group dicts are shared, so LR schedulers and monitors see every group."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        super().__init__([g for opt in optimizers for g in opt.param_groups], defaults={})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for opt, state in zip(self.optimizers, state_dict["optimizers"]):
            opt.load_state_dict(state)
        # torch's load_state_dict replaces each optimizer's group dicts: share the new ones again, or
        # schedulers would keep updating the old dicts while the optimizers step at stale LRs
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]


def unwrap_name(name: str) -> str:
    """The parameter name inside DDP/FSDP/compile wrappers."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def build_optimizer(model: torch.nn.Module, spec: Mapping[str, Any], plan) -> torch.optim.Optimizer:
    """One optimizer per part over the plan's named groups; a HybridOptimizer when there are two."""
    rows = {row.name: row for row in plan.rows}
    optimizers = []
    for part in optimizer_parts(spec, required=False):
        groups: dict[str, dict[str, Any]] = {}
        for name, param in model.named_parameters():
            row = rows[unwrap_name(name)]
            if row.part != part.name or not param.requires_grad:
                continue
            group = groups.setdefault(row.group, {"name": row.group, "params": [], "param_names": [],
                                                   "lr": part.lr * row.lr_mult,
                                                   "weight_decay": part.weight_decay * row.wd_mult})
            if part.rule.eps_key is not None and row.eps_mult is not None:
                group[part.rule.eps_key] = _scaled_eps(part.kwargs[part.rule.eps_key], row.eps_mult)
            group["params"].append(param)
            group["param_names"].append(name)
        cls = get_class(part.target)
        optimizers.append(cls(list(groups.values()), lr=part.lr, **part.kwargs))
    return optimizers[0] if len(optimizers) == 1 else HybridOptimizer(optimizers)


def describe_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """One row per group with its size and base hyperparameters (LR before any schedule)."""
    rows = []
    for group in optimizer.param_groups:
        row = {"name": group.get("name"), "tensors": len(group["params"]),
               "numel": sum(p.numel() for p in group["params"]), "lr": group.get("initial_lr", group["lr"])}
        row.update({k: v for k, v in group.items() if k in ("weight_decay", "eps", "matrix_eps")})
        rows.append(row)
    return rows
