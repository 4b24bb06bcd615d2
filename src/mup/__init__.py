"""The μP core: model-agnostic rules that turn (model shapes, parametrization, optimizer) into
init, forward multipliers and named parameter groups. The public API (plain PyTorch; docs/library.md):

    setup(factory, width, depth, parametrization, optimizer) -> (model, optimizer, plan)
    coordinate_check(factory, arms, optimizer, loss, probes, base, widths, depths) -> slopes and verdicts
    scale_output(module, factor)  # a multiplier for a model whose code has none
"""

from src.mup.api import Setup, coordinate_check, scale_output, setup
from src.mup.optim import OptimizerRule, OptimizerSpec, build_optimizer, register_rule
from src.mup.plan import Parametrization, Plan, build_model, make_plan

__all__ = ["OptimizerRule", "OptimizerSpec", "Parametrization", "Plan", "Setup", "build_model", "build_optimizer",
           "coordinate_check", "make_plan", "register_rule", "scale_output", "setup"]
