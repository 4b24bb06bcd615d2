"""The only entry point: compose → check → build → fit → metrics.json.

    python -m src.run                                    # short GPT-2 run on the built-in corpus
    python -m src.run model.width=256 optimizer.lr=1e-3  # any key of conf/ can be overridden
    python -m src.run resume=outputs/causal_lm/<time>    # continue a killed run from last.ckpt
    python -m src.run --help                             # the config groups and their options

A bad command line stops before anything runs with one line naming the key and exit code 2. A run
writes ``metrics.json`` into its run dir; inside a multirun a failing job records ``failed`` there
and the sweep goes on.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.config import ConfigError, build, check, plain, preflight
from src.mup.optim import describe_groups
from src.runs import CONFIG_FILE, RunRecord, config_hash, mean_of_last, read_record, write_record
from src.training.loggers import build_loggers, finish_loggers
from src.training.trainer import build_trainer

log = logging.getLogger("src.run")
# Lightning noise that says nothing about the run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)


def _last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def resumed_config(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
    """The saved config of the run in ``cfg.resume``; only trainer and logger may be overridden."""
    run_dir = Path(cfg.resume)
    if not (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"resume={cfg.resume}: no {CONFIG_FILE} there; give the directory of an earlier run")
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides} - {"resume"}
    roots = {k.split(".")[0].split("/")[0] for k in keys}
    if roots - {"trainer", "logger", "hydra"}:
        bad = sorted(k for k in keys if k.split(".")[0] not in ("trainer", "logger", "hydra"))
        raise ConfigError(f"resume: a resumed run keeps its config; only trainer and logger may change (drop {', '.join(bad)})")
    saved = OmegaConf.load(run_dir / CONFIG_FILE)
    for root in roots & {"trainer", "logger"}:
        saved[root] = cfg[root]
    saved.resume = str(run_dir)
    return saved, run_dir


def summarize(task, status: str, cfg: DictConfig) -> tuple[dict, float]:
    """metrics (final and best) and the sweep metric from a task's validation history."""
    history = task.history
    final = dict(history[-1]) if history else {}
    final.pop("step", None)
    final["train/loss"] = task.last_train_loss
    rates = task.throughput[1:] or task.throughput  # the first step includes warm-up costs
    if rates:
        final[f"train/{task.item_name}_per_s"] = sum(rates) / len(rates)
    keys = {k for h in history for k in h if k != "step"}
    best = {k: min(h[k] for h in history if k in h) for k in keys}
    key, last_n = cfg.sweep_metric.key, cfg.sweep_metric.last_n
    metric = mean_of_last(history, key, last_n) if status == "ok" else math.inf
    return {"final": final, "best": best}, metric


def train(cfg: DictConfig, run_dir: Path, started: float) -> RunRecord:
    """Build data, model, task and trainer from ``cfg``; fit; return the run's record."""
    L.seed_everything(cfg.seed, verbose=False)  # model init; data and noise use their own generators
    data = build(cfg.data, "data")
    data.setup("fit")
    model = build(cfg.model, "model", vocab_size=data.vocab_size)
    task = build(cfg.task, "task", _recursive_=False, model=model, optimizer=plain(cfg.optimizer),
                 scheduler=build(cfg.scheduler, "scheduler"), steps=cfg.steps, compile=cfg.compile)
    loggers = build_loggers(cfg.logger, run_dir, cfg.name, plain(cfg))
    trainer, guard = build_trainer(cfg, run_dir, loggers)
    if trainer.is_global_zero and not (run_dir / CONFIG_FILE).exists():
        OmegaConf.save(cfg, run_dir / CONFIG_FILE, resolve=True)
    checkpoint = _last_checkpoint(run_dir)
    try:
        trainer.fit(task, datamodule=data, ckpt_path=checkpoint if cfg.resume and checkpoint.exists() else None)
        status = "diverged" if guard.diverged_at is not None else "ok"
        if status == "ok" and (not task.history or task.history[-1]["step"] != trainer.global_step):
            trainer.validate(task, datamodule=data, verbose=False)
        trainer.save_checkpoint(checkpoint, weights_only=False)
    finally:
        finish_loggers(loggers)
    metrics, sweep_metric = summarize(task, status, cfg)
    resolved = plain(cfg)
    return RunRecord(status=status, config=resolved, config_hash=config_hash(resolved), metrics=metrics,
                     sweep_metric=sweep_metric, steps=trainer.global_step,
                     wall_time_s=time.time() - started, plan=describe_groups(trainer.optimizers[0]))


def run(cfg: DictConfig, run_dir: Path, *, multirun: bool = False, overrides: Sequence[str] = ()) -> float:
    """Train one config in ``run_dir`` and write its ``metrics.json``; return its sweep metric."""
    started, run_dir = time.time(), Path(run_dir)
    try:
        if cfg.get("resume"):
            cfg, run_dir = resumed_config(cfg, overrides)
            if (done := read_record(run_dir)) is not None:
                log.info("%s already finished (status %s); nothing to resume", run_dir, done["status"])
                return done["sweep_metric"]
        elif rank_zero_only.rank == 0 and (run_dir / CONFIG_FILE).exists():
            raise ConfigError(f"{run_dir} already holds a run; resume it with resume={run_dir} or pick a new dir")
        check(cfg)
        record = train(cfg, run_dir, started)
    except ConfigError as err:
        if not multirun:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        record = _failed(cfg, f"ConfigError: {err}", started)
    except Exception as err:  # a failing job must not stop a sweep; a single run re-raises
        record = _failed(cfg, "".join(traceback.format_exception(err)), started)
        if rank_zero_only.rank == 0:
            write_record(run_dir, record)
        if not multirun:
            raise
        log.error("job failed: %s", err)
        return record.sweep_metric
    if rank_zero_only.rank == 0:
        path = write_record(run_dir, record)
        final = record.metrics["final"]
        log.info("status %s | val/loss %s | %d steps | %.0f s", record.status,
                 f"{final['val/loss']:.4f}" if "val/loss" in final else "-", record.steps, record.wall_time_s)
        log.info("results: %s", path)
    return record.sweep_metric


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
    return run(cfg, Path(hc.runtime.output_dir), multirun=hc.mode == RunMode.MULTIRUN,
               overrides=list(hc.overrides.task))


def main() -> None:
    try:
        preflight(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    hydra_entry()


if __name__ == "__main__":
    main()
