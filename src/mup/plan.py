"""The μP plan: every parameter's role and multipliers as plain data, and the model built from it.

    plan = make_plan(factory, width, depth, head_dim, parametrization, optimizer_spec)
    model = build_model(plan)
    optimizer = build_optimizer(model, plan)

The plan carries what it was made from (the factory, the parametrization and the optimizer's parts),
so it is the one object callers pass around.

The plan is keyed by parameter name, so it survives DDP/FSDP wrapping, ``torch.compile`` and
checkpoint reloads (the weights come from the checkpoint; nothing is re-initialised or re-scaled).
At the base size every multiplier is 1 and the model is exactly the SP model with the same settings.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from src.mup.init import init_stds, record_init, rescale, same_std
from src.mup.optim import OptimizerSpec, Part, optimizer_parts
from src.mup.rules import DEPTH_RULES, ONE, Power, Rule, rule
from src.mup.shapes import ModelFactory, Role, infer_roles, normalize, tied_conflicts

ARMS = {"sp": (False, None), "mup": (True, None), "depth_mup": (True, "k1"), "completep": (True, "k2")}

@dataclass
class Parametrization:
    """A ``conf/parametrization`` option. The α's are the base HPs that μTransfer carries."""

    name: str = "sp"
    width_rule: bool = False  # μP width scaling; False: SP (one LR, the model's own init)
    depth_rule: str | None = None  # None | "k1" (Depth-μP: branch 1/√r_L) | "k2" (CompleteP: branch 1/r_L)
    base_width: int | None = None
    base_depth: int | None = None
    base_head_dim: int | None = None  # None: the model's head_dim (width grows by adding heads)
    embed_mult: float = 1.0  # α_in on the embedding output
    branch_mult: float = 1.0  # α on every residual branch (× 1/r_L^β)
    readout_mult: float = 1.0  # α_out on the logits (× 1/r_n)
    attn_mult: float = 1.0  # α_attn on the attention logits (× √d_base/d_head; SP: 1/√d_head)
    init_gain: float = 1.0  # σ: every random init's std × this (zero and constant inits stay), in every arm
    zero_readout: bool = False  # zero-initialise every output-role parameter
    zero_init: list[str] = field(default_factory=list)  # normalised names to zero-initialise (the query, ...)

    def __post_init__(self) -> None:
        if self.depth_rule not in DEPTH_RULES:
            raise ValueError(f"depth_rule={self.depth_rule!r}; choose null, k1 or k2")
        if self.depth_rule and not self.width_rule:
            raise ValueError("a depth_rule needs width_rule=true")
        for key in ("base_width", "base_depth"):
            value = getattr(self, key)
            if self.width_rule and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{key}={value!r}: {self.name} needs a positive base size")

    @classmethod
    def named(cls, name: str, base_width: int | None = None, base_depth: int | None = None,
              **settings: Any) -> Parametrization:
        """One of the four arms by name (``conf/parametrization/<name>.yaml``): sp, mup (width only),
        depth_mup (k = 1) or completep (k ≥ 2), with its base size and any other field."""
        if name not in ARMS:
            raise ValueError(f"parametrization {name!r}; choose one of {', '.join(ARMS)}")
        width_rule, depth_rule = ARMS[name]
        return cls(name=name, width_rule=width_rule, depth_rule=depth_rule, base_width=base_width,
                   base_depth=base_depth, **settings)


@dataclass
class PlanRow:
    name: str
    key: str  # the name with depth-repeated block indices replaced by * (blocks.*.attn.q.weight)
    group: str  # parameter-group name
    part: str  # the optimizer (class name) that updates it
    label: str
    in_branch: bool
    init_mult: float
    forward_mult: float
    lr_mult: float
    wd_mult: float
    eps_mult: float | tuple[float, float] | None  # one per ε of the optimizer (Adafactor: ε₁, ε₂)
    rule: str  # the multipliers as powers of r_n and r_L, for reading
    init_std: float | None = None  # the std the built model's tensor got (set by build_model; 0: constant)
    init_const: float | None = None  # the value of a constant tensor (ones, zeros), else None (build_model)


