"""Run records: the config hash and ``metrics.json``, the one file every run leaves behind.

metrics.json keys: ``status`` (ok | diverged | failed), ``config`` (resolved), ``config_hash``,
``metrics`` ({"final": {...}, "best": {...}}), ``sweep_metric`` (+inf unless ok), ``steps``,
``wall_time_s``, ``plan`` (the μP plan's summary), ``mutransfer`` (its source, for a μTransfer run),
``twin_of`` (for a sweep job that shares another job's training, src/sweeps/sweeper.py) and ``error``
when failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The config keys that change results. Paths, loggers, launchers and resume flags do not. The trainer
# does: data.batch_size is per process, so the device count sets the global batch, and precision
# changes the numbers.
HASH_SCOPE = ("job", "task", "model", "parametrization", "optimizer", "scheduler", "data", "trainer",
              "seed", "steps")
_NOT_RESULTS = {"cache_dir"}  # keys inside the scope that only say where files live

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the result-changing part of a resolved config."""

    def strip(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: strip(v) for k, v in sorted(node.items()) if k not in _NOT_RESULTS}
        if isinstance(node, (list, tuple)):
            return [strip(v) for v in node]
        return node

    scoped = {key: strip(config.get(key)) for key in HASH_SCOPE}
    return hashlib.sha256(json.dumps(scoped, sort_keys=True, default=str).encode()).hexdigest()[:16]


def mean_of_last(history: list[dict], key: str, last_n: int) -> float:
    """Mean of ``key`` over the last ``last_n`` evaluations that logged it; +inf when none or non-finite."""
    values = [h[key] for h in history if key in h][-last_n:]
    if not values or not all(math.isfinite(v) for v in values):
        return math.inf
    return sum(values) / len(values)


@dataclass
class RunRecord:
    status: str
    config: dict
    config_hash: str
    metrics: dict = field(default_factory=lambda: {"final": {}, "best": {}})
    sweep_metric: float = math.inf
    steps: int = 0
    wall_time_s: float = 0.0
    plan: dict = field(default_factory=dict)
    mutransfer: dict | None = None  # where a μTransfer run took its base HPs from
    error: str | None = None
    twin_of: str | None = None  # a sweep job that did not train: the job dir whose training it shares

    def to_json(self) -> str:
        record = {k: v for k, v in asdict(self).items() if k not in ("error", "mutransfer", "twin_of") or v is not None}
        return json.dumps(record, indent=2, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_record(run_dir: Path, record: RunRecord) -> Path:
    """Write ``metrics.json`` once; never overwrite an earlier run's record."""
    path = Path(run_dir) / METRICS_FILE
    if path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite an earlier run's results")
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(record.to_json())
    os.replace(tmp, path)
    return path


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else None
