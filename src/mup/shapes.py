"""Parameter roles from shapes alone: which dimensions of each parameter grow with width, and which
parameters sit inside modules that repeat with depth.

The model is built three times on the meta device (free): at the base size, at twice the base width,
and at twice the base depth. A dimension whose size differs between the base and the width twin
grows with width. A ModuleList/Sequential whose length differs between the base and the depth twin
repeats with depth, and the index after it is normalised (``blocks.7.attn.q.weight`` →
``blocks.*.attn.q.weight``, nested lists too) so that models of any depth match their twins.
Fan-in and fan-out are read from the owning module's type, so an Embedding table (vocab, n) is
``input`` although its shape looks like a readout's.

Labels: ``input`` (fixed → grown), ``hidden`` (grown → grown), ``output`` (grown → fixed), ``vector``
(one grown dim: biases, norm gains, tables), ``finite`` (nothing grows). ``in_branch``: the parameter
lives in a depth-repeated module (a residual block). Whatever the shapes cannot decide is an error
that names the parameter: a raw 2-D ``nn.Parameter`` with two grown dims, blocks of one list whose
shapes differ, lists whose length grows with width. A model may name roles in its optional
``mup_roles`` dict (normalised name → label, or (label or None, in_branch)), the only μP knowledge it may
carry: e.g. ``(None, True)`` marks a residual block that is not in a depth-repeated list as a branch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from src.mup.rules import LABELS

ModelFactory = Callable[..., nn.Module]  # factory(width=..., depth=...) -> model


class RoleError(ValueError):
    """A parameter whose role cannot be decided from shapes."""


@dataclass(frozen=True)
class Role:
    label: str
    in_branch: bool

    @property
    def group(self) -> str:
        """The parameter-group name: the label, prefixed by ``branch.`` inside residual blocks."""
        return f"branch.{self.label}" if self.in_branch and self.label != "finite" else self.label


def _containers(model: nn.Module) -> dict[str, int]:
    return {name: len(m) for name, m in model.named_modules() if isinstance(m, (nn.ModuleList, nn.Sequential))}


def depth_containers(base: nn.Module, deeper: nn.Module) -> set[str]:
    """Normalised names of the ModuleLists/Sequentials whose length changes with depth (outer first,
    so a list inside every block is found as ``blocks.*.inner``)."""
    a, b = _containers(base), _containers(deeper)
    found: set[str] = set()
    for name in sorted(a.keys() & b.keys(), key=lambda n: n.count(".")):
        if a[name] != b[name]:
            found.add(normalize(name, found))
    return found


def normalize(name: str, containers: set[str]) -> str:
    """Replace the index that follows every depth-repeated container by ``*``."""
    out: list[str] = []
    for part in name.split("."):
        out.append("*" if part.isdigit() and ".".join(out) in containers else part)
    return ".".join(out)


def fan_dims(module: nn.Module, attr: str) -> tuple[int, int] | None:
    """(fan_out dim, fan_in dim) of a weight, from its module type; None when the type does not say."""
    if attr != "weight":
        return None
    if isinstance(module, nn.Embedding):
        return 1, 0
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1, 0
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return 0, 1
    return None


def _label(name: str, module: nn.Module, attr: str, grows: tuple[bool, ...]) -> str:
    fans = fan_dims(module, attr)
    if fans is not None:
        out_dim, in_dim = fans
        if any(g for i, g in enumerate(grows) if i not in fans):
            raise RoleError(f"{name}: a dimension other than fan-in and fan-out grows with width")
        return {(False, True): "input", (True, True): "hidden", (True, False): "output",
                (False, False): "finite"}[(grows[in_dim], grows[out_dim])]
    grown = sum(grows)
    if grown == 0:
        return "finite"
    if grown == 1:
        return "vector"
    raise RoleError(f"{name}: {grown} dimensions grow with width and {type(module).__name__} does not say "
                    "which is fan-in; name its role in the model's mup_roles dict")


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def _shapes(model: nn.Module, containers: set[str]) -> dict[str, torch.Size]:
    """Normalised name → shape; blocks of one list must agree."""
    shapes: dict[str, torch.Size] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        key = normalize(name, containers)
        if shapes.setdefault(key, p.shape) != p.shape:
            raise RoleError(f"{name}: its shape {tuple(p.shape)} differs from {tuple(shapes[key])} in another "
                            f"block of the same list ({key}); roles are decided per list entry")
    return shapes


def _override(value: Any) -> tuple[str | None, bool | None]:
    """A ``mup_roles`` value: a label, or (label, in_branch) where a None label is left to the shapes."""
    label, in_branch = (value, None) if isinstance(value, str) else tuple(value)
    if label is not None and label not in LABELS:
        raise RoleError(f"mup_roles value {value!r}; roles are {', '.join(LABELS)}")
    return label, in_branch


def infer_roles(factory: ModelFactory, base: tuple[int, int], model: nn.Module) -> tuple[dict[str, Role], set[str]]:
    """(role of every parameter of ``model``, the depth-repeated containers), for a model of any width
    and depth, from its base-size, width and depth twins.

    ``factory(width=w, depth=d)`` must build the same architecture at other sizes; ``base`` is
    (base width, base depth); the twins are built at twice the base width and twice the base depth.
    """
    width, depth = base
    with torch.device("meta"):
        base_twin = factory(width=width, depth=depth)
        wide_twin = factory(width=2 * width, depth=depth)
        deep_twin = factory(width=width, depth=2 * depth)
    containers = depth_containers(base_twin, deep_twin)
    base_shapes, wide_shapes = _shapes(base_twin, containers), _shapes(wide_twin, containers)
    if base_shapes.keys() != wide_shapes.keys():
        odd = sorted(base_shapes.keys() ^ wide_shapes.keys())
        raise RoleError(f"parameters {', '.join(odd)} exist at one width and not at another (a list that "
                        "grows with width?); name their roles in mup_roles or restructure")
    overrides = getattr(model, "mup_roles", {})
    roles: dict[str, Role] = {}
    for name, _ in model.named_parameters(remove_duplicate=False):
        key = normalize(name, containers)
        if key not in base_shapes:
            raise RoleError(f"{name}: not found in the base-size model (as {key})")
        label, in_branch = _override(overrides[key]) if key in overrides else (None, None)
        if label is None:
            grows = tuple(a != b for a, b in zip(base_shapes[key], wide_shapes[key]))
            label = _label(name, *_owner(model, name), grows)
        roles[name] = Role(label, in_branch=key != name if in_branch is None else bool(in_branch))
    return roles, containers


def tied_conflicts(model: nn.Module, roles: dict[str, Role]) -> list[tuple[str, str]]:
    """Pairs of names that share one tensor under different roles (a readout tied to the embedding)."""
    first: dict[int, str] = {}
    pairs = []
    for name, param in model.named_parameters(remove_duplicate=False):
        other = first.setdefault(id(param), name)
        if other != name and roles[other].label != roles[name].label:
            pairs.append((other, name))
    return pairs