@dataclass
class Plan:
    parametrization: str
    width: int
    depth: int
    base_width: int
    base_depth: int
    r_n: float
    r_L: float
    model_kwargs: dict[str, float]  # the scalars the model receives
    depth_containers: list[str]  # the module lists that repeat with depth
    rows: list[PlanRow]
    # what the plan was made from (not part of its record)
    factory: ModelFactory = field(repr=False, compare=False, default=None)
    param: Parametrization = field(repr=False, compare=False, default=None)
    parts: list[Part] = field(repr=False, compare=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The plan as data (sizes, multipliers, rows), for records and checkpoints."""
        return {f.name: _data(getattr(self, f.name)) for f in fields(self) if f.compare}

    def groups(self) -> list[dict[str, Any]]:
        """One entry per parameter group: its multipliers and members (for metrics.json)."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            entry = out.setdefault(row.group, {k: getattr(row, k) for k in (
                "group", "part", "label", "in_branch", "init_mult", "lr_mult", "wd_mult", "eps_mult", "rule")})
            entry.setdefault("params", []).append(row.name)
        return list(out.values())

    def group_lrs(self) -> dict[str, float]:
        """Each parameter group's base learning rate: its optimizer's LR × the group's LR multiplier."""
        base = {part.spec.name: part.spec.lr for part in self.parts}
        return {row.group: base[row.part] * row.lr_mult for row in self.rows}

    def table(self) -> str:
        head = (f"plan: {self.parametrization}  width {self.width} (base {self.base_width}, r_n {self.r_n:g})  "
                f"depth {self.depth} (base {self.base_depth}, r_L {self.r_L:g})\n"
                f"model multipliers: " + ", ".join(f"{k}={v:.6g}" for k, v in self.model_kwargs.items()))
        cols = ("name", "group", "label", "init", "init_mult", "forward_mult", "lr_mult", "wd_mult", "eps_mult",
                "rule")
        lines = [[str(c) for c in cols]] + [[_fmt(_init(r) if c == "init" else getattr(r, c)) for c in cols]
                                            for r in self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
        return head + "\n" + "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in lines)


def _data(value: Any) -> Any:
    return [asdict(v) for v in value] if isinstance(value, list) and value and isinstance(value[0], PlanRow) else value


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "/".join(_fmt(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)


def _init(row: PlanRow) -> float | str | None:
    """A tensor's init as the table shows it: its std, or a constant tensor's value."""
    if row.init_const is None:
        return row.init_std
    return {0.0: "0 (zeros)", 1.0: "1 (ones)"}.get(row.init_const, f"{row.init_const:.4g} (constant)")


def _power_text(power: Power | tuple[Power, ...] | None) -> str:
    """A rule's multiplier as powers of r_n and r_L; a pair (Adafactor's ε₁, ε₂) as ``a/b``."""
    return "-" if power is None else "/".join(map(str, power)) if isinstance(power, tuple) else str(power)


def _group(role: Role, part: Part, hybrid: bool, factored: bool) -> str:
    """The parameter group: the role's, ``<Optimizer>/`` in hybrids, and ``.factored`` for a ≥ 2-D
    vector under Adafactor (its ε₁ is in G² units, that of the 1-D vectors in gradient units)."""
    group = f"{part.spec.name}/{role.group}" if hybrid else role.group
    return f"{group}.factored" if factored and role.label == "vector" and part.rule.eps_kind == "adafactor" else group


def _base_sizes(param: Parametrization, width: int, depth: int) -> tuple[int, int]:
    return (param.base_width or width, param.base_depth or depth)


def model_multipliers(param: Parametrization, r_n: float, r_L: float, head_dim: int | None) -> dict[str, float]:
    """embed_mult, branch_mult, readout_mult and attn_scale for the model constructor."""
    beta = float(DEPTH_RULES[param.depth_rule])
    kwargs = {
        "embed_mult": param.embed_mult,
        "branch_mult": param.branch_mult * r_L**-beta,
        "readout_mult": param.readout_mult / (r_n if param.width_rule else 1.0),
    }
    if head_dim is not None:
        d_base = param.base_head_dim or head_dim
        scale = math.sqrt(d_base) / head_dim if param.width_rule else 1.0 / math.sqrt(head_dim)
        kwargs["attn_scale"] = param.attn_mult * scale
    return kwargs


_MEANING = {"embed_mult": "embedding output ×", "branch_mult": "every residual branch ×",
            "readout_mult": "logits ×", "attn_scale": "attention logits ×"}


def expressible(factory: ModelFactory, kwargs: dict[str, float], head_dim: int | None,
                where: str) -> dict[str, float]:
    """The multipliers the factory takes. One it does not take is dropped where its value is the
    neutral one (1; 1/√d_head for the attention scale) and refused otherwise, in one line: a model
    that cannot express a multiplier must not get a plan that assumes it."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params}
    out = {}
    for key, value in kwargs.items():
        neutral = 1.0 / math.sqrt(head_dim) if key == "attn_scale" else 1.0
        if key in names:
            out[key] = value
        elif not math.isclose(value, neutral, rel_tol=1e-9):
            name = getattr(factory, "__qualname__", type(factory).__name__)
            raise ValueError(f"{name} takes no {key} argument, but {where} needs the {_MEANING[key]} "
                             f"{value:.6g} (neutral {neutral:.6g}); give the factory that argument "
                             "(src.mup.scale_output adds one to any module)")
    return out


def make_plan(factory: ModelFactory, width: int, depth: int, head_dim: int | None,
              param: Parametrization, optimizer: OptimizerSpec) -> Plan:
    """Roles from shapes, multipliers from the spectral rules, for one model size and optimizer."""
    base_width, base_depth = _base_sizes(param, width, depth)
    r_n, r_L = width / base_width, depth / base_depth
    kwargs = expressible(factory, model_multipliers(param, r_n, r_L, head_dim), head_dim,
                         f"{param.name} at width {width}, depth {depth}")
    with torch.device("meta"):
        model = factory(width=width, depth=depth, **kwargs)
    roles, containers = infer_roles(factory, (base_width, base_depth), model)
    if param.width_rule and (pairs := tied_conflicts(model, roles)):
        a, b = pairs[0]
        raise ValueError(f"{a} is shared with {b} ({roles[a].label} and {roles[b].label}); "
                         f"{param.name} needs an untied readout (set model.tie_head=false)")
    parts = optimizer_parts(optimizer, required=param.width_rule)
    keys = {normalize(name, containers) for name, _ in model.named_parameters()}
    if unknown := [k for k in param.zero_init if k not in keys]:
        raise ValueError(f"zero_init names no parameter: {', '.join(unknown)} (names look like "
                         f"{next(iter(sorted(keys)))}; blocks as *)")
    rows = []
    for name, p in model.named_parameters():
        role = roles[name]
        part = parts[0] if not parts[0].rule.matrices_only or (role.label == "hidden" and p.ndim == 2) else parts[1]
        if param.width_rule:
            family = part.rule.family
            if role.label in ("vector", "finite") and family not in ("gradient", "sign"):
                family = part.rule.vector_family or "sign"
            r = rule(role.label, role.in_branch, family, param.depth_rule, part.rule.eps_kind,
                     part.rule.relative_step, part.rule.decay, factored=p.ndim > 1)
        else:
            r = Rule(init=ONE, forward=ONE, lr=ONE, wd=ONE, eps=ONE if part.rule.eps_key else None)
        value = lambda power: power.value(r_n, r_L)  # noqa: E731
        decays = role.label in ("input", "hidden", "output")
        eps = None if r.eps is None else tuple(map(value, r.eps)) if isinstance(r.eps, tuple) else value(r.eps)
        rows.append(PlanRow(
            name=name, key=normalize(name, containers), group=_group(role, part, len(parts) > 1, p.ndim > 1),
            part=part.spec.name, label=role.label, in_branch=role.in_branch,
            init_mult=value(r.init), forward_mult=value(r.forward), lr_mult=value(r.lr),
            wd_mult=value(r.wd) if decays else 0.0, eps_mult=eps,
            rule=f"init {r.init}, lr {r.lr}, wd {r.wd if decays else 0}, eps {_power_text(r.eps)}",
        ))
    return Plan(param.name, width, depth, base_width, base_depth, r_n, r_L, kwargs, sorted(containers), rows,
                factory, param, parts)


def build_model(plan: Plan) -> nn.Module:
    """The model at the plan's size with its multipliers; under μP each tensor's init is rescaled to
    its base-size SP std × init multiplier (see init.py); ``init_gain`` σ multiplies every std."""
    factory, param = plan.factory, plan.param
    with record_init() as recorded:
        model = factory(width=plan.width, depth=plan.depth, **plan.model_kwargs)
    current = init_stds(model, recorded)
    targets = {row.name: current[row.name] * param.init_gain for row in plan.rows}
    at_base = (plan.width, plan.depth) == (plan.base_width, plan.base_depth)  # the model is its own base twin
    if param.width_rule and not at_base:
        targets.update(_base_targets(factory, plan))
    for row in plan.rows:
        if (param.zero_readout and row.label == "output") or row.key in param.zero_init:
            targets[row.name] = 0.0
    rescale(model, targets, current)
    params = dict(model.named_parameters())
    for row in plan.rows:
        row.init_std = targets[row.name] if targets[row.name] is not None else current[row.name]
        row.init_const = _constant(params[row.name])
    return model


def _constant(p: torch.Tensor) -> float | None:
    """The value of a tensor whose entries are all equal (ones, zeros, a fill), else None."""
    flat = p.detach().flatten()
    return float(flat[0]) if flat.numel() and bool((flat == flat[0]).all()) else None


def _base_targets(factory: ModelFactory, plan: Plan) -> dict[str, float]:
    """Target std per parameter: the SP std of its base-size twin × its init multiplier × the gain."""
    with torch.random.fork_rng(), record_init() as recorded:  # leaves the run's RNG stream untouched
        base = factory(width=plan.base_width, depth=plan.base_depth)
    sizes = {name: p.numel() for name, p in base.named_parameters()}
    base_std: dict[str, float] = {}
    for name, std in init_stds(base, recorded).items():
        key = normalize(name, set(plan.depth_containers))
        if not same_std(base_std.setdefault(key, std), std, sizes[name]):
            raise ValueError(f"{name}: its init std {std:g} differs from {base_std[key]:g} in another block "
                             f"of the base model; μP init needs one init per list entry ({key})")
    return {row.name: base_std[row.key] * row.init_mult * plan.param.init_gain for row in plan.rows}
