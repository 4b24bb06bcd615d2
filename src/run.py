"""The only entry point: compose → check → build → fit → metrics.json.

    python -m src.run                                    # short GPT-2 run on the built-in corpus
    python -m src.run model.width=256 optimizer.lr=1e-3  # any key of conf/ can be overridden
    python -m src.run resume=outputs/<name>/<time>       # continue a killed run from last.ckpt
    python -m src.run --help                             # the config groups and their options

A bad command line stops before anything runs with one line naming the key and exit code 2. A run
writes ``metrics.json`` into its run dir; inside a multirun a failing job records ``failed`` there
and the sweep goes on.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src import resolvers, signals  # noqa: F401 — resolvers registers conf/'s resolvers
from src.assemble import assemble, instantiate, plain
from src.config_checks import check
from src.errors import ConfigError
from src.jobs import JOBS
from src.mup.plan import build_model
from src.preflight import check_resume, preflight
from src.sweeps import mutransfer
from src.sweeps.callback import partial_report
from src.records import (CONFIG_FILE, METRICS_FILE, RunRecord, claim, config_hash, last_checkpoint, read_record,
                      resumable_checkpoint, write_record)

log = logging.getLogger("src.run")
# Lightning noise that says nothing about the run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)


def resumed_config(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
    """The saved config of the run in ``cfg.resume`` with the command line's ``trainer`` and
    ``logger`` overrides applied on top; any other override is refused (results would change)."""
    run_dir = Path(cfg.resume)
    check_resume(cfg.resume, overrides)
    saved = OmegaConf.load(run_dir / CONFIG_FILE)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "resume":
            continue
        if "." in key:
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
        else:  # another option of the group
            saved[key] = cfg[key]
    saved.resume = str(run_dir)
    return saved, run_dir


def _start_or_continue(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """``resume=auto``: one command line that starts a run in its fixed ``hydra.run.dir`` and, run
    again (a requeued SLURM job, a relaunch after SIGTERM), continues it there from its checkpoint.
    A dir holding a run with another config is refused."""
    saved = run_dir / CONFIG_FILE
    if not saved.exists():
        cfg.resume = None
        return cfg
    if config_hash(plain(OmegaConf.load(saved))) != config_hash(plain(cfg)):
        raise ConfigError(f"resume=auto: {run_dir} holds a run with another config; pick another hydra.run.dir")
    cfg.resume = str(run_dir)
    return cfg


def _set_aside(record_path: Path) -> None:
    """Rename a failed run's metrics.json to metrics.failed-<n>.json before the run is resumed."""
    for i in itertools.count(1):
        target = record_path.with_name(f"metrics.failed-{i}.json")
        if not target.exists():
            os.rename(record_path, target)
            return


def _earlier_run(cfg: DictConfig, run_dir: Path, multirun: bool) -> float | DictConfig:
    """When ``run_dir`` already holds a run. A single run is refused. In a (relaunched) sweep, a job
    with the same config hash is skipped when it finished, continued from its checkpoint when it was
    interrupted (or failed, with ``sweep.rerun_failed=true``: its record is kept aside); any other
    run there is left alone. A job that failed before saving its config is compared by the hash in
    its record. Every rank decides alike (a DDP job's ranks must agree); only rank 0 moves files.
    Returns the sweep metric, or the config to run with."""
    if not multirun:
        raise ConfigError(f"{run_dir} already holds a run; resume it with resume={run_dir} or pick a new dir")
    record = read_record(run_dir)
    saved = run_dir / CONFIG_FILE
    earlier_hash = config_hash(plain(OmegaConf.load(saved))) if saved.exists() else record and record["config_hash"]
    same = earlier_hash in (None, config_hash(plain(cfg)))  # None: nothing readable is left of it
    if same and record is not None and record["status"] in ("ok", "diverged"):
        log.info("%s: finished earlier (status %s); skipped", run_dir, record["status"])
        return record["sweep_metric"]
    interrupted = record is None or record["status"] == "interrupted"
    if same and (interrupted or (record["status"] == "failed" and cfg.sweep.get("rerun_failed"))):
        if not interrupted and rank_zero_only.rank == 0:
            _set_aside(run_dir / METRICS_FILE)
        log.info("%s: %s the %s job", run_dir, "continuing" if saved.exists() else "rerunning",
                 "interrupted" if interrupted else "failed")
        if saved.exists() and resumable_checkpoint(run_dir) is not None:
            cfg.resume = str(run_dir)
        return cfg
    log.warning("%s holds a %s run; left alone", run_dir, "failed" if same else "different")
    return math.inf


