"""The config boundary: Hydra config nodes become objects here, and nowhere else.

    plan = assemble(cfg, data.model_inputs)     # model factory, parametrization, optimizer → μP plan
    model = build_model(plan)                   # src.mup.plan
    optimizer = build_optimizer(model, plan)    # src.mup.optim

``instantiate`` is Hydra's with a constructor's ValueError/TypeError reported as a one-line
ConfigError; ``optimizer_spec`` turns ``conf/optimizer`` into the μP core's typed OptimizerSpec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError, one_line, root_cause
from src.mup.optim import OptimizerSpec
from src.mup.plan import Plan

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Keys of an optimizer config that are not constructor arguments of the optimizer.
_NOT_KWARGS = ("_target_", "grad_clip", "rest", "lr_ratio", "lr", "weight_decay")


def plain(cfg: DictConfig) -> dict:
    """A resolved plain-dict copy of a config node."""
    return OmegaConf.to_container(cfg, resolve=True)


def instantiate(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that reports a constructor's ValueError/TypeError as a ConfigError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = root_cause(err)
        if isinstance(cause, ConfigError):
            raise cause from err
        if isinstance(cause, (ValueError, TypeError, ImportError)):
            raise ConfigError(f"{key}: {one_line(cause)}") from err
        raise


def optimizer_spec(node: Any, lr: float | None = None) -> OptimizerSpec:
    """``conf/optimizer`` as an OptimizerSpec: its class, LR, weight decay and constructor arguments;
    a matrices-only optimizer's ``rest`` at ``rest.lr_ratio`` × its LR."""
    from hydra.utils import get_class

    spec = dict(node) if not OmegaConf.is_config(node) else plain(node)
    try:
        cls = get_class(spec["_target_"])
    except Exception as err:  # noqa: BLE001 — Hydra raises plain Exceptions for unimportable targets
        raise ConfigError(f"optimizer._target_={spec['_target_']}: {one_line(err)}") from None
    lr = spec["lr"] if lr is None else lr
    rest = spec.get("rest")
    return OptimizerSpec(cls, lr, spec.get("weight_decay", 0.0),
                         {k: v for k, v in spec.items() if k not in _NOT_KWARGS},
                         None if rest is None else optimizer_spec(rest, lr * rest.get("lr_ratio", 1.0)))


def _check_inputs(model: DictConfig, inputs: dict[str, int]) -> None:
    """The model must take every number the data decides (a language model and image data, or a
    diffusion model and a corpus, do not fit)."""
    import inspect

    from hydra.utils import get_object  # a class or a factory function (model=llada_hf)

    try:
        params = inspect.signature(get_object(model._target_)).parameters
    except Exception:  # an unimportable target is reported when it is built
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    if unknown := [k for k in inputs if k not in params]:
        wanted = [k for k in ("vocab_size", "image_size", "in_channels", "num_classes") if k in params]
        raise ConfigError(f"model ({model._target_.rsplit('.', 1)[-1]}) does not take {', '.join(unknown)} from the "
                          f"data: pair it with data that gives {', '.join(wanted)}")


def assemble(cfg: DictConfig, inputs: dict[str, int]) -> Plan:
    """The μP plan of a config (it carries the model factory, the parametrization and the optimizer's
    parts); builds models on the meta device only. ``inputs`` are the constructor numbers the data
    decides (its ``model_inputs``: vocab size, or image size, channels and classes)."""
    import torch

    from src.mup.plan import make_plan

    param = instantiate(cfg.parametrization, "parametrization")
    _check_inputs(cfg.model, inputs)

    def factory(**sizes):
        return instantiate(cfg.model, "model", **inputs, **sizes)

    with torch.device("meta"):  # the run-size model first, so its own errors name model.*
        factory()
    try:
        return make_plan(factory, cfg.model.width, cfg.model.depth, cfg.model.get("head_dim"), param,
                         optimizer_spec(cfg.optimizer))
    except (ValueError, ConfigError) as err:
        raise ConfigError(f"parametrization={param.name} (base width {param.base_width}, base depth "
                          f"{param.base_depth}): {one_line(err)}") from err


def compose_option(group: str, option: str) -> DictConfig:
    """One option of a config group, composed with its defaults (inside a Hydra app or not)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"{group}={option}"]
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)[group]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)[group]


def build_task(cfg: DictConfig, model: Any, plan: Plan, scheduler: Any, steps: int, compile: bool = False) -> Any:
    """The ``conf/task`` module around ``model``, with the plan's optimizer factory; the task's own
    checks of its numbers (e.g. beta > 0) are config errors too."""
    import functools

    from src.mup.optim import build_optimizer

    make_task = instantiate(cfg.task, "task", _partial_=True)  # objects go to the partial, not via OmegaConf
    try:
        return make_task(model=model, optimizer=functools.partial(build_optimizer, plan=plan), scheduler=scheduler,
                         steps=steps, compile=compile, record=plan.to_dict())
    except ValueError as err:
        raise ConfigError(f"task: {one_line(err)}") from err
