"""One run of a study in a fixed dir, once: the studies of this folder call it for every run, so a
relaunch skips the runs that finished and continues the interrupted ones from their checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from src.records import CONFIG_FILE, read_record  # noqa: E402

SETTINGS = "study_settings.json"  # the command line the dir's run was started with


def command(run_dir: Path, study: str, overrides: list[str]) -> list[str]:
    """``src.run``'s arguments: the run from its overrides, or ``resume=<dir>`` alone once the dir
    holds its config (a resumed run keeps that config: preflight refuses other overrides)."""
    if (run_dir / CONFIG_FILE).exists():
        return [f"resume={run_dir}"]
    return [f"experiment={study}", "hydra.mode=RUN", f"hydra.run.dir={run_dir}", *overrides]


def check_settings(run_dir: Path, args: list[str]) -> None:
    """A run dir serves one command line: the first launch writes it into the dir, a later one must
    give the same (a resumed run keeps its saved config, so other settings would be ignored)."""
    path = run_dir / SETTINGS
    if path.exists() and (earlier := json.loads(path.read_text())) != args:
        raise SystemExit(f"{run_dir} holds a run of other settings ({' '.join(sorted(set(earlier) ^ set(args)))} "
                         "differ); give another --out, or remove the dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(args))


def train_once(run_dir: Path, study: str, overrides: list[str]) -> dict:
    """The run's record: trained now, continued, or read back when it finished earlier."""
    check_settings(run_dir, [f"experiment={study}", *overrides])
    record = read_record(run_dir)
    if record is None or record["status"] not in ("ok", "diverged"):
        args = [sys.executable, "-m", "src.run", *command(run_dir, study, overrides)]
        print("+", " ".join(args[2:]), flush=True)
        if subprocess.run(args, cwd=ROOT).returncode != 0:
            raise SystemExit(f"{run_dir.name} failed")
        record = read_record(run_dir)
    return record
