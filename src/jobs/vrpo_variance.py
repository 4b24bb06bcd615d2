"""``job=vrpo_variance``: the VRPO variance study on the entry point (its config checks, run dir and
record). The study itself is experiments/vrpo/variance_study.py: it lives with its README and results."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.records import RunRecord


def vrpo_variance(cfg: DictConfig, run_dir: Path, started: float) -> RunRecord:
    from experiments.vrpo.variance_study import study  # the repository root is on sys.path (python -m)

    return study(cfg, run_dir, started)
