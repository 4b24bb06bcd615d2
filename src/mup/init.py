"""μP init: rescale the model's own (SP) init, tensor by tensor.

Under a μP parametrization a tensor's std is its SP std *at the base size* times its role's init
multiplier (hidden r_n^-½, everything else 1), with no depth factor (so GPT-2's σ/√(2L) stays at its
base-depth value). SP stds are recorded, not estimated: while a model is built, ``record_init``
wraps the ``torch.nn.init`` functions and notes the std each call gives each tensor (the last call
wins, as in the model's own init code). The run-size tensor, initialised by the model itself, is then
multiplied by target std / its recorded std, which keeps its distribution (normal, uniform,
truncated) and changes nothing at the base size. A tensor initialised without ``torch.nn.init``
(``w.data.normal_(…)``, timm's ``trunc_normal_``) has no record, or a stale one left by its layer's
constructor: wherever the record disagrees with the tensor's measured std by more than sampling
noise explains, the measured std is used; zero tensors stay zero. Rescaling multiplies the tensor,
so an init with a non-zero mean (uniform(0, a)) has its mean scaled too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

_fans = nn.init._calculate_fan_in_and_fan_out  # torch's own fan computation, used by xavier/kaiming


def _trunc_normal_std(mean: float, std: float, a: float, b: float) -> float:
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(beta) - cdf(alpha)
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - ((pdf(alpha) - pdf(beta)) / z) ** 2
    return std * math.sqrt(var)


def _kaiming_std(tensor: torch.Tensor, a: float, mode: str, nonlinearity: str) -> float:
    fan_in, fan_out = _fans(tensor)
    return nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def _xavier_std(tensor: torch.Tensor, gain: float) -> float:
    fan_in, fan_out = _fans(tensor)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


# std of the values each torch.nn.init function writes, from its bound arguments
_STD_OF: dict[str, Callable[..., float]] = {
    "normal_": lambda tensor, mean, std, **_: std,
    "trunc_normal_": lambda tensor, mean, std, a, b, **_: _trunc_normal_std(mean, std, a, b),
    "uniform_": lambda tensor, a, b, **_: (b - a) / math.sqrt(12),
    "xavier_uniform_": lambda tensor, gain, **_: _xavier_std(tensor, gain),
    "xavier_normal_": lambda tensor, gain, **_: _xavier_std(tensor, gain),
    "kaiming_uniform_": lambda tensor, a, mode, nonlinearity, **_: _kaiming_std(tensor, a, mode, nonlinearity),
    "kaiming_normal_": lambda tensor, a, mode, nonlinearity, **_: _kaiming_std(tensor, a, mode, nonlinearity),
    "zeros_": lambda tensor, **_: 0.0,
    "ones_": lambda tensor, **_: 0.0,
    "constant_": lambda tensor, **_: 0.0,
}


@contextmanager
def record_init() -> Iterator[dict[int, float]]:
    """Record ``data_ptr → std`` for every tensor initialised through ``torch.nn.init`` meanwhile."""
    stds: dict[int, float] = {}
    originals = {name: getattr(nn.init, name) for name in _STD_OF}

    def wrap(name: str, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def recorded(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            stds[bound.arguments["tensor"].data_ptr()] = float(_STD_OF[name](**bound.arguments))
            return original(*args, **kwargs)

        return recorded

    for name, original in originals.items():
        setattr(nn.init, name, wrap(name, original))
    try:
        yield stds
    finally:
        for name, original in originals.items():
            setattr(nn.init, name, original)


def _measured_std(p: torch.Tensor) -> float:
    return float(p.detach().float().std()) if p.numel() > 1 else 0.0


def init_stds(model: nn.Module, recorded: dict[int, float]) -> dict[str, float]:
    """Std of every parameter: the recorded one where torch.nn.init set it last, else the measured one.

    A record is trusted when the measured std is within 5 standard errors (√(1/(2N)) relative) of it,
    or when the tensor is a constant (std 0, e.g. ones); otherwise something else wrote the tensor."""
    stds = {}
    for name, p in model.named_parameters():
        measured, record = _measured_std(p), recorded.get(p.data_ptr())
        trusted = record is not None and same_std(measured, record, p.numel())
        stds[name] = record if trusted else measured
    return stds


def same_std(a: float, b: float, numel: int) -> bool:
    """Whether two stds of N-element tensors agree within 5 standard errors (√(1/(2N)) relative)."""
    if a == 0.0 or b == 0.0:
        return a == b
    return abs(a / b - 1.0) <= 5.0 / math.sqrt(2 * max(numel, 1))


@torch.no_grad()
def rescale(model: nn.Module, targets: dict[str, float | None], current: dict[str, float]) -> None:
    """Multiply each parameter so its std becomes ``targets[name]`` (0: zero it; None: leave it)."""
    for name, param in model.named_parameters():
        target = targets.get(name)
        if target is None or target == current[name]:
            continue
        if target == 0.0:
            param.zero_()
        elif current[name] > 0.0:
            param.mul_(target / current[name])
