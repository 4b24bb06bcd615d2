"""Config checks that run before anything trains: one line naming the key, exit code 2.

``preflight(argv)`` composes the command line exactly as Hydra will and runs ``check`` on it; for a
sweep, on one job per value of every swept key, so a typo in a 150-job sweep stops before the first
job starts (a value that fails only in combination with another is caught by its job).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.checks import is_positive_int

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Flags after which Hydra prints information instead of running jobs.
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve",
               "--package", "-p", "--shell-completion", "-sc", "--version")


_claimed: dict[str, str] = {}


def claim_run_dir(resume: str | None, path: str) -> str:
    """The run dir: ``resume`` when resuming, else ``path`` or ``path-1``, ``path-2``, …, whichever is
    free first, created at once so that two runs started in the same second never share a directory.
    Idempotent within a process (Hydra may resolve the key more than once). ``resume=auto`` needs a
    fixed dir (preflight refuses it without ``hydra.run.dir``)."""
    if resume and resume != "auto":
        return resume
    if path not in _claimed:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        for i in itertools.count():
            candidate = path if i == 0 else f"{path}-{i}"
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            _claimed[path] = candidate
            break
    return _claimed[path]


def hydra_subdir(output_dir: str, now: str) -> str:
    """Where Hydra writes its config files: ``.hydra``, or ``.hydra/<now>`` when the dir already has
    one (a resumed run, a relaunched sweep), so an earlier run's files are never rewritten."""
    return f".hydra/{now}" if (Path(output_dir) / ".hydra").exists() else ".hydra"


def job_dirname(override_dirname: str, swept: Any = None, limit: int = 200) -> str:
    """A sweep job's dir, named from its overrides (``sweep.log2_lr:-9+sweep.size:w128-d2+…``) with
    the keys the sweeper sweeps (``swept``: hydra.sweeper.params) first and "/" written %2F. Past ``limit`` characters
    (long fixed overrides, Optuna's float-valued trials) the items that fit are kept and the rest is
    replaced by a hash of the whole name: unique, stable across relaunches and under NAME_MAX."""
    first = {str(k) for k in (swept or {})}
    items = sorted(override_dirname.split("+"), key=lambda item: item.split(":", 1)[0] not in first)
    name = "+".join(items).replace("/", "%2F")  # task/objective:flow, paths:/x: one dir, not nested ones
    if len(name) <= limit:
        return name
    kept = ""
    for item in items:
        if len(kept) + len(item) + 1 > limit - 10:
            break
        kept += item + "+"
    return f"{kept}h{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]


def sweep_values(value: Any) -> str:
    """A list (budget.log2_lrs: [-9, -8]) as the sweeper's comma-separated value string. Budgets hold
    lists, so ``budget.log2_lrs=[-9,-8]`` on a command line is a value, not a sweep of budgets."""
    return ",".join(str(v) for v in _as_list(value))


def size_grid(widths: Any, depths: Any, base_width: int, base_depth: int) -> str:
    """The sizes of a width axis at the base depth plus a depth axis at the base width, as the
    sweeper value ``w64-d2,w128-d2,…,w64-d4,…`` (each size once)."""
    sizes = [(int(w), base_depth) for w in _as_list(widths)] + [(base_width, int(d)) for d in _as_list(depths)]
    return ",".join(f"w{w}-d{d}" for w, d in dict.fromkeys(sizes))


def size_part(size: str, which: str) -> int:
    """Width (``w``) or depth (``d``) of a size written ``w64-d2``."""
    parts = dict((p[0], int(p[1:])) for p in size.split("-"))
    return parts[which]


OmegaConf.register_new_resolver("run_dir", claim_run_dir, replace=True)
OmegaConf.register_new_resolver("hydra_subdir", hydra_subdir, replace=True)
OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver("pow2", lambda x, shift=0: 2.0 ** (float(x) + float(shift)), replace=True)
OmegaConf.register_new_resolver("size_grid", size_grid, replace=True)
OmegaConf.register_new_resolver("sweep_values", sweep_values, replace=True)
OmegaConf.register_new_resolver("size_part", size_part, replace=True)


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


