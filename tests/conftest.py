"""Shared test setup: offline W&B and Hugging Face, a session token cache, config helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Before anything imports datasets or wandb: nothing may touch the network, nothing leaves the tmp dir.
_TMP = Path(tempfile.mkdtemp(prefix="scaling-lab-tests-"))
for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
    os.environ[var] = str(_TMP / "wandb")
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                  WANDB_SILENT="true", SCALING_LAB_CACHE=str(_TMP / "cache"))
os.environ.pop("WANDB_MODE", None)  # tests check that logger.wandb.mode=offline is the default

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from src import resolvers  # noqa: E402, F401 — conf/'s resolvers, as the entry point registers them
from src.assemble import CONF_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# A few-second GPT-2 run: the smoke preset with CSV logging only.
TINY = ["experiment=gpt2_smoke", "logger=csv"]


def make_config(*overrides: str):
    """Compose conf/ in-process exactly as `python -m src.run <overrides>` would."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m src.run <args>` in a fresh process, from the repository root."""
    return subprocess.run([sys.executable, "-m", "src.run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def train(tmp_path):
    """Run one config in-process in a fresh run dir; returns (sweep metric, run dir)."""
    from src.run import run

    def _train(*overrides: str, run_dir: Path | None = None, multirun: bool = False):
        run_dir = run_dir or tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = make_config(*overrides)
        return run(cfg, run_dir, multirun=multirun, overrides=list(overrides)), run_dir

    return _train


def local_hf_tokenizer(directory: Path, texts: list[str], vocab_size: int = 60):
    """A small BPE ``tokenizer.json`` trained on ``texts`` and saved in ``directory`` (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"]))
    tok.save(str(directory / "tokenizer.json"))
    return tok
