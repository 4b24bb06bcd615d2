"""Parameter roles from shapes alone: which dimensions of each parameter grow with width, and which
parameters sit inside modules that repeat with depth.

The model is built twice on the meta device (free): at the base size and at a *delta* size (twice
the base width and twice the base depth). A dimension whose size differs between the two grows with
width; a ModuleList/Sequential whose length differs repeats with depth, and its indices are
normalised (``blocks.7.attn.q.weight`` → ``blocks.*.attn.q.weight``) so that models of any depth
match their twins. Fan-in and fan-out are read from the owning module's type, so an Embedding table
(vocab, n) is ``input`` although its shape looks like a readout's.

Labels: ``input`` (fixed → grown), ``hidden`` (grown → grown), ``output`` (grown → fixed), ``vector``
(one grown dim: biases, norm gains, tables), ``finite`` (nothing grows). ``in_branch``: the parameter
lives in a depth-repeated module (a residual block). A parameter whose role the shapes cannot decide
(e.g. a raw 2-D ``nn.Parameter`` with two grown dims) is an error unless the model names it in its
optional ``mup_roles`` dict (normalised name → label), the only μP knowledge a model may carry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

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


def depth_containers(base: nn.Module, delta: nn.Module) -> set[str]:
    """Names of the ModuleLists/Sequentials whose length changes with depth."""
    a, b = _containers(base), _containers(delta)
    return {name for name in a.keys() & b.keys() if a[name] != b[name]}


def normalize(name: str, containers: set[str]) -> str:
    """Replace the index after every depth-repeated container by ``*``."""
    for container in sorted(containers, key=len, reverse=True):
        name = re.sub(rf"^{re.escape(container)}\.\d+\.", f"{container}.*.", name)
        name = re.sub(rf"\.{re.escape(container)}\.\d+\.", f".{container}.*.", name)
    return name


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


def infer_roles(factory: ModelFactory, base: tuple[int, int], model: nn.Module) -> tuple[dict[str, Role], set[str]]:
    """(role of every parameter of ``model``, the depth-repeated containers), for a model of any width
    and depth, from its base-size and delta twins.

    ``factory(width=w, depth=d)`` must build the same architecture at other sizes; ``base`` is
    (base width, base depth); the delta twin is built at twice both.
    """
    width, depth = base
    with torch.device("meta"):
        base_twin = factory(width=width, depth=depth)
        delta_twin = factory(width=2 * width, depth=2 * depth)
    containers = depth_containers(base_twin, delta_twin)
    base_shapes = {normalize(n, containers): p.shape for n, p in base_twin.named_parameters(remove_duplicate=False)}
    delta_shapes = {normalize(n, containers): p.shape for n, p in delta_twin.named_parameters(remove_duplicate=False)}
    if base_shapes.keys() != delta_shapes.keys():
        odd = sorted(base_shapes.keys() ^ delta_shapes.keys())
        raise RoleError(f"parameters {', '.join(odd)} exist at one size and not the other")
    overrides = getattr(model, "mup_roles", {})
    roles: dict[str, Role] = {}
    for name, _ in model.named_parameters(remove_duplicate=False):
        key = normalize(name, containers)
        if key not in base_shapes:
            raise RoleError(f"{name}: not found in the base-size model (as {key})")
        if key in overrides:
            label = overrides[key]
            if label not in LABELS:
                raise RoleError(f"mup_roles[{key!r}] = {label!r}; roles are {', '.join(LABELS)}")
        else:
            grows = tuple(a != b for a, b in zip(base_shapes[key], delta_shapes[key]))
            label = _label(name, *_owner(model, name), grows)
        roles[name] = Role(label, in_branch=key != name)
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