def _name_in_group(cfg: DictConfig, run_dir: Path) -> None:
    """W&B: runs are grouped by the folder their dirs share (a sweep's dir, a study's output folder,
    an experiment's folder of timestamped runs: ``wandb_group``), each named after its own dir (a
    job's swept values, a study run's arm and seed), unless the config names them."""
    from src.training.loggers import wandb_group

    wandb = cfg.logger.get("wandb")
    if wandb is not None:
        wandb.group = wandb.get("group") or wandb_group(run_dir.parent)
        OmegaConf.update(cfg, "logger.wandb.name", wandb.get("name") or run_dir.name, force_add=True)


def run(cfg: DictConfig, run_dir: Path, *, multirun: bool = False, overrides: Sequence[str] = ()) -> float:
    """Run one config's job in ``run_dir`` and write its ``metrics.json``; return its sweep metric.
    The run holds an exclusive claim on its dir (src.records.claim): a sweep job another process holds is
    skipped (nan: no result yet), a single run into a held dir is refused. DDP ranks other than 0 share
    rank 0's claim."""
    run_dir = Path(run_dir)
    if rank_zero_only.rank != 0:
        return _run(cfg, run_dir, multirun, overrides)
    with claim(run_dir) as holder:
        if holder is None:
            with signals.job():
                return _run(cfg, run_dir, multirun, overrides)
    if not multirun:
        _refuse(f"{run_dir} is in use by another run (pid {holder}); wait for it or pick another dir")
    log.warning("%s: another process (pid %s) is running this job; skipped", run_dir, holder)
    return math.nan


def _refuse(message: str, code: int = 2) -> None:
    """A single run's one-line error and exit code 2, a bad config's (the traceback with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise ConfigError(message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _resumed(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> tuple[DictConfig, Path, float | None]:
    """(config, run dir, the sweep metric of a run that has nothing left to resume, else None) for
    ``resume=auto`` or ``resume=<dir>``; a failed run's record is set aside before it is resumed."""
    if cfg.get("resume") == "auto":
        cfg = _start_or_continue(cfg, run_dir)
    elif cfg.get("resume"):
        cfg, run_dir = resumed_config(cfg, overrides)
    if cfg.get("resume"):
        if (done := read_record(run_dir)) is not None and done["status"] != "interrupted":
            if done["status"] != "failed":
                log.info("%s already finished (status %s); nothing to resume", run_dir, done["status"])
                return cfg, run_dir, done["sweep_metric"]
            if rank_zero_only.rank == 0:
                _set_aside(run_dir / METRICS_FILE)
    return cfg, run_dir, None


def _run(cfg: DictConfig, run_dir: Path, multirun: bool, overrides: Sequence[str]) -> float:
    started = time.time()
    try:
        cfg, run_dir, finished = _resumed(cfg, run_dir, overrides)
        if finished is not None:
            return finished
        transfer = None
        if cfg.mutransfer.get("from") and not cfg.get("resume"):  # before the relaunch check: the
            cfg, transfer = mutransfer.apply(cfg)                    # saved config holds its values
            _check_transfer_head_dim(cfg, transfer)
        earlier_files = (run_dir / CONFIG_FILE).exists() or (run_dir / METRICS_FILE).exists()
        # a single run's other DDP ranks start after rank 0 has saved its config: only rank 0 refuses
        if not cfg.get("resume") and earlier_files and (multirun or rank_zero_only.rank == 0):
            earlier = _earlier_run(cfg, run_dir, multirun)
            if not isinstance(earlier, DictConfig):
                return earlier
            cfg = earlier
        _name_in_group(cfg, run_dir)
        check(cfg)
        if cfg.print_plan:
            print(_built_plan(cfg).table())
            return math.nan
        if cfg.get("init_stage") and cfg.get("init_from") and not cfg.get("resume"):
            train_init_stage(cfg)
        record = JOBS[cfg.job](cfg, run_dir, started)
        record.mutransfer = transfer
    except ConfigError as err:
        if not multirun:
            _refuse(str(err))
        record = _failed(cfg, f"ConfigError: {err}", started)
    except Exception as err:  # a failing job must not stop a sweep; a single run re-raises
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:  # not the job's fault: no record, so a
            message = f"{err.strerror}: free space and relaunch; the job continues from its checkpoint"
            if not multirun:                                         # relaunch continues it
                _refuse(message, code=1)
            log.error("%s: %s", run_dir, message)
            return math.nan
        record = _failed(cfg, "".join(traceback.format_exception(err)), started)
        if rank_zero_only.rank == 0:
            write_record(run_dir, record)
        if not multirun:
            raise
        log.error("job failed: %s", err)
        return record.sweep_metric
    return _finish(record, run_dir)


