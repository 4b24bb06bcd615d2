"""The training loop every task shares: named parameter groups, per-group LR schedule, loss and
throughput logging, a validation history, and checkpoint state for exact resume.

A task subclass defines ``loss(batch) -> (mean loss, number of items)``; items are what throughput
counts (tokens for language models). The task is given a model and an optimizer factory (the run
builds both from its μP plan); it knows nothing of μP.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


class Task(L.LightningModule):
    item_name = "items"  # what throughput counts
    # what each validation records (sweep_metric.key must be one) and which way is better
    metric_goals: dict[str, str] = {"val/loss": "min"}
    report_extras: tuple[str, ...] = ()  # what a sweep report adds for this task ("samples": sample grids)

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, scheduler: Callable[..., float], steps: int,
                 compile: bool = False, record: Mapping[str, Any] | None = None) -> None:
        """``optimizer(model)`` builds the optimizer; ``scheduler(step, total)`` is the LR factor;
        ``record`` (the μP plan as data) goes into every checkpoint, for the record."""
        super().__init__()
        self.model, self.make_optimizer, self.record = model, optimizer, dict(record or {})
        self.schedule, self.steps = scheduler, steps
        # Compile the bound forward, not the module: a compiled module would register as a second
        # submodule (every weight twice in checkpoints) and rename parameters (_orig_mod.).
        self._compiled = torch.compile(model.forward) if compile else None
        self.history: list[dict[str, float]] = []  # one entry per validation: {"step", "val/loss", ...}
        self.last_train_loss: torch.Tensor | None = None
        self.rate_sum, self.rate_count = 0.0, 0  # items/s over training steps (first of a segment excluded)
        self.elapsed_before = 0.0  # seconds spent in earlier segments of a resumed run
        self._segment_start = time.time()
        self._last_step_time: float | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return (self._compiled or self.model)(*args, **kwargs)

    def loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    # -- training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, items = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.last_train_loss = loss.detach()
        now = time.perf_counter()
        if self._last_step_time is not None:
            rate = items * self.trainer.world_size / (now - self._last_step_time)
            self.rate_sum, self.rate_count = self.rate_sum + rate, self.rate_count + 1
            self.log(f"train/{self.item_name}_per_s", rate)
        self._last_step_time = now
        return loss

    def on_train_start(self) -> None:
        self._segment_start = time.time()

    def elapsed_s(self) -> float:
        """Training wall time over every segment of a (resumed) run."""
        return self.elapsed_before + time.time() - self._segment_start

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.make_optimizer(self.model)
        factor = functools.partial(self.schedule, total=self.steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- validation: exact weighted means over all ranks — val/loss weighted by items, and any other
    #    metric a subclass adds with ``add_val`` (e.g. an accuracy over held-out rows)
    def on_validation_epoch_start(self) -> None:
        self._val_sums: dict[str, torch.Tensor] = {}

    def add_val(self, key: str, total: float | torch.Tensor, count: float) -> None:
        """Add ``total`` over ``count`` items to the validation mean of ``key``."""
        pair = torch.stack([torch.as_tensor(total, dtype=torch.float64), torch.tensor(float(count), dtype=torch.float64)])
        self._val_sums[key] = self._val_sums.get(key, 0) + pair.to(self.device)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, items = self.loss(batch)
        self.add_val("val/loss", loss.detach().double() * items, items)

    def on_validation_epoch_end(self) -> None:
        means = {}
        for key in self.metric_goals:  # the same keys in the same order on every rank
            sums = self._val_sums.get(key, torch.zeros(2, dtype=torch.float64, device=self.device))
            total = self.trainer.strategy.reduce(sums, reduce_op="sum")
            if total[1] > 0:
                means[key] = float(total[0] / total[1])
                self.log(key, means[key], sync_dist=True)  # equal on every rank already
        if not self.trainer.sanity_checking:  # elapsed_s: training wall time so far (time-to-target studies)
            self.history.append({"step": self.global_step, "elapsed_s": self.elapsed_s(), **means})
        self._last_step_time = None  # do not count validation time as a training step

    # -- exact resume: evaluation history and the global RNG (dropout) travel with the checkpoint,
    #    and the μP plan goes along for the record (loading never re-initialises or re-scales)
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["scaling_lab"] = {
            "history": self.history, "rng": rng, "plan": self.record, "elapsed_s": self.elapsed_s(),
            "last_train_loss": self.last_train_loss, "rate": (self.rate_sum, self.rate_count),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["scaling_lab"]
        self.history, self.last_train_loss, self.elapsed_before = (
            state["history"], state["last_train_loss"], state["elapsed_s"])
        self.rate_sum, self.rate_count = state["rate"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
