"""One run of a study in a fixed dir, once: the studies of this folder call it for every run, so a
relaunch skips the runs that finished and continues the interrupted ones from their checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from src.records import CONFIG_FILE, read_record  # noqa: E402


def train_once(run_dir: Path, study: str, overrides: list[str]) -> dict:
    """The run's record: trained now, continued, or read back when it finished earlier."""
    record = read_record(run_dir)
    if record is None or record["status"] not in ("ok", "diverged"):
        resume = [f"resume={run_dir}"] if (run_dir / CONFIG_FILE).exists() else []
        args = [sys.executable, "-m", "src.run", f"experiment={study}", "hydra.mode=RUN",
                f"hydra.run.dir={run_dir}", *overrides, *resume]
        print("+", " ".join(args[2:]), flush=True)
        if subprocess.run(args, cwd=ROOT).returncode != 0:
            raise SystemExit(f"{run_dir.name} failed")
        record = read_record(run_dir)
    return record
