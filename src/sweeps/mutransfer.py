"""μTransfer: ``mutransfer.from=<sweep dir>`` trains a (larger) target with the proxy sweep's optimal
base HPs.

The source is the sweep's arm with the target's parametrization and optimizer: its refined optimal
log2 LR at the reference size (the base size) and, from the best run there, the other base HPs
μTransfer carries (init σ and init gain, the α multipliers, zero-init choices, weight decay, ε, clipping, the base
sizes). For a sweep without an LR axis (Optuna) the best finished run with that parametrization and
optimizer is the source of all of them. Batch size, steps, warmup and sequence length are not
covered by the theory: where they differ between proxy and target, a warning is logged and recorded.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError
from src.records import ADDED_NEUTRAL, read_record
from src.sweeps.collect import records, select
from src.sweeps.report import TRANSFER_FILE, transfer_of

log = logging.getLogger("src.mutransfer")

CARRIED = ("model.init_std", "parametrization.base_width", "parametrization.base_depth",
           "parametrization.base_head_dim", "parametrization.embed_mult", "parametrization.branch_mult",
           "parametrization.readout_mult", "parametrization.attn_mult", "parametrization.init_gain",
           "parametrization.zero_readout",
           "parametrization.zero_init", "optimizer.lr", "optimizer.weight_decay", "optimizer.eps",
           "optimizer.betas", "optimizer.grad_clip")
NOT_COVERED = ("data.batch_size", "data.seq_len", "steps", "scheduler.warmup", "scheduler._target_")


def _source(sweep_dir: Path, want: dict[str, Any], target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the source run's config, what the record says about where it came from). An arm matches when
    each of its arm keys (parametrization, optimizer, any other such as model.layernorm) has the
    ``target`` config's value; without an LR axis, runs are matched on ``want``."""
    path = sweep_dir / TRANSFER_FILE  # the proxy's own report, or its analysis (written nowhere)
    analysis = None if path.exists() else transfer_of(sweep_dir)
    if not path.exists() and analysis is None:
        raise ConfigError(f"mutransfer.from={sweep_dir}: no finished job there")
    transfer = json.loads(path.read_text()) if path.exists() else analysis[3]
    arms = [a for a in transfer["arms"] if a["ref_log2_lr"] is not None and a["best_run"]
            and all(select(target, k) == v for k, v in a["arm_values"].items())]
    if arms:
        arm = sorted(arms, key=lambda a: a["axis"] != "width")[0]
        config = read_record(sweep_dir / arm["best_run"])["config"]
        config = OmegaConf.to_container(OmegaConf.merge(config, {"optimizer": {"lr": 2.0 ** arm["ref_log2_lr"]}}))
        flag = arm["flags"].get(str(arm["ref_size"])) or arm["flags"].get(arm["ref_size"])
        return config, {"arm": arm["arm"], "axis": arm["axis"], "source_size": arm["ref_size"],
                        "source_run": arm["best_run"], "log2_lr": arm["ref_log2_lr"], "flag": flag}
    ok = [r for r in records(sweep_dir) if r["status"] == "ok"
          and all(select(r["config"], k) == v for k, v in want.items())]
    if not ok:
        raise ConfigError(f"mutransfer.from={sweep_dir}: no finished run with " +
                          ", ".join(f"{k}={v}" for k, v in want.items()))
    best = min(ok, key=lambda r: r["sweep_metric"])
    return best["config"], {"source_run": best["dir"], "log2_lr": math.log2(select(best["config"], "optimizer.lr"))}


def apply(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """``cfg`` with the proxy's base HPs, and the record of what was taken from where."""
    sweep_dir = Path(cfg.mutransfer["from"])
    if not sweep_dir.is_dir():
        raise ConfigError(f"mutransfer.from={sweep_dir}: no such directory")
    want = {"parametrization.name": cfg.parametrization.name, "optimizer._target_": cfg.optimizer._target_}
    source, info = _source(sweep_dir, want, OmegaConf.to_container(cfg, resolve=True))
    carried = {k: select(source, k) for k in CARRIED if select(source, k) is not None}
    carried |= {k: v for k, v in ADDED_NEUTRAL.items() if k in CARRIED and k not in carried}  # recorded before k existed
    for key, value in carried.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    warnings = [f"{k} differs between proxy ({select(source, k)}) and target ({OmegaConf.select(cfg, k)}); "
                "μTransfer theory does not cover it" for k in NOT_COVERED
                if select(source, k) != OmegaConf.select(cfg, k)]
    if info.get("flag") == "next to failed" and not cfg.mutransfer.get("allow_failed"):
        raise ConfigError(f"mutransfer.from={sweep_dir}: the proxy's optimum depends on a failed job (rerun it with "
                          "sweep.rerun_failed=true, or accept it with mutransfer.allow_failed=true)")
    if info.get("flag"):
        warnings.append(f"the proxy's optimum at the reference size is flagged '{info['flag']}': widen the LR grid")
    for warning in warnings:
        log.warning("μTransfer: %s", warning)
    log.info("μTransfer from %s: log2 lr %.3f", sweep_dir / info["source_run"], info["log2_lr"])
    return cfg, {"from": str(sweep_dir), **info, "carried": carried, "warnings": warnings}
