"""The coordinate-check job: one run that loops over arms, sizes and seeds (see src/mup/coord_check.py).

Config: ``coord_check.arms`` (parametrization options), ``parametrization`` (settings applied to every
arm, e.g. zero-init readout and query), ``widths`` (at ``base_depth``), ``depths`` (at ``base_width``),
``seeds``, ``steps``, ``judge_step``, ``threshold``, ``preact_tolerance`` (how far the depth slope of the
inner layer's update may sit from its depth rule's prediction; needed when ``depths`` is not empty),
``plot_steps`` and the module ``probes``. Every model takes ``steps`` optimizer steps (the ``optimizer``
group at a constant LR) on the first training batch of ``data``. Each arm's depth rule, hence its
predicted slope, is that of its parametrization.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from src.assemble import assemble, build_task, compose_option, instantiate, plain
from src.errors import ConfigError
from src.mup import coord_check as cc
from src.mup.optim import build_optimizer
from src.mup.plan import build_model
from src.records import RunRecord, config_hash

log = logging.getLogger("src.coord_check")


def _measure(cfg: DictConfig, arm: DictConfig, width: int, depth: int, seed: int, batch, inputs: dict[str, int]):
    spec = cfg.coord_check
    sized = OmegaConf.merge(cfg, {"model": {"width": width, "depth": depth}, "parametrization": arm})
    plan = assemble(sized, inputs)
    torch.manual_seed(seed)
    model = build_model(plan)
    task = build_task(sized, model, plan, None, spec.steps)
    return cc.measure(model, build_optimizer(model, plan), lambda: task.loss(batch)[0], spec.probes,
                      plan.model_kwargs.get("branch_mult", 1.0), spec.steps)


def _tolerance(spec: DictConfig) -> float | None:
    """``coord_check.preact_tolerance``: a number in (0, half the gap between two depth rules' predictions)."""
    value = spec.get("preact_tolerance")
    if not spec.depths and value is None:
        return None
    bound = cc.max_tolerance()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < bound:
        raise ConfigError(f"coord_check.preact_tolerance={value!r} must be a number in (0, {bound}): "
                          "above it one depth slope would fit both depth rules")
    return float(value)


def _log_wandb(spec: DictConfig, run_dir: Path, rows: list[dict], result: dict) -> None:
    """A W&B run with the check's native charts, its slopes and verdicts, and its plot."""
    import wandb

    from src.sweeps.dashboard import coord_check_charts, log_report_run
    from src.training.loggers import wandb_group

    slopes = wandb.Table(columns=["arm", "axis", "quantity", "slope", "verdict"], data=[
        [arm, axis, q, value, result["verdict"][f"{arm}/{axis}"]]
        for arm, axes in result["slopes"].items() for axis, qs in axes.items() for q, value in qs.items()])
    log_report_run(spec, run_dir, spec.get("group") or wandb_group(run_dir.parent), "coord-check",
                   {"coord_check/slopes": slopes, "coord_check/plot": wandb.Image(str(run_dir / "coord_check.png")),
                    **coord_check_charts(wandb, rows, result["judge_step"])},
                   config={"verdict": result["verdict"], "depth_rules": result["depth_rules"]})


def coord_check(cfg: DictConfig, run_dir: Path, started: float) -> RunRecord:
    spec = cfg.coord_check
    tolerance = _tolerance(spec)
    data = instantiate(cfg.data, "data")
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    arms = {name: OmegaConf.merge(compose_option("parametrization", name), spec.parametrization,
                                  {"base_width": spec.base_width, "base_depth": spec.base_depth})
            for name in spec.arms}
    rules = {name: instantiate(arm, "parametrization").depth_rule for name, arm in arms.items()}
    rows = cc.sweep(list(arms), spec.widths, spec.depths, (spec.base_width, spec.base_depth), spec.seeds,
                    lambda name, width, depth, seed: _measure(cfg, arms[name], width, depth, seed, batch,
                                                              data.model_inputs))
    result = cc.save(rows, spec.judge_step, spec.threshold, spec.plot_steps, run_dir, rules, tolerance)
    if (wandb := cfg.logger.get("wandb")) is not None:
        _log_wandb(wandb, run_dir, rows, result)
    log.info("%s", cc.report(result["slopes"], result["verdict"], spec.judge_step, spec.threshold,
                             result["depth_rules"], tolerance))
    worst = {f"max_abs_slope/{arm}/{axis}": max(abs(q[k]) for k in cc.JUDGED if k in q)
             for arm, axes in result["slopes"].items() for axis, q in axes.items()}
    worst |= {f"depth_rule_error/{arm}": abs(d["slope"] - d["predicted"])
              for arm, d in result["depth_rules"].items() if d["predicted"] is not None}
    resolved = plain(cfg)
    return RunRecord(status="ok", config=resolved, config_hash=config_hash(resolved),
                     metrics={"final": worst, "best": {}}, sweep_metric=math.inf,
                     steps=spec.steps, wall_time_s=time.time() - started)
