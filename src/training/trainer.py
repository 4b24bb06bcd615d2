"""The Lightning Trainer of a run: hardware from ``conf/trainer``, loop length and callbacks from the run keys."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from src.assemble import instantiate
from src.mup.plan import Plan
from src.training.spectral_monitor import SpectralMonitor
from src.records import last_checkpoint
from src.training.callbacks import AtomicCheckpointIO, DivergenceGuard, LastCheckpoint, LinePrinter
from src.training.flops import FlopCount
from src.training.schedules import warmup_steps


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list[Logger],
                  plan: Plan) -> tuple[L.Trainer, DivergenceGuard, FlopCount | None]:
    """(the trainer, its divergence guard, its FLOP counter: None under ``compile``, where a dispatch
    mode around compiled code is not known to count right)."""
    guard = DivergenceGuard(cfg.divergence.factor, warmup_steps(cfg.steps, cfg.scheduler.get("warmup", 0.0)))
    flops = None if cfg.compile else FlopCount()
    callbacks = [guard, LastCheckpoint(last_checkpoint(run_dir), cfg.ckpt_every), *([flops] if flops else [])]
    if cfg.get("snapshot_every"):  # weights only: for evaluating a run over its training (samples, FD)
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints" / "snapshots", filename="{step}",
                                         every_n_train_steps=cfg.snapshot_every, save_top_k=-1, save_weights_only=True))
    if cfg.get("ema_decay") is not None:  # validation and checkpoints see the average, training the raw weights
        callbacks.append(EMAWeightAveraging(decay=cfg.ema_decay))
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))  # one curve per named group
        if cfg.spectral_every:
            callbacks.append(SpectralMonitor(plan, cfg.spectral_every))
    tty = sys.stdout.isatty()
    callbacks.append(TQDMProgressBar() if tty else LinePrinter(cfg.log_every))
    trainer = instantiate(
        cfg.trainer, "trainer",
        max_steps=cfg.steps, val_check_interval=cfg.val_every, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, log_every_n_steps=cfg.log_every,
        gradient_clip_val=cfg.optimizer.get("grad_clip"), callbacks=callbacks, logger=loggers or False,
        default_root_dir=str(run_dir), enable_checkpointing=bool(cfg.get("snapshot_every")), enable_progress_bar=tty,
        enable_model_summary=False, plugins=[AtomicCheckpointIO()],
    )
    return trainer, guard, flops