def _check_inputs(model: DictConfig, inputs: dict[str, int]) -> None:
    """The model must take every number the data decides (a language model and image data, or a
    diffusion model and a corpus, do not fit)."""
    import inspect

    from hydra.utils import get_class

    try:
        params = inspect.signature(get_class(model._target_)).parameters
    except Exception:  # an unimportable target is reported when it is built
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    if unknown := [k for k in inputs if k not in params]:
        wanted = [k for k in ("vocab_size", "image_size", "in_channels", "num_classes") if k in params]
        raise ConfigError(f"model ({model._target_.rsplit('.', 1)[-1]}) does not take {', '.join(unknown)} from the "
                          f"data: pair it with data that gives {', '.join(wanted)}")


def model_plan(cfg: DictConfig, inputs: dict[str, int]):
    """(model factory, parametrization, μP plan) of a config; builds models on the meta device only.
    ``inputs`` are the constructor numbers the data decides (its ``model_inputs``: vocab size, or image
    size, channels and classes)."""
    import torch

    from src.mup.plan import make_plan

    param = build(cfg.parametrization, "parametrization")
    _check_inputs(cfg.model, inputs)

    def factory(**sizes):
        return build(cfg.model, "model", **inputs, **sizes)

    with torch.device("meta"):  # the run-size model first, so its own errors name model.*
        factory()
    try:
        plan = make_plan(factory, cfg.model.width, cfg.model.depth, cfg.model.get("head_dim"), param,
                         plain(cfg.optimizer))
    except (ValueError, ConfigError) as err:
        raise ConfigError(f"parametrization={param.name} (base width {param.base_width}, base depth "
                          f"{param.base_depth}): {one_line(err)}") from err
    return factory, param, plan


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
    from hydra.utils import get_class

    keys = get_class(cfg.task._target_).history_keys
    if cfg.job == "train" and cfg.sweep_metric.key not in keys:
        raise ConfigError(f"sweep_metric.key={cfg.sweep_metric.key!r}; this task records {', '.join(keys)}")


def _check_model_fits_data(cfg: DictConfig) -> None:
    max_len, seq_len = cfg.model.get("max_seq_len"), cfg.data.get("seq_len")
    if isinstance(max_len, int) and isinstance(seq_len, int) and max_len < seq_len:
        raise ConfigError(f"model.max_seq_len={max_len} is shorter than data.seq_len={seq_len}")
    objective = str(OmegaConf.select(cfg, "task.objective._target_", default=""))
    if objective.endswith("RectifiedFlow") and cfg.model.get("learn_sigma"):
        raise ConfigError("model.learn_sigma=true needs task/objective=ddpm (the flow predicts a velocity only)")
    dropout = OmegaConf.select(cfg, "task.label_dropout", default=0)
    if isinstance(dropout, (int, float)) and dropout > 0 and cfg.model.get("class_dropout") is False:
        raise ConfigError(f"task.label_dropout={dropout} needs a null label: set model.class_dropout=true")


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
    structure = plain(cfg)
    structure["optimizer"].pop("lr", None)
    key = json.dumps({k: structure[k] for k in ("model", "parametrization", "optimizer", "data")}, sort_keys=True)
    if checked is not None and key in checked:
        return
    factory, _, plan = model_plan(cfg, build(cfg.data, "data").model_inputs)
    with torch.device("meta"):
        model = factory(width=plan.width, depth=plan.depth, **plan.model_kwargs)
    try:  # the optimizer validates its own arguments (betas, eps, momentum, unknown keys)
        build_optimizer(model, plain(cfg.optimizer), plan)
    except (ValueError, TypeError, IndexError, KeyError) as err:  # torch indexes betas[1] before checking it
        raise ConfigError(f"optimizer: {one_line(err)}") from err
    if checked is not None:
        checked.add(key)


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


