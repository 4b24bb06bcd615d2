"""Hydra callback: the transfer report, and a W&B summary run, at the end of every multirun.

Jobs catch their own failures (src/run.py), so the sweep always reaches ``on_multirun_end``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.sweeps.report import report
from src.training.loggers import log_transfer_summary

log = logging.getLogger("src.sweeps")


class TransferReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        transfer = report(sweep_dir)
        if transfer is None:
            log.warning("no finished job under %s: no report", sweep_dir)
            return
        log.info("transfer report: %s", sweep_dir / "report.md")
        wandb = config.logger.get("wandb")
        if wandb is not None:
            log_transfer_summary(wandb, sweep_dir, transfer)