def _finish(record: RunRecord, run_dir: Path) -> float:
    """Write a finished (or interrupted) job's record; an interrupted job stops the process after it."""
    if rank_zero_only.rank == 0:
        path = write_record(run_dir, record)
    if record.status == "interrupted":
        log.warning("%s: interrupted at step %d by SIGTERM; checkpoint saved, the same command continues it",
                    run_dir, record.steps)
        signals.stop()
    if rank_zero_only.rank == 0:
        final = record.metrics["final"]
        log.info("status %s | val/loss %s | %d steps | %.0f s", record.status,
                 f"{final['val/loss']:.4f}" if "val/loss" in final else "-", record.steps, record.wall_time_s)
        log.info("results: %s", path)
    return record.sweep_metric


def train_init_stage(cfg: DictConfig) -> None:
    """Train the run ``init_from`` names when it has not finished yet (e.g. VRPO's SFT stage):
    ``python -m src.run <init_stage overrides> hydra.run.dir=<init_from>`` in a fresh process, so that
    one command runs a two-stage pipeline on a fresh clone. A failed stage stops this run."""
    target = Path(cfg.init_from)
    if last_checkpoint(target).exists():
        return
    if OmegaConf.select(cfg, "model.path"):  # init_stage names its own model, not this published one
        raise ConfigError(f"init_from={target} has no finished run, and init_stage would train its own model "
                          f"there, not model.path={cfg.model.path}: start from the checkpoint's weights with "
                          "init_from=null, or give init_from=<an SFT run of this checkpoint>")
    args = [*cfg.init_stage, f"hydra.run.dir={target}"]
    log.info("init_from=%s has no finished run: training it first (python -m src.run %s)", target, " ".join(args))
    done = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise ConfigError(f"init_stage (python -m src.run {' '.join(args)}) failed with exit code {done.returncode}")


def _check_transfer_head_dim(cfg: DictConfig, transfer: dict) -> None:
    """Refuse a μP target whose head_dim differs from its proxy's while base_head_dim is unset: the
    attention scale α·√d_base/d_head would silently take d_base = the target's d_head (α/√d_head)."""
    proxy = read_record(Path(transfer["from"]) / transfer["source_run"])["config"]["model"].get("head_dim")
    target = cfg.model.get("head_dim")
    param = cfg.parametrization
    if param.width_rule and param.base_head_dim is None and None not in (proxy, target) and proxy != target:
        raise ConfigError(f"model.head_dim={target} differs from the μTransfer proxy's {proxy} and "
                          f"parametrization.base_head_dim is unset, so the μP attention scale would be "
                          f"1/√{target}; set parametrization.base_head_dim={proxy} (or model.head_dim={proxy})")


def _built_plan(cfg: DictConfig):
    """The plan of ``cfg`` with the init std of every tensor of the built model."""
    plan = assemble(cfg, instantiate(cfg.data, "data").model_inputs)
    build_model(plan)
    return plan


def _failed(cfg: DictConfig, error: str, started: float) -> RunRecord:
    try:
        resolved = plain(cfg)
    except Exception:  # an unresolvable config is itself the error
        resolved = OmegaConf.to_container(cfg, resolve=False)
    return RunRecord(status="failed", config=resolved, config_hash=config_hash(resolved),
                     wall_time_s=time.time() - started, error=error)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    signals.in_worker()
    n_jobs = hc.launcher.get("n_jobs")
    if multirun and isinstance(n_jobs, int) and n_jobs > 1:  # parallel jobs share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
    return run(cfg, Path(hc.runtime.output_dir), multirun=multirun, overrides=list(hc.overrides.task))


def main() -> None:
    signals.in_driver()
    try:
        preflight(sys.argv[1:])
    except ConfigError as err:
        _refuse(str(err))
    try:
        hydra_entry()
    except signals.Interrupted:
        partial_report()  # a sweep stopped by SIGTERM reports what has finished
        raise


if __name__ == "__main__":
    main()
