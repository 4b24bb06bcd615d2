"""Spectral monitor: ‖W‖_R and ‖ΔW‖_R of every matrix, grouped by role, every N training steps.

The norms are ``src.mup.spectral``'s, σ_max by power iteration warm-started from the previous call's
vector (``iters``; the first call runs ``cold_iters``). ΔW is the change made by the optimizer step of
the logging step (a copy of the matrices is taken just before it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from src.mup.spectral import power_iteration, rms_norm_factor


class SpectralMonitor(Callback):
    def __init__(self, plan, every: int = 50, iters: int = 2, cold_iters: int = 10) -> None:
        self.rows = {row.name: row for row in plan.rows if row.label in ("input", "hidden", "output")}
        self.every, self.iters, self.cold_iters = every, iters, cold_iters
        self._vectors: dict[tuple[str, str], torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}

    def _matrices(self, pl_module: L.LightningModule):
        model = pl_module.model
        for name, param in model.named_parameters():
            if name in self.rows and param.ndim >= 2:
                path, _, attr = name.rpartition(".")
                yield name, param, rms_norm_factor(model.get_submodule(path), attr, param.shape)

    def _norm(self, key: tuple[str, str], matrix: torch.Tensor) -> float:
        v = self._vectors.get(key)
        iters = self.iters
        if v is None:
            v = torch.randn(matrix[0].numel(), generator=torch.Generator().manual_seed(0)).to(matrix.device)
            iters = self.cold_iters
        sigma, self._vectors[key] = power_iteration(matrix, v, iters)
        return sigma

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if (trainer.global_step + 1) % self.every == 0:
            self._before = {n: p.detach().clone() for n, p, _ in self._matrices(pl_module)}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self._before or trainer.global_step % self.every:
            return
        stats: dict[str, list[float]] = defaultdict(list)
        for name, param, factor in self._matrices(pl_module):
            group = self.rows[name].group
            stats[f"spectral/{group}/W_R"].append(factor * self._norm((name, "W"), param))
            stats[f"spectral/{group}/dW_R"].append(factor * self._norm((name, "dW"), param - self._before[name]))
        self._before = {}
        metrics = {k: sum(v) / len(v) for k, v in stats.items()}
        for logger in trainer.loggers:  # straight to the loggers, as LearningRateMonitor does: self.log
            logger.log_metrics(metrics, step=trainer.global_step)  # would drop steps off log_every_n_steps
