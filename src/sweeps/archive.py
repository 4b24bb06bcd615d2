"""A sweep's finished jobs in one compact file a repository can hold (``sweep.records=<file>.jsonl.gz``).

A long study is run over several sessions and continued on a fresh clone: the records file holds,
per finished job (ok, diverged or twin), its dir relative to the sweep dir and its ``metrics.json``
without the μP plan summary (the one large part; the config stays, since collection and μTransfer
read it), plus any small JSON files a study writes beside it that the caller names (``sidecars``:
e.g. the Fréchet distances of a run's snapshots, which need the weights to compute again).
Restoring writes each record back as ``<sweep dir>/<dir>/metrics.json`` (and its sidecars) where
none is, so the relaunched sweep or study skips those jobs as finished (src/run.py compares the
recorded config hash). Failed jobs are not archived: a relaunch retries them. Checkpoints are never
archived.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

from src.records import METRICS_FILE
from src.sweeps.collect import records

ARCHIVED = ("ok", "diverged")
SIDECARS = "_sidecars"  # the record line's key for its sidecar files (file name -> JSON content)


def export(sweep_dir: Path, path: Path, sidecars: tuple[str, ...] = ()) -> int:
    """Merge the finished jobs under ``sweep_dir`` into ``path`` (one JSON line each, sorted by dir, so
    the file changes only where jobs were added), each with those of its ``sidecars`` files that
    exist; returns the number of records it holds."""
    kept = {r["dir"]: r for r in read(path)}
    for rec in records(sweep_dir):
        if rec["status"] in ARCHIVED:
            kept[rec["dir"]] = {k: v for k, v in rec.items() if k not in ("plan", "mtime")}
            job_dir = Path(sweep_dir) / rec["dir"]
            if found := {n: json.loads((job_dir / n).read_text()) for n in sidecars if (job_dir / n).exists()}:
                kept[rec["dir"]][SIDECARS] = found
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    # no mtime and no file name (the tmp name holds the pid) in the header: the same records, the same bytes
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write("".join(json.dumps(kept[d], sort_keys=True, allow_nan=True) + "\n" for d in sorted(kept)).encode())
    os.replace(tmp, path)
    return len(kept)


def read(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def restore(path: Path, sweep_dir: Path) -> int:
    """Write every archived record (and its sidecars) whose job dir has no ``metrics.json`` yet;
    returns how many."""
    written = 0
    for rec in read(path):
        job_dir = Path(sweep_dir) / rec.pop("dir")
        if (job_dir / METRICS_FILE).exists():
            continue
        job_dir.mkdir(parents=True, exist_ok=True)
        for name, content in rec.pop(SIDECARS, {}).items():
            (job_dir / name).write_text(json.dumps(content, indent=2, allow_nan=True))
        (job_dir / METRICS_FILE).write_text(json.dumps(rec, indent=2, allow_nan=True))
        written += 1
    return written


def main(argv: list[str]) -> int:
    """``python -m src.sweeps.archive export <sweep dir> <file>`` or ``restore <file> <sweep dir>``."""
    if len(argv) != 3 or argv[0] not in ("export", "restore"):
        print("usage: python -m src.sweeps.archive export <sweep dir> <file> | restore <file> <sweep dir>",
              file=sys.stderr)
        return 2
    if argv[0] == "export":
        print(f"{export(Path(argv[1]), Path(argv[2]))} records in {argv[2]}")
    else:
        print(f"{restore(Path(argv[1]), Path(argv[2]))} jobs restored into {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
