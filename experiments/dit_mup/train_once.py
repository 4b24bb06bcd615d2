"""One run of a study in a fixed dir, once: the studies of this folder call it for every run, so a
relaunch skips the runs that finished and continues the interrupted ones from their checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from src.records import CONFIG_FILE, read_record  # noqa: E402


def command(run_dir: Path, study: str, overrides: list[str]) -> list[str]:
    """``src.run``'s arguments: the run from its overrides, or ``resume=<dir>`` alone once the dir
    holds its config (a resumed run keeps that config: preflight refuses other overrides)."""
    if (run_dir / CONFIG_FILE).exists():
        return [f"resume={run_dir}"]
    return [f"experiment={study}", "hydra.mode=RUN", f"hydra.run.dir={run_dir}", *overrides]


def train_once(run_dir: Path, study: str, overrides: list[str]) -> dict:
    """The run's record: trained now, continued, or read back when it finished earlier."""
    record = read_record(run_dir)
    if record is None or record["status"] not in ("ok", "diverged"):
        args = [sys.executable, "-m", "src.run", *command(run_dir, study, overrides)]
        print("+", " ".join(args[2:]), flush=True)
        if subprocess.run(args, cwd=ROOT).returncode != 0:
            raise SystemExit(f"{run_dir.name} failed")
        record = read_record(run_dir)
    return record
