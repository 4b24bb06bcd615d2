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

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_forward_module.", "_fsdp_wrapped_module.")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer class and its base hyperparameters: what the plan and ``build_optimizer`` read.

    ``kwargs`` are the other constructor arguments (betas, ε, momentum, ...). A matrices-only
    optimizer (Muon) takes 2-D hidden matrices only and needs ``rest``, the spec of the optimizer of
    every other parameter (with its own LR: Muon's presets set it to a ratio of Muon's)."""

    cls: type
    lr: float
    weight_decay: float = 0.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    rest: OptimizerSpec | None = None

    @property
    def name(self) -> str:
        """The class name, used in parameter-group names (``AdamW/branch.hidden``)."""
        return self.cls.__name__


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


def _choice(spec: OptimizerSpec, key: str, table: Mapping[Any, str]) -> str:
    value = spec.kwargs.get(key)
    if value not in table:
        raise ValueError(f"optimizer.{key}={value!r}; choose one of {', '.join(str(k) for k in table if k is not None)}")
    return table[value]


_MUON_FAMILY = {None: "orthogonal", "original": "orthogonal", "match_rms_adamw": "kimi",
                "spectral_unclamped": "spectral"}
# pytorch_optimizer's LayerWiseGrafting (NONE, SGD, ADAGRAD, RMSPROP, SQRTN): a grafted Shampoo takes
# its step size, hence its μP rule, from the graft.
_GRAFT_FAMILY = {None: "gradient", 0: "orthogonal", 1: "gradient", 2: "sign", 3: "sign", 4: "sign"}


def _decay(spec: OptimizerSpec, key: str, default: bool) -> str:
    """How the optimizer applies weight decay: its flag ``key`` (the library's default when unset)."""
    return "decoupled" if spec.kwargs.get(key, default) else "l2"


Rules = dict[type, "OptimizerRule | Callable[[OptimizerSpec], OptimizerRule]"]

RULES: Rules = {
    # torch's SGD adds λW to the gradient, which is exactly ΔW = −η(∇L + λW) of the paper's rule
    torch.optim.SGD: OptimizerRule("gradient"),
    torch.optim.Adam: lambda spec: OptimizerRule("sign", "adam", "eps",
                                                 decay=_decay(spec, "decoupled_weight_decay", False)),
    torch.optim.AdamW: OptimizerRule("sign", "adam", "eps"),
    torch.optim.Adafactor: OptimizerRule("sign", "adafactor", "eps", relative_step=True),
    torch.optim.Muon: lambda spec: OptimizerRule(_choice(spec, "adjust_lr_fn", _MUON_FAMILY), matrices_only=True),
}


def _pytorch_optimizer_rules() -> Rules:
    """pytorch_optimizer's families, added the first time one of its classes is looked up (importing
    the library costs seconds, and a class of it can only be looked up once it is imported)."""
    import pytorch_optimizer as po

    return {
        po.Lion: lambda spec: OptimizerRule("sign", decay=_decay(spec, "weight_decouple", True)),
        # SOAP is Adam in a rotated basis, and a rotation keeps both the spectral norm of Adam's dense
        # Θ(1)-entry direction and the RMS of the gradient its ε is added to: the sign-like row, Adam's ε
        # (vectors too, preconditioned or not). The paper's orthogonal row holds only in the eigenbasis of
        # the current gradient with exact zeros off its diagonal; measured, SOAP's hidden update grows
        # like AdamW's with width (experiments/coord_check/update_scale.py).
        po.SOAP: OptimizerRule("sign", "adam", "eps"),
        # Shampoo preconditions 1-D parameters itself (update RMS ∝ n^-½): vectors follow the orthogonal
        # rule. Without weight_decouple it adds λW to the gradient before preconditioning (L2).
        po.Shampoo: lambda spec: OptimizerRule(
            "orthogonal", "shampoo", "matrix_eps", vector_family="orthogonal",
            decay=_decay(spec, "weight_decouple", False)),
        # ScalableShampoo reads matrix_eps from the optimizer, not per group: its ε stays a base HP. Its
        # coupled decay adds λW to the grafted, preconditioned step, so either way it is ΔW = −η(A + λW).
        po.ScalableShampoo: lambda spec: OptimizerRule(_choice(spec, "graft_type", _GRAFT_FAMILY)),
    }


_LAZY_RULES: dict[str, Callable[[], Rules]] = {"pytorch_optimizer": _pytorch_optimizer_rules}


def register_rule(cls: type, rule: OptimizerRule | Callable[[OptimizerSpec], OptimizerRule]) -> None:
    """Declare how an optimizer class (and its subclasses) scales under μP."""
    RULES[cls] = rule


def optimizer_rule(spec: OptimizerSpec, required: bool = True) -> OptimizerRule:
    """The rule of ``spec.cls`` or of its nearest base class that has one (a subclass of torch's Muon
    is Muon); without one, an error when ``required`` (μP), else a rule that only SP can use (one LR,
    ε left as configured)."""
    for cls in spec.cls.__mro__:
        if (package := cls.__module__.split(".")[0]) in _LAZY_RULES:
            RULES.update(_LAZY_RULES.pop(package)())
        if cls in RULES:
            rule = RULES[cls]
            return rule(spec) if callable(rule) else rule
    if required:
        known = sorted(f"{c.__module__.split('.')[0]}.{c.__name__}" for c in RULES)
        raise ValueError(f"{spec.cls.__name__} has no μP rule; use parametrization=sp, register one "
                         f"(src.mup.optim.register_rule) or use one of {', '.join(known)}")
    return OptimizerRule("unknown")


class Part(NamedTuple):
    """One optimizer of a (possibly hybrid) optimizer: its spec and its rule."""

    spec: OptimizerSpec
    rule: OptimizerRule


def optimizer_parts(spec: OptimizerSpec, required: bool = True) -> list[Part]:
    """The optimizer, plus for a matrices-only one (Muon) the ``rest`` optimizer."""
    main = Part(spec, optimizer_rule(spec, required))
    if not main.rule.matrices_only:
        return [main]
    if spec.rest is None:
        raise ValueError(f"{spec.name} only takes 2-D hidden matrices; give optimizer.rest "
                         "(e.g. torch.optim.AdamW) for the other parameters")
    return [main, Part(spec.rest, optimizer_rule(spec.rest, required))]


def _scaled_eps(value: Any, mult: float | tuple[float, float]) -> Any:
    """ε × mult; Adafactor's (ε₁, ε₂) element-wise by the plan's pair, or both by one SP multiplier
    (ε₁ None means float32's machine epsilon, torch's default)."""
    if not isinstance(value, (list, tuple)):
        return value * mult
    eps1 = torch.finfo(torch.float32).eps if value[0] is None else value[0]
    mult1, mult2 = mult if isinstance(mult, (list, tuple)) else (mult, mult)
    return (eps1 * mult1, value[1] * mult2)


def _base_eps(spec: OptimizerSpec, key: str) -> Any:
    """The spec's ε, or the optimizer class's default when the spec does not set it."""
    if key in spec.kwargs:
        return spec.kwargs[key]
    default = inspect.signature(spec.cls).parameters.get(key)
    if default is None or default.default is inspect.Parameter.empty:
        raise ValueError(f"{spec.name} has no default {key}; set it in the optimizer's kwargs")
    return default.default


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


def build_optimizer(model: torch.nn.Module, plan) -> torch.optim.Optimizer:
    """One optimizer per part of the plan over its named groups; a HybridOptimizer when there are two."""
    rows = {row.name: row for row in plan.rows}
    optimizers = []
    for part in plan.parts:
        spec, groups = part.spec, {}
        for name, param in model.named_parameters():
            row = rows[unwrap_name(name)]
            if row.part != spec.name or not param.requires_grad:
                continue
            group = groups.setdefault(row.group, {"name": row.group, "params": [], "param_names": [],
                                                   "lr": spec.lr * row.lr_mult,
                                                   "weight_decay": spec.weight_decay * row.wd_mult})
            if part.rule.eps_key is not None and row.eps_mult is not None:
                group[part.rule.eps_key] = _scaled_eps(_base_eps(spec, part.rule.eps_key), row.eps_mult)
            group["params"].append(param)
            group["param_names"].append(name)
        optimizers.append(spec.cls(list(groups.values()), lr=spec.lr, **spec.kwargs))
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
