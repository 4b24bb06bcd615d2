"""The training job: build data, model (with its μP plan), task and trainer from a config; fit; record."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from src.checkpoints import load_weights
from src.assemble import assemble, build_task, instantiate, plain
from src.mup.optim import describe_groups
from src.mup.plan import Plan, build_model
from src.records import CONFIG_FILE, RunRecord, config_hash, last_checkpoint, mean_of_last, resumable_checkpoint
from src.training.loggers import build_loggers, finish_loggers, log_plan, log_summary
from src.training.trainer import build_trainer


def plan_summary(plan: Plan, optimizer) -> dict:
    """The plan in metrics.json: sizes, ratios, model multipliers and the optimizer's groups."""
    summary = {k: getattr(plan, k) for k in ("parametrization", "width", "depth", "base_width", "base_depth",
                                             "r_n", "r_L", "model_kwargs")}
    summary["groups"] = describe_groups(optimizer) if optimizer is not None else plan.groups()
    return summary


def swept_values(plan: Plan, seed: int) -> dict:
    """What a sweep varies, at the top of each run's W&B config so the UI can group and filter by it:
    arm, optimizer, width, depth, log2 of the base LR, seed, and every parameter group's LR."""
    return {"arm": plan.parametrization, "optimizer_name": "+".join(part.spec.name for part in plan.parts),
            "width": plan.width, "depth": plan.depth, "log2_lr": math.log2(plan.parts[0].spec.lr), "seed": seed,
            "group_lr": plan.group_lrs()}


_NOT_METRICS = ("step", "elapsed_s")  # a history entry's position, not a measurement


def summarize(task, status: str, cfg: DictConfig) -> tuple[dict, float]:
    """metrics (final, best and the validation history) and the sweep metric from a task's history."""
    history = task.history
    final = {k: v for k, v in (history[-1] if history else {}).items() if k not in _NOT_METRICS}
    if task.last_train_loss is not None:
        final["train/loss"] = float(task.last_train_loss)
    if task.rate_count:
        final[f"train/{task.item_name}_per_s"] = task.rate_sum / task.rate_count
    keys = {k for h in history for k in h if k not in _NOT_METRICS}
    pick = lambda k: max if task.metric_goals.get(k) == "max" else min  # noqa: E731
    best = {k: pick(k)(h[k] for h in history if k in h) for k in keys}
    key, last_n = cfg.sweep_metric.key, cfg.sweep_metric.last_n
    metric = mean_of_last(history, key, last_n) if status == "ok" else math.inf
    return {"final": final, "best": best, "history": [dict(h) for h in history]}, metric


def _fit(trainer: L.Trainer, task, data, guard, cfg: DictConfig, run_dir: Path) -> str:
    """Fit (resuming where asked), validate the last step, save the last checkpoint; the run's status."""
    try:
        trainer.fit(task, datamodule=data, ckpt_path=resumable_checkpoint(run_dir) if cfg.resume else None)
        status = "diverged" if guard.diverged_at is not None else "ok"
        if status == "ok" and (not task.history or task.history[-1]["step"] != trainer.global_step):
            trainer.validate(task, datamodule=data, verbose=False)
        trainer.save_checkpoint(last_checkpoint(run_dir), weights_only=False)
    except SIGTERMException:  # LastCheckpoint saved the step it stopped in
        status = "interrupted"
    return status


def train(cfg: DictConfig, run_dir: Path, started: float) -> RunRecord:
    """Build data, model, task and trainer from ``cfg``; fit; return the run's record."""
    L.seed_everything(cfg.seed, verbose=False)  # model init; data and noise use their own generators
    data = instantiate(cfg.data, "data")
    plan = assemble(cfg, data.model_inputs)
    data.setup("fit")
    model = build_model(plan)
    if cfg.get("init_from"):  # start from a finished run's weights (e.g. VRPO from an SFT run)
        load_weights(model, cfg.init_from)
    task = build_task(cfg, model, plan, instantiate(cfg.scheduler, "scheduler"), cfg.steps, cfg.compile)
    loggers = build_loggers(cfg.logger, run_dir, cfg.name,
                            {**swept_values(plan, cfg.seed), **plain(cfg), "plan": plan_summary(plan, None)})
    log_plan(loggers, plan)
    trainer, guard, flops = build_trainer(cfg, run_dir, loggers, plan)
    if trainer.is_global_zero and not (run_dir / CONFIG_FILE).exists():
        OmegaConf.save(cfg, run_dir / CONFIG_FILE, resolve=True)
    try:
        status = _fit(trainer, task, data, guard, cfg, run_dir)
        metrics, sweep_metric = summarize(task, status, cfg)
        log_summary(loggers, {"status": status, "sweep_metric": sweep_metric if math.isfinite(sweep_metric) else None})
    finally:
        finish_loggers(loggers)
    resolved = plain(cfg)
    return RunRecord(status=status, config=resolved, config_hash=config_hash(resolved), metrics=metrics,
                     sweep_metric=sweep_metric, steps=trainer.global_step,
                     wall_time_s=task.elapsed_before + time.time() - started,
                     plan=plan_summary(plan, trainer.optimizers[0]),
                     cost=flops.cost(trainer, len(task.history)) if flops else None)
