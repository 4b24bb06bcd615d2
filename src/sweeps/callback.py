"""Hydra callback: the transfer report, and a W&B summary run, at the end of every multirun.

Jobs catch their own failures (src/run.py), so the sweep reaches ``on_multirun_end`` unless it is
stopped by SIGTERM; then src/run.py's main() calls ``partial_report``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.sweeps.report import report
from src.training.loggers import log_transfer_summary

log = logging.getLogger("src.sweeps")


_RUNNING: list[DictConfig] = []  # the multirun this process drives, for a report when it is stopped


def partial_report() -> None:
    """The report of the multirun this process was driving (a sweep stopped by SIGTERM)."""
    if _RUNNING:
        log.warning("stopped: reporting the jobs that finished")
        TransferReport().on_multirun_end(_RUNNING.pop())


class TransferReport(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _RUNNING[:] = [config]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _RUNNING.clear()
        sweep_dir = Path(config.hydra.sweep.dir)
        transfer = report(sweep_dir)
        if transfer is None:
            log.warning("no finished job under %s: no report", sweep_dir)
            return
        log.info("transfer report: %s", sweep_dir / "report.md")
        wandb = config.logger.get("wandb")
        if wandb is not None:
            log_transfer_summary(wandb, sweep_dir, transfer)