def _jobs(overrides: list[str], multirun: bool) -> tuple[list[list[str]], bool, str]:
    """(override lists of the jobs to check, multirun?, the launcher). Without -m: the command line."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose("config", overrides=fixed, return_hydra_config=True).hydra
    multirun = multirun or str(hydra_cfg.mode).endswith("MULTIRUN")
    launcher = hydra_cfg.launcher._target_
    if not multirun:
        return [overrides], False, launcher
    if not hydra_cfg.sweeper._target_.endswith("BasicSweeper"):
        return [fixed], True, launcher  # other sweepers (Optuna) draw their values at run time
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    parsed = parser.parse_overrides(params + overrides)
    return _one_value_at_a_time(BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]), True, launcher


def _one_value_at_a_time(jobs: list[list[str]]) -> list[list[str]]:
    """The first job, plus one job per other value of each swept key (the rest as in the first job):
    every value is checked, in O(sum of values) compositions instead of O(product)."""
    first = jobs[0]
    chosen, seen = [first], set(first)
    for job in jobs[1:]:
        new = [o for o in job if o not in seen]
        if len(new) == 1 and all(o == f or o in new for o, f in zip(job, first)):
            chosen.append(job)
            seen.update(new)
    return chosen


def check_resume(resume: str, overrides: Sequence[str]) -> None:
    """``resume=<dir>`` needs a run there, and keeps its config: only ``trainer`` and ``logger`` keys
    may be overridden."""
    from src.runs import CONFIG_FILE

    if not (Path(resume) / CONFIG_FILE).exists():
        raise ConfigError(f"resume={resume}: no {CONFIG_FILE} there; give the directory of an earlier run")
    refused = [key for key in (o.split("=", 1)[0].lstrip("+~") for o in overrides)
               if key != "resume" and key.split(".")[0] not in ("trainer", "logger")]
    if refused:
        raise ConfigError(f"resume: a resumed run keeps its config; only trainer and logger may change "
                          f"(drop {', '.join(refused)})")


def _check_run_dir(overrides: Sequence[str]) -> None:
    """Before Hydra writes into a single run's fixed dir (``resume=<dir>`` or ``hydra.run.dir``):
    refuse a resume of a dir without a run and a dir another process is running in, so that a
    refused command leaves nothing behind there."""
    from src.runs import claim

    if os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP rank Lightning started: rank 0 holds the dir
        return
    values = {k: v.strip("'\"") for k, v in (o.split("=", 1) for o in overrides if "=" in o)}
    resume = values.get("resume")
    if resume not in (None, "null", "auto"):
        check_resume(resume, overrides)
    target = resume if resume not in (None, "null", "auto") else values.get("hydra.run.dir")
    if target and Path(target).is_dir():
        with claim(Path(target)) as holder:
            if holder is not None:
                raise ConfigError(f"{target} is in use by another run (pid {holder}); wait for it or pick another dir")


def preflight(argv: Sequence[str]) -> None:
    """Compose and check every job of the command line; raise ConfigError on the first bad one."""
    if any(arg.split("=")[0] in _INFO_FLAGS for arg in argv):
        return
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    overrides = [arg for arg in argv if not arg.startswith("-")]
    if not multirun:
        _check_run_dir(overrides)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    auto = any(arg == "resume=auto" for arg in overrides)
    if auto and (multirun or not any(arg.startswith("hydra.run.dir=") for arg in overrides)):
        raise ConfigError("resume=auto continues a single run in a fixed dir: give hydra.run.dir=<dir> "
                          "(sweep jobs continue by themselves when relaunched)")
    try:
        jobs, multirun, launcher = _jobs(overrides, multirun)
        checked: set[str] = set()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for job in jobs:
                cfg = compose("config", overrides=job)
                if multirun and str(cfg.trainer.strategy).startswith("ddp") and "submitit" not in launcher:
                    raise ConfigError("trainer=ddp inside a multirun: each job would start its own processes "
                                      "beside the sweep's; run DDP jobs one at a time (or on SLURM)")
                if cfg.get("resume") in (None, "auto"):  # a resumed run keeps its checked config
                    check(cfg, checked)
    except (HydraException, OmegaConfBaseException) as err:
        raise _composition_error(err) from None


def compose_option(group: str, option: str) -> DictConfig:
    """One option of a config group, composed with its defaults (inside a Hydra app or not)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"{group}={option}"]
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)[group]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)[group]


def plain(cfg: DictConfig) -> dict:
    """A resolved plain-dict copy of a config node."""
    return OmegaConf.to_container(cfg, resolve=True)
