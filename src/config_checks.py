"""Config checks that run before anything trains: one line naming the key (a ConfigError).

``check(cfg)`` checks everything that can be checked without reading data or allocating weights;
the model, its μP plan and the optimizer are built on the meta device.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from src.assemble import assemble, instantiate, plain
from src.checks import is_positive_int
from src.errors import ConfigError, one_line


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not is_positive_int(value):
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def _positive_float(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r} must be a number {bound}")


def _check_trainer(cfg: DictConfig) -> None:
    import torch

    trainer = cfg.trainer
    devices = trainer.get("devices")
    if not (is_positive_int(devices) or devices == "auto" or OmegaConf.is_list(devices)):
        raise ConfigError(f"trainer.devices={devices!r} must be a positive integer, a list of device ids or auto")
    wants_gpu = trainer.get("accelerator") in ("gpu", "cuda") or str(trainer.get("strategy")).startswith("fsdp")
    if wants_gpu and not torch.cuda.is_available():
        what = "trainer.strategy=fsdp" if str(trainer.get("strategy")).startswith("fsdp") else "trainer=gpu"
        raise ConfigError(f"{what} needs a CUDA GPU and none is available; use trainer=cpu or trainer=ddp")


def _check_optimizer(cfg: DictConfig) -> None:
    _positive_float(cfg, "optimizer.lr")
    _positive_float(cfg, "optimizer.weight_decay", allow_zero=True)
    if cfg.optimizer.get("grad_clip") is not None:
        _positive_float(cfg, "optimizer.grad_clip", allow_zero=True)


def _check_scheduler(cfg: DictConfig) -> None:
    for key in ("warmup", "decay", "final_ratio"):
        value = cfg.scheduler.get(key)
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise ConfigError(f"scheduler.{key}={value!r} must be a fraction in [0, 1]")
    if cfg.scheduler.get("warmup", 0.0) + cfg.scheduler.get("decay", 0.0) > 1.0:
        raise ConfigError("scheduler.warmup + scheduler.decay must not exceed 1")


def _check_logger(cfg: DictConfig) -> None:
    modes = ("offline", "online", "disabled")
    wandb = cfg.logger.get("wandb")
    if wandb is not None and wandb.get("mode") not in modes:
        raise ConfigError(f"logger.wandb.mode={wandb.get('mode')!r}; choose one of {', '.join(modes)}")


def _check_run_keys(cfg: DictConfig) -> None:
    for key in ("steps", "val_every", "ckpt_every", "log_every", "sweep_metric.last_n"):
        _positive_int(cfg, key)
    for key in ("seed", "spectral_every"):
        value = OmegaConf.select(cfg, key)
        if not (is_positive_int(value) or value == 0):
            raise ConfigError(f"{key}={value!r} must be a non-negative integer")
    for key in ("compile", "print_plan"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"{key}={cfg[key]!r} must be true or false")
    decay = cfg.get("ema_decay")
    if decay is not None and not (isinstance(decay, float) and 0 < decay < 1):
        raise ConfigError(f"ema_decay={decay!r} must be null (no EMA) or a number in (0, 1), e.g. 0.999")
    factor = cfg.divergence.factor
    if not isinstance(factor, (int, float)) or factor <= 1:
        raise ConfigError(f"divergence.factor={factor!r} must be a number > 1")
    keys = tuple(_class(cfg.task._target_).metric_goals)
    if cfg.job == "train" and cfg.sweep_metric.key not in keys:
        raise ConfigError(f"sweep_metric.key={cfg.sweep_metric.key!r}; this task records {', '.join(keys)}")


def _class(target: str) -> type | None:
    """The class a ``_target_`` names; None when it does not import (its instantiation reports that)."""
    from hydra.utils import get_class

    try:
        return get_class(target)
    except Exception:  # noqa: BLE001 — Hydra raises plain Exceptions
        return None


def _check_model_fits_data(cfg: DictConfig) -> None:
    max_len, seq_len = cfg.model.get("max_seq_len"), cfg.data.get("seq_len")
    if isinstance(max_len, int) and isinstance(seq_len, int) and max_len < seq_len:
        raise ConfigError(f"model.max_seq_len={max_len} is shorter than data.seq_len={seq_len}")
    objective = OmegaConf.select(cfg, "task.objective._target_")
    if objective and cfg.model.get("learn_sigma") and not getattr(_class(objective), "can_learn_sigma", True):
        raise ConfigError(f"model.learn_sigma=true needs task/objective=ddpm ({objective.rsplit('.', 1)[-1]} "
                          "does not learn Σ)")
    dropout = OmegaConf.select(cfg, "task.label_dropout", default=0)
    if isinstance(dropout, (int, float)) and dropout > 0 and cfg.model.get("class_dropout") is False:
        raise ConfigError(f"task.label_dropout={dropout} needs a null label: set model.class_dropout=true")


def _check_published_sizes(cfg: DictConfig) -> None:
    """A published checkpoint (model=llada_hf) loads at its own size only; another size would train
    a fresh model under the checkpoint's name."""
    if not str(cfg.model.get("_target_", "")).endswith("llada_hf.published"):
        return
    from src.models.llada_hf import read_config

    own = read_config(cfg.model.path)
    for key in ("width", "depth", "head_dim"):
        if cfg.model.get(key) != own[key]:
            raise ConfigError(f"model.{key}={cfg.model.get(key)} differs from the checkpoint's {own[key]} "
                              f"({cfg.model.path}): a published checkpoint loads at its own size")


def check(cfg: DictConfig, checked: set[str] | None = None) -> None:
    """Everything that can be checked without reading data or allocating weights. The model, plan
    and optimizer are built (on the meta device) once per structure: ``checked`` collects the
    structures seen, so a sweep's jobs that differ only in LR or seed skip that part."""
    import json

    import torch

    from src.mup.optim import build_optimizer

    _check_run_keys(cfg)
    _check_trainer(cfg)
    _check_optimizer(cfg)
    _check_scheduler(cfg)
    _check_logger(cfg)
    _check_model_fits_data(cfg)
    _check_published_sizes(cfg)
    structure = plain(cfg)
    structure["optimizer"].pop("lr", None)
    key = json.dumps({k: structure[k] for k in ("model", "parametrization", "optimizer", "data")}, sort_keys=True)
    if checked is not None and key in checked:
        return
    plan = assemble(cfg, instantiate(cfg.data, "data").model_inputs)
    with torch.device("meta"):
        model = plan.factory(width=plan.width, depth=plan.depth, **plan.model_kwargs)
    try:  # the optimizer validates its own arguments (betas, eps, momentum, unknown keys)
        build_optimizer(model, plan)
    except (ValueError, TypeError, IndexError, KeyError) as err:  # torch indexes betas[1] before checking it
        raise ConfigError(f"optimizer: {one_line(err)}") from err
    if checked is not None:
        checked.add(key)
