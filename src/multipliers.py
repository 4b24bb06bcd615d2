"""A scalar multiplier for a module whose code has none, as a forward hook: how the μP API
(``src.mup.scale_output``) and the factories of models written elsewhere (``src.models.external``) add
the multipliers a plan gives without forking the model. A plain ``nn`` utility: it knows no μP."""

from __future__ import annotations

from torch import nn


def scale_output(module: nn.Module, factor: float) -> nn.Module:
    """Multiply ``module``'s output by ``factor`` with a forward hook (the readout of a model without
    logit scaling, the last linear of each residual branch of a model without a residual multiplier).
    A factor of 1 adds no hook."""
    if factor != 1.0:
        module.register_forward_hook(lambda _module, _args, output: output * factor)
    return module
