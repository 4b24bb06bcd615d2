"""Wall time of one sweep under Hydra's basic (sequential, in-process) launcher and under
``hydra/launcher=local`` (joblib: 2 jobs in parallel processes, torch threads split between them).

    .venv/bin/python experiments/benchmarks/sweep_launchers.py [--repeats 2] [hydra overrides ...]

Default sweep: ``experiment=gpt2_width_depth_sweep budget=smoke`` (27 jobs). The two launchers
alternate (basic, local, basic, local, ...) into fresh temporary sweep dirs, and the script prints
every wall time and the ratio basic / local per repeat.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["experiment=gpt2_width_depth_sweep", "budget=smoke", "logger=csv"]


def run_sweep(launcher: str, extra: list[str]) -> tuple[float, int]:
    """(wall seconds, jobs finished) of one sweep with ``launcher`` ("basic" or "local")."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "src.run", *SWEEP, *extra, f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp}"]
        started = time.perf_counter()
        subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - started
        return wall, len(list(Path(tmp).rglob("metrics.json")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args, extra = parser.parse_known_args()
    for repeat in range(args.repeats):
        basic, jobs = run_sweep("basic", extra)
        local, _ = run_sweep("local", extra)
        print(f"repeat {repeat}: {jobs} jobs, basic {basic:.1f} s, local {local:.1f} s, speed-up {basic / local:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
