"""Lightning callbacks and plugins that every task shares.

* ``DivergenceGuard`` stops a run whose loss is non-finite or above ``factor`` × its first value after
  warmup; the run ends with status ``diverged`` and exit code 0, so sweeps go on.
* ``LastCheckpoint`` writes ``last.ckpt`` every N steps, *after* that step's validation, so the file
  holds the evaluation history up to its step (Lightning's ModelCheckpoint saves step-triggered
  checkpoints before validation runs, and a resumed run would lose that evaluation). After a
  SIGTERM (Lightning then stops the loop at the end of the step) it writes one at that same point of
  the step, so a terminated run continues from the step it was in.
* ``AtomicCheckpointIO`` writes checkpoints to a temporary file, loads it back, and only then
  renames it into place, keeping the one before as ``last.prev.ckpt``: a run killed while saving
  leaves ``last.ckpt`` intact, and a damaged ``last.ckpt`` falls back to the one before it.
* ``LinePrinter`` prints one line per ``every`` steps when stdout is not a terminal (job logs, CI),
  where a TQDM bar would be one endless line of carriage returns.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from src.records import checkpoint_error, previous_checkpoint, write_atomically

log = logging.getLogger("src.train")


class DivergenceGuard(Callback):
    def __init__(self, factor: float = 2.0, after_step: int = 0) -> None:
        self.factor, self.after_step = factor, after_step
        self.initial_loss: float | None = None
        self.diverged_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = float(outputs["loss"])
        if self.initial_loss is None:
            self.initial_loss = loss
        step = trainer.global_step
        bad = not math.isfinite(loss) or (step > self.after_step and loss > self.factor * self.initial_loss)
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            self.diverged_at = step
            trainer.should_stop = True
            log.warning("diverged at step %d: loss %.4g (initial %.4g)", step, loss, self.initial_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"initial_loss": self.initial_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_loss = state_dict["initial_loss"]


class LastCheckpoint(Callback):
    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = Path(path), every
        self._saved_step = -1

    def _save_if_due(self, trainer: L.Trainer) -> None:
        step = trainer.global_step
        due = step % self.every == 0 or trainer.received_sigterm
        if step > 0 and due and step != self._saved_step:
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        validates_now = trainer.global_step % int(trainer.val_check_interval) == 0
        if not validates_now and not trainer.should_stop:
            self._save_if_due(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save_if_due(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)

        def write(tmp: Path) -> None:
            super(AtomicCheckpointIO, self).save_checkpoint(checkpoint, tmp, storage_options)
            if (error := checkpoint_error(tmp)) is not None:
                raise OSError(f"the checkpoint just written to {tmp} does not load back ({error})")
            if path.exists():  # kept until the new one is verified, as the fallback (resumable_checkpoint)
                os.replace(path, previous_checkpoint(path))

        write_atomically(path, write)


class LinePrinter(Callback):
    def __init__(self, every: int) -> None:
        self.every = every

    @staticmethod
    def _fmt(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
        return " | ".join(f"{k} {float(metrics[k]):.4g}" for k in keys if k in metrics)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if trainer.is_global_zero and (step % self.every == 0 or step == trainer.max_steps):
            rate = f"train/{getattr(pl_module, 'item_name', 'tokens')}_per_s"
            stats = self._fmt(trainer.callback_metrics, ("train/loss", rate))
            log.info("step %d/%d | %s", step, trainer.max_steps, stats)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            keys = tuple(getattr(pl_module, "metric_goals", ("val/loss",)))
            log.info("step %d | %s", trainer.global_step, self._fmt(trainer.callback_metrics, keys))
