"""Models of finished runs: rebuilt from their ``config.yaml``, weights from ``checkpoints/last.ckpt``
(the EMA weights when the run trained with ``ema_decay``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError
from src.assemble import assemble, instantiate
from src.mup.plan import build_model
from src.records import CONFIG_FILE, checkpoint_error, last_checkpoint


def parse_run_dir_args(prog: str, doc: str, argv: list[str], **options: tuple[type, Any, str]) -> argparse.Namespace:
    """The command line of a tool that reads one finished run: ``<prog> <run_dir> [--option value]``,
    each option given as name=(type, default, help); underscores are written as dashes."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    for name, (kind, default, text) in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=text)
    return parser.parse_args(argv)


def load_weights(model: torch.nn.Module, run_dir: str | Path, checkpoint: Path | None = None) -> torch.nn.Module:
    """``model`` with the weights of ``run_dir``'s last checkpoint (or of ``checkpoint``, e.g. a
    snapshot); a ConfigError when they do not fit."""
    path = checkpoint or last_checkpoint(Path(run_dir))
    if not path.exists():
        raise ConfigError(f"{run_dir}: no {path.relative_to(run_dir)} (not a finished run dir)")
    if (error := checkpoint_error(path)) is not None:
        raise ConfigError(f"{path} is unreadable ({error}); rerun that run")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"{run_dir}: its weights do not fit this model ({str(err).splitlines()[1].strip()})") from None
    return model


def load_model(run_dir: str | Path, checkpoint: Path | None = None) -> tuple[torch.nn.Module, DictConfig, Any]:
    """(the run's model in eval mode with its last weights (or ``checkpoint``'s), its config, its
    data module, set up)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"{run_dir}: no {CONFIG_FILE} (not a run dir)")
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    data = instantiate(cfg.data, "data")
    data.setup()
    return load_weights(build_model(assemble(cfg, data.model_inputs)), run_dir, checkpoint).eval(), cfg, data
