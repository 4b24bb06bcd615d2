"""Preflight: the command line composed exactly as Hydra will and checked before Hydra starts.

For a sweep, one job per value of every swept key is checked, so a typo in a 150-job sweep stops
before the first job starts (a value that fails only in combination with another is caught by its
job). A single run's fixed dir is checked too: a resume needs a run there, a held dir is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from src.assemble import CONF_DIR
from src.config_checks import check
from src.errors import ConfigError, one_line, root_cause

# Flags after which Hydra prints information instead of running jobs.
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve",
               "--package", "-p", "--shell-completion", "-sc", "--version")


def _composition_error(err: Exception) -> ConfigError:
    """Hydra's and OmegaConf's multi-line composition errors as one line naming the key."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import MissingMandatoryValue

    cause = root_cause(err)
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
    _check_budget(hydra_cfg.runtime.choices)
    multirun = multirun or str(hydra_cfg.mode).endswith("MULTIRUN")
    launcher = hydra_cfg.launcher._target_
    if not multirun:
        return [overrides], False, launcher
    for key, value in (hydra_cfg.sweeper.get("params") or {}).items():
        if not str(value).strip():  # e.g. budget.log2_lrs=[]: Hydra would launch one job with an empty value
            raise ConfigError(f"{key}: the sweep has no values (an empty list in the budget?)")
    if not hydra_cfg.sweeper._target_.endswith("BasicSweeper"):
        return [fixed], True, launcher  # other sweepers (Optuna) draw their values at run time
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    parsed = parser.parse_overrides(params + overrides)
    return _one_value_at_a_time(BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]), True, launcher


def _check_budget(choices) -> None:
    """A budget's numbers live per task family (conf/study_budget/<task>_<budget>.yaml, an optional
    default): without that file a sweep would fail later on a missing key, so refuse it here."""
    task, budget = choices.get("task"), choices.get("budget")
    if budget in (None, "none") or (CONF_DIR / "study_budget" / f"{task}_{budget}.yaml").exists():
        return
    options = sorted(p.stem.removeprefix(f"{task}_") for p in (CONF_DIR / "study_budget").glob(f"{task}_*.yaml"))
    raise ConfigError(f"budget={budget} has no numbers for task={task} (no conf/study_budget/{task}_{budget}.yaml); "
                      f"choose one of {', '.join(options) or 'none'}")


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
    from src.records import CONFIG_FILE

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
    from src.records import claim

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
