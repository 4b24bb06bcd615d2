"""Studies nothing can silently corrupt (issue 13): what a config hash covers, failures against
divergence, one owner per dir, signals, damaged files, degenerate data, W&B that never blocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from src.config import plain
from src.runs import config_hash
from tests.conftest import TINY, make_config


def _hash(*overrides: str) -> str:
    return config_hash(plain(make_config(*TINY, *overrides)))


@pytest.mark.parametrize("override", ["ema_decay=0.9", "sweep_metric.key=train/loss", "sweep_metric.last_n=3",
                                      "divergence.factor=3.0", "val_every=7", "spectral_every=5",
                                      "compile=true"])
def test_every_key_that_can_change_a_result_changes_the_hash(override):
    assert _hash(override) != _hash()


@pytest.mark.parametrize("override", ["ckpt_every=7", "log_every=3", "name=elsewhere", "print_plan=true",
                                      "mutransfer.from=some/sweep", "logger=csv"])
def test_keys_that_cannot_change_a_result_leave_the_hash(override):
    assert _hash(override) == _hash()


def _source(path: Path, digest: str) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"status": "ok", "config_hash": digest}))
    return path


def test_init_from_is_hashed_by_the_starting_weights_not_the_path(tmp_path):
    a, b = _source(tmp_path / "a", "1111"), _source(tmp_path / "b", "2222")
    assert _hash(f"init_from={a}") != _hash(f"init_from={b}") != _hash()
    moved = tmp_path / "moved"
    shutil.copytree(a, moved)
    assert _hash(f"init_from={moved}") == _hash(f"init_from={a}")
