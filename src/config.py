"""Config checks that run before anything trains: one line naming the key, exit code 2.

``preflight(argv)`` composes the command line exactly as Hydra will (every job of a sweep) and runs
``check`` on each composition, so a typo in a 50-job sweep stops before the first job starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Flags after which Hydra prints information instead of running jobs.
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve",
               "--package", "-p", "--shell-completion", "-sc", "--version")


# Resolvers used by conf/config.yaml: a resumed run writes into its own dir, in a new .hydra subdir.
OmegaConf.register_new_resolver("run_dir", lambda resume, fresh: resume or fresh, replace=True)
OmegaConf.register_new_resolver(
    "hydra_subdir", lambda resume, now: f".hydra/resume-{now}" if resume else ".hydra", replace=True
)


class ConfigError(Exception):
    """A bad config value or input file; reported as one line and exit code 2."""


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def build(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that reports a constructor's ValueError/TypeError as a ConfigError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = _cause(err)
        if isinstance(cause, ConfigError):
            raise cause from err
        if isinstance(cause, (ValueError, TypeError, ImportError)):
            raise ConfigError(f"{key}: {one_line(cause)}") from err
        raise


def positive_int(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
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


def check(cfg: DictConfig) -> None:
    """Everything that can be checked without reading data or allocating weights."""
    import torch

    for key in ("steps", "val_every", "ckpt_every", "log_every"):
        positive_int(cfg, key)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} must be a non-negative integer")
    _check_trainer(cfg)
    _check_optimizer(cfg)
    _check_scheduler(cfg)
    _check_logger(cfg)
    data = build(cfg.data, "data")
    with torch.device("meta"):  # free: shapes only
        build(cfg.model, "model", vocab_size=data.vocab_size)


# --------------------------------------------------------------------------- preflight


def _composition_error(err: Exception) -> ConfigError:
    """Hydra's and OmegaConf's multi-line composition errors as one line naming the key."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import MissingMandatoryValue

    cause = _cause(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return ConfigError(f"{group}={option}: no such option; choose one of {', '.join(sorted(err.options))}")
    if isinstance(cause, MissingMandatoryValue):
        key = getattr(cause, "full_key", None) or "a key"
        return ConfigError(f"{key} is required: set {key}=<value>")
    if (match := re.match(r"Could not override '([^']+)'", str(err))) and "not in struct" in str(cause):
        key = match.group(1)
        return ConfigError(f"{key}: no such key in the config (check the spelling; +{key}=... adds a new key)")
    return ConfigError(one_line(err))


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job Hydra's basic sweeper would launch (one list without -m)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose("config", overrides=fixed, return_hydra_config=True).hydra
    multirun = multirun or hydra_cfg.mode == "MULTIRUN"
    if not multirun:
        return [overrides]
    if not hydra_cfg.sweeper._target_.endswith("BasicSweeper"):
        return [fixed]  # other sweepers (Optuna) draw their values at run time
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    parsed = parser.parse_overrides(params + overrides)
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def preflight(argv: Sequence[str]) -> None:
    """Compose and check every job of the command line; raise ConfigError on the first bad one."""
    if any(arg.split("=")[0] in _INFO_FLAGS for arg in argv):
        return
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    overrides = [arg for arg in argv if not arg.startswith("-")]
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        jobs = _jobs(overrides, multirun)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for job in jobs:
                cfg = compose("config", overrides=job)
                if cfg.get("resume") is None:
                    check(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise _composition_error(err) from None


def plain(cfg: DictConfig) -> dict:
    """A resolved plain-dict copy of a config node."""
    return OmegaConf.to_container(cfg, resolve=True)
