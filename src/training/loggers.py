"""Loggers from the ``logger`` config group: CSV and Weights & Biases, both writing inside the run dir.

W&B is offline unless asked otherwise: the mode is ``$WANDB_MODE`` when set, else
``logger.wandb.mode`` (default ``offline``). It is passed to ``wandb.init`` directly instead of using
``WandbLogger(offline=True)``, which writes ``WANDB_MODE=dryrun`` into ``os.environ`` and so leaks
into every later job of an in-process multirun. ``online`` falls back to offline when the server
does not answer within a few seconds (``wandb_mode``). The W&B run id is derived from the run dir, so a
resumed run continues the same W&B run.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.loggers import CSVLogger, Logger

log = logging.getLogger("src.train")


REACH_TIMEOUT_S = 3.0


def wandb_mode(configured: str) -> str:
    """The mode a run uses: ``$WANDB_MODE`` or ``configured``; ``online`` only when the W&B server
    answers (else offline, with one warning per process: the run stays complete and ``wandb sync``
    uploads it later, instead of every job waiting ~100 s and failing)."""
    mode = os.environ.get("WANDB_MODE") or configured
    if mode == "online" and not _server_reachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")):
        return "offline"
    return mode


@functools.cache
def _server_reachable(url: str) -> bool:
    """Whether a TCP connection to ``url``'s host opens within REACH_TIMEOUT_S (checked once per process)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        log.warning("W&B server %s is not reachable (%s): logging offline; `wandb sync` uploads the runs later",
                    url, err.strerror or err)
        return False
    return True


def build_loggers(spec: Mapping[str, Any], run_dir: Path, run_name: str, config: dict) -> list[Logger]:
    loggers: list[Logger] = []
    if spec.get("csv"):
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv"))
    wandb = spec.get("wandb")
    if wandb is not None:
        from lightning.pytorch.loggers import WandbLogger

        run_id = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
        loggers.append(WandbLogger(
            save_dir=str(run_dir), project=wandb["project"], entity=wandb.get("entity"),
            group=wandb.get("group"), tags=list(wandb.get("tags") or []), name=wandb.get("name") or run_name,
            id=run_id, resume="allow", mode=wandb_mode(wandb["mode"]), config=config, log_model=False,
        ))
    return loggers


def wandb_group(folder: Path) -> str:
    """The W&B group of the runs in ``folder``: its name under its parent's (``dit_mup/multirun-…``,
    ``pixart_mup/seeded``, ``dit_mup/convergence``), so studies that share a project and name their
    folders alike stay apart."""
    folder = Path(folder)
    return f"{folder.parent.name}/{folder.name}"


def log_plan(loggers: list[Logger], plan) -> None:
    """The μP plan as a table, to every logger that takes tables (W&B)."""
    columns = list(plan.rows[0].__dataclass_fields__) if plan.rows else []
    for logger in loggers:
        if hasattr(logger, "log_table"):
            logger.log_table("mup/plan", columns=columns, data=[[getattr(r, c) for c in columns] for r in plan.rows])


def log_transfer_summary(spec: Mapping[str, Any], sweep_dir: Path, transfer: Mapping[str, Any]) -> None:
    """A W&B run in the sweep's group holding the native transfer charts (src/sweeps/dashboard.py), the
    transfer, points and cost tables (src/sweeps/cost.py), the plots and any sample grids."""
    import wandb

    from src.sweeps.dashboard import log_report_run, transfer_charts

    columns = ["arm", "axis", "sizes", "optimal_log2_lr", "optimal_log2_lr_ci", "drift_octaves", "drift_ci", "slope",
               "slope_ci", "verdict", "regret", "violations"]
    table = wandb.Table(columns=columns, data=[[str(a.get(c)) for c in columns] for a in transfer["arms"]])
    points = wandb.Table(columns=["arm", "axis", "size", "log2_lr", "loss", "seeds"], data=[
        [a["arm"], a["axis"], c["size"], x, y if math.isfinite(y) else None, len(seeds)]
        for a in transfer["arms"] for c in a["curves"].values()
        for x, y, seeds in zip(c["log2_lrs"], c["losses"], c.get("seeds", [[]] * len(c["losses"])))])
    images = {f"transfer/{p.stem}": wandb.Image(str(p)) for p in sorted(sweep_dir.glob("*.png"))}
    images |= {f"samples/{p.stem}": wandb.Image(str(p)) for p in sorted(sweep_dir.glob("samples/*.png"))}
    cost_columns = ["arm", "axis", "proxy_size", "target_size", "proxy_flops", "proxy_wall_s", "target_run_flops",
                    "target_run_wall_s", "direct_flops", "direct_wall_s", "pct_of_target_run_flops",
                    "pct_of_target_run_wall", "pct_of_direct_flops", "pct_of_direct_wall"]
    cost = wandb.Table(columns=cost_columns, data=[
        [a["arm"], a["axis"], a["proxy_size"], a["target_size"],
         *(a[k][u] for k in ("proxy_search", "target_run", "direct_search") for u in ("flops", "wall_time_s")),
         *(a[k][u] for k in ("proxy_vs_target_run_pct", "proxy_vs_direct_search_pct")
           for u in ("flops", "wall_time_s"))]
        for a in transfer.get("cost", {}).get("per_arm", [])])
    totals = transfer.get("cost", {})
    sizes = wandb.Table(columns=["axis", "size", "jobs", "flops", "wall_time_s"], data=[
        *([r["axis"], r["size"], r["jobs"], r["flops"], r["wall_time_s"]] for r in totals.get("per_size", [])),
        *(["all", None, t["jobs"], t["flops"], t["wall_time_s"]] for t in [totals.get("total")] if t)])
    log_report_run(spec, sweep_dir, spec.get("group") or wandb_group(sweep_dir), "transfer-report",
                   {"transfer/table": table, "transfer/points": points, "transfer/cost": cost,
                    "transfer/cost_per_size": sizes, **images, **transfer_charts(wandb, transfer)})


def log_summary(loggers: list[Logger], values: Mapping[str, Any]) -> None:
    """Values for the run's W&B summary (status, the sweep metric), beside its last logged metrics."""
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "summary"):
            experiment.summary.update(dict(values))


def finish_loggers(loggers: list[Logger]) -> None:
    """Close the W&B run so the next in-process job starts a fresh one."""
    for logger in loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()
