"""Run records: the config hash and ``metrics.json``, the one file every run leaves behind.

metrics.json keys: ``status`` (ok | diverged | failed, or interrupted: stopped by SIGTERM with a
checkpoint of the step it stopped in, continued by a relaunch), ``config`` (resolved), ``config_hash``,
``metrics`` ({"final": {...}, "best": {...}}), ``sweep_metric`` (+inf unless ok), ``steps``,
``wall_time_s``, ``plan`` (the μP plan's summary), ``mutransfer`` (its source, for a μTransfer run),
``twin_of`` (for a sweep job that shares another job's training, src/sweeps/sweeper.py) and ``error``
when failed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The config keys that cannot change a run's results; every other key is hashed, so a new key counts
# until it is shown not to. The sweep and budget groups only feed values into hashed keys (the
# resolved config holds them there), μTransfer writes its HPs into hashed keys, checkpointing
# resumes bit-identically, and the rest say where files go, what is logged and when.
NOT_RESULTS = ("budget", "sweep", "mutransfer", "name", "paths", "logger", "resume", "print_plan", "log_every",
               "ckpt_every", "snapshot_every")
_NOT_RESULTS_INSIDE = {"cache_dir"}  # keys inside hashed groups that only say where files live
# Keys added after records existed: at their neutral value they hash as if absent, so those records
# keep their hash (a relaunch of a study recognises its finished jobs); a config without one means it.
ADDED_NEUTRAL = {"parametrization.init_gain": 1.0, "data.pairs_seed": None}
log = logging.getLogger("src.run")

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
CLAIM_FILE = ".claim"
FINISHED = ("ok", "diverged", "failed")  # statuses of a job that is done (interrupted is not)


@contextmanager
def claim(run_dir: Path) -> Iterator[str | None]:
    """An exclusive claim on ``run_dir`` while the block runs: an OS lock (flock) on its ``.claim``
    file, which the kernel releases when the process ends however it ends (kill -9 included), so a
    claim never outlives its owner. Yields None when this process holds it, else the holder's pid
    (as the holder wrote it) and holds nothing."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield None
    finally:
        os.close(fd)  # releases the lock


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def snapshots(run_dir: Path) -> dict[int, Path]:
    """step -> the weights kept at that step (``snapshot_every``)."""
    return {int(p.stem.removeprefix("step=")): p for p in (Path(run_dir) / "checkpoints" / "snapshots").glob("step=*.ckpt")}


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept (src/training/callbacks.py AtomicCheckpointIO)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checkpoint_error(path: Path) -> str | None:
    """Why ``path`` cannot be loaded (truncated, empty, not a checkpoint), or None when it can."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 — torch raises several types for a damaged file
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a run continues from: ``last.ckpt``, or the one before it when the last is
    damaged (one warning); None when there is none that loads."""
    last = last_checkpoint(run_dir)
    for path in (last, previous_checkpoint(last)):
        if not path.exists():
            continue
        if (error := checkpoint_error(path)) is None:
            return path
        log.warning("%s is unreadable (%s)%s", path, error, "; falling back to the one before" if path == last else "")
    return None


def result_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides a run's results: every key but NOT_RESULTS, with
    ``init_from`` (a run dir) replaced by that run's own config hash once it has a record — the
    starting weights are a function of it, wherever the dir lives."""

    def strip(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: strip(v) for k, v in sorted(node.items()) if k not in _NOT_RESULTS_INSIDE}
        if isinstance(node, (list, tuple)):
            return [strip(v) for v in node]
        return node

    scoped = {key: strip(value) for key, value in config.items() if key not in NOT_RESULTS}
    for dotted, neutral in ADDED_NEUTRAL.items():
        group, key = dotted.split(".")
        if isinstance(scoped.get(group), dict) and scoped[group].get(key, neutral) == neutral:
            scoped[group] = {k: v for k, v in scoped[group].items() if k != key}
    if scoped.get("init_from"):
        source = read_record(Path(scoped["init_from"]))
        scoped["init_from"] = {"config_hash": source["config_hash"]} if source else str(scoped["init_from"])
    return scoped


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of a resolved config's result_config."""
    return hashlib.sha256(json.dumps(result_config(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    cost: dict | None = None  # FLOPs counted on the run's steps (src/training/flops.py)

    def to_json(self) -> str:
        record = {k: v for k, v in asdict(self).items() if k not in ("error", "mutransfer", "twin_of", "cost") or v is not None}
        return json.dumps(record, indent=2, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_record(run_dir: Path, record: RunRecord) -> Path:
    """Write ``metrics.json``; never overwrite an earlier run's record (an interrupted one is only
    the state the run continues from)."""
    path = Path(run_dir) / METRICS_FILE
    if (earlier := read_record(run_dir)) is not None and earlier["status"] != "interrupted":
        raise FileExistsError(f"{path} already exists; refusing to overwrite an earlier run's results")
    text = record.to_json()
    write_atomically(path, lambda tmp: tmp.write_text(text))
    return path


def read_record(run_dir: Path) -> dict | None:
    """The run's metrics.json; None when it has none or it is unreadable (truncated by a crash or a
    full disk: one warning naming it, and the job counts as unfinished)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s); the job counts as unfinished", path, str(err).splitlines()[0])
        return None
    if not isinstance(record, dict) or "status" not in record:
        log.warning("%s is not a run record; the job counts as unfinished", path)
        return None
    return record


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename tmp to ``path``, so a crash leaves the old file whole. When the disk
    is full the partial tmp file is removed (it would keep the disk full) and the error says so."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device writing {path}") from None
        raise
