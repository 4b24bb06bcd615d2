"""Collect the ``metrics.json`` of every job under a sweep dir into points and a table.

A job's place in the sweep comes from its own recorded config: the LR is ``optimizer.lr`` (log2),
the arm is the values of ``sweep.arm_keys`` (e.g. parametrization and optimizer), and its axes are
the config keys ``sweep.axes`` lists (model.width and model.depth when absent), each named by its
last part (width, depth, batch_size, steps) with its base value ``sweep.base_<name>``: a job lies
on an axis when every other axis is at its base, so the base point lies on all of them. Collection only reads
files, so a partial, failing or still-running sweep can be reported.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.records import FINISHED, METRICS_FILE, read_record

DEFAULT_AXES = ("model.width", "model.depth")


def records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every metrics.json below ``sweep_dir`` (sorted by path), with its job dir relative to it."""
    out = []
    for path in sorted(Path(sweep_dir).rglob(METRICS_FILE)):
        if (record := read_record(path.parent)) is None:  # unreadable: warned, left out
            continue
        record["dir"] = str(path.parent.relative_to(sweep_dir))
        record["mtime"] = path.stat().st_mtime
        out.append(record)
    return out


def select(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def arm_label(config: Mapping[str, Any], keys: list[str], varying: set[str] | None = None) -> str:
    """``completep/AdamW``: parametrization name, optimizer class, then the other arm keys that vary
    across the sweep as key=value (``completep/AdamW/layernorm=False``)."""
    parts = []
    for key in keys:
        value = select(config, key)
        if key.endswith("_target_"):
            parts.append(str(value).rsplit(".", 1)[-1])
        elif key.endswith(".name"):
            parts.append(str(value))
        elif varying is None or key in varying:
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return "/".join(parts)


def _varying(recs: list[dict[str, Any]]) -> set[str]:
    keys = {k for r in recs for k in (r["config"].get("sweep") or {}).get("arm_keys") or []}
    return {k for k in keys if len({json.dumps(select(r["config"], k)) for r in recs}) > 1}


def points(recs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(one point per job and axis it lies on, the base size of each axis). Two jobs at the same arm,
    size, LR and seed (a relaunch with another fixed override leaves the old dirs beside the new
    ones) are not two seeds: the newer one counts, the older is marked ``stale`` in ``dedupe``."""
    pts, base = [], {}
    varying = _varying(recs)
    for rec in recs:
        cfg = rec["config"]
        sweep = cfg.get("sweep") or {}
        lr = select(cfg, "optimizer.lr")
        if not sweep.get("arm_keys") or not isinstance(lr, (int, float)) or lr <= 0 or rec["status"] not in FINISHED:
            continue  # an interrupted job is not a point yet
        axes = {key.rsplit(".", 1)[-1]: key for key in sweep.get("axes") or DEFAULT_AXES}
        values = {axis: select(cfg, key) for axis, key in axes.items()}
        bases = {axis: sweep.get(f"base_{axis}") for axis in axes}
        base.update(bases)
        loss = rec["sweep_metric"] if rec["status"] == "ok" else math.inf  # diverged: +inf
        keys = list(sweep["arm_keys"])
        common = {"arm": arm_label(cfg, keys, varying), "arm_values": {k: select(cfg, k) for k in keys},
                  "log2_lr": math.log2(lr), "seed": cfg.get("seed"), "loss": loss, "dir": rec["dir"],
                  "failed": rec["status"] == "failed",  # a missing point, not a diverged one
                  "sp": not select(cfg, "parametrization.width_rule"),  # the baseline arm: reported first
                  "trained_dir": rec.get("twin_of") or rec["dir"]}  # where its weights are (a twin has none)
        common["mtime"] = rec.get("mtime", 0.0)
        for axis, size in values.items():
            if all(values[other] == bases[other] for other in axes if other != axis):
                pts.append({**common, "axis": axis, "size": size})
    return pts, base


def dedupe(pts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(points with one job per arm, axis, size, LR and seed — the newest —, the dirs of the others)."""
    newest: dict[tuple, dict[str, Any]] = {}
    for p in sorted(pts, key=lambda p: p["mtime"]):
        newest[(p["arm"], p["axis"], p["size"], p["log2_lr"], p["seed"])] = p
    kept = list(newest.values())
    kept_dirs = {p["dir"] for p in kept}
    return kept, sorted({p["dir"] for p in pts if p["dir"] not in kept_dirs})


def write_table(recs: list[dict[str, Any]], path: Path) -> None:
    """One CSV row per job: where it lies in the sweep, its status, metric and error."""
    fields = ["dir", "status", "sweep_metric", "arm", "width", "depth", "log2_lr", "seed", "steps",
              "wall_time_s", "config_hash", "twin_of", "error"]
    varying = _varying(recs)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for rec in recs:
            cfg = rec["config"]
            lr = select(cfg, "optimizer.lr")
            keys = list((cfg.get("sweep") or {}).get("arm_keys") or [])
            writer.writerow({
                "dir": rec["dir"], "status": rec["status"], "sweep_metric": rec["sweep_metric"],
                "arm": arm_label(cfg, keys, varying) if keys else "", "width": select(cfg, "model.width"),
                "depth": select(cfg, "model.depth"),
                "log2_lr": math.log2(lr) if isinstance(lr, (int, float)) and lr > 0 else "",
                "seed": cfg.get("seed"), "steps": rec.get("steps"), "wall_time_s": rec.get("wall_time_s"),
                "config_hash": rec.get("config_hash"), "twin_of": rec.get("twin_of") or "",
                "error": (rec.get("error") or "").strip().splitlines()[-1:][0] if rec.get("error") else "",
            })
