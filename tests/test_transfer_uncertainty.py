"""Bootstrap intervals and verdicts of the transfer analysis on synthetic sweeps whose optimum and
seed noise are known: the intervals cover the truth at about their nominal rate, and the verdict is
decided by them."""

from __future__ import annotations

import json
import math
import random

import pytest

from src.sweeps import report as report_module
from src.sweeps.transfer import ArmAxis, Curve, percentile_interval

GRID = [float(x) for x in range(-10, -3)]


def _curves(rng: random.Random, seeds: int, slope: float = 0.0, noise: float = 0.02,
            sizes=(64, 128, 256), x_base: float = -7.3) -> dict[int, Curve]:
    """Loss 0.05 (x − x*(s))² + 2.5 + N(0, noise²) per seed, x*(s) = x_base + slope·log2(s/64)."""
    out = {}
    for size in sizes:
        x_star = x_base + slope * math.log2(size / 64)
        per_point = [[0.05 * (x - x_star) ** 2 + 2.5 + rng.gauss(0, noise) for _ in range(seeds)] for x in GRID]
        out[size] = Curve(size, GRID, [sum(v) / len(v) for v in per_point], per_point)
    return out


def _coverage(seeds: int, slope: float, trials: int) -> tuple[float, float]:
    rng = random.Random(7)
    hits_opt = hits_slope = 0
    for t in range(trials):
        result = ArmAxis("mup/AdamW", "width", 64, _curves(rng, seeds, slope)).analyse(200, seed=t)
        lo, hi = result.intervals[256]
        hits_opt += lo <= -7.3 + 2 * slope <= hi
        hits_slope += result.slope_ci[0] <= slope <= result.slope_ci[1]
    return hits_opt / trials, hits_slope / trials


def test_intervals_cover_the_true_optimum_and_slope_at_about_95_percent():
    optimum, slope = _coverage(seeds=5, slope=0.5, trials=150)
    # measured with 200 trials: 0.88 (3 seeds), 0.905 (5), 0.93 (8); the percentile bootstrap of a
    # handful of seeds runs a little below its nominal 95%
    assert 0.85 <= optimum <= 0.99
    assert 0.85 <= slope <= 0.99


def test_verdicts_follow_the_intervals():
    rng = random.Random(0)
    holds = ArmAxis("mup/AdamW", "width", 64, _curves(rng, 3, slope=0.0)).analyse(300)
    assert holds.verdict == "holds" and holds.drift_ci[1] < 1.0
    drifts = ArmAxis("sp/AdamW", "width", 64, _curves(rng, 3, slope=-0.8, x_base=-6.0)).analyse(300)
    assert drifts.verdict == "drifts" and drifts.slope_ci[1] < 0 and drifts.slope == pytest.approx(-0.8, abs=0.2)
    noisy = ArmAxis("mup/AdamW", "width", 64, _curves(rng, 3, slope=0.4, noise=0.3)).analyse(300)
    assert noisy.verdict == "undetermined" and noisy.drift_ci[1] >= 1.0
    lone = ArmAxis("mup/AdamW", "width", 64, _curves(rng, 1, slope=0.0)).analyse(300)
    assert lone.verdict == "undetermined" and lone.drift_ci is None and lone.intervals[64] is None
    assert "2 seeds" in lone.why


def test_the_regret_interval_separates_a_drifting_optimum_from_a_transferring_one():
    rng = random.Random(4)
    holds = ArmAxis("mup/AdamW", "width", 64, _curves(rng, 5, slope=0.0)).analyse(300)
    drifts = ArmAxis("sp/AdamW", "width", 64, _curves(rng, 5, slope=-1.0, x_base=-6.0)).analyse(300)
    # SP: η*(64) = −6 is two octaves from η*(256) = −8, so the regret is 0.05·2² = 0.2 ± noise
    assert drifts.regret == pytest.approx(0.2, abs=0.05) and 0.1 < drifts.regret_ci[0] <= drifts.regret_ci[1] < 0.3
    assert 0 <= holds.regret_ci[0] <= holds.regret <= holds.regret_ci[1] < drifts.regret_ci[0]
    noiseless = _curves(rng, 3, noise=0.0)
    exact = ArmAxis("x", "width", 64, noiseless).analyse(50)
    assert exact.regret_ci == (exact.regret, exact.regret)  # no seed spread, no interval width


def test_an_edge_optimum_never_holds():
    rng = random.Random(3)
    curves = _curves(rng, 3, slope=0.0, x_base=-3.0)  # every optimum beyond the top of the grid
    result = ArmAxis("mup/AdamW", "width", 64, curves).analyse(200)
    assert all(o.flag == "edge" for o in result.optima.values())
    assert result.drift_ci == (0.0, 0.0) and result.verdict == "undetermined" and "edge" in result.why


def test_a_size_where_every_lr_diverged_makes_the_drift_infinite():
    rng = random.Random(1)
    curves = _curves(rng, 3)
    curves[256] = Curve(256, GRID, [math.inf] * len(GRID), [[math.inf] * 3 for _ in GRID])
    result = ArmAxis("sp/AdamW", "width", 64, curves).analyse(200)
    assert result.drift == math.inf and result.drift_ci[1] == math.inf
    assert result.intervals[256] == (-math.inf, -math.inf) and result.verdict != "holds"


def test_bootstrap_is_deterministic_and_resamples_diverged_seeds():
    rng = random.Random(2)
    curves = _curves(rng, 3)
    curves[64].seeds[3][0] = math.inf  # one diverged seed at one point
    curves[64].losses[3] = math.inf
    a = ArmAxis("x", "width", 64, curves).analyse(100, seed=5)
    b = ArmAxis("x", "width", 64, curves).analyse(100, seed=5)
    assert a.intervals == b.intervals and a.drift_ci == b.drift_ci
    draws = {curves[64].resample(random.Random(s))[3] for s in range(50)}
    assert math.inf in draws and any(math.isfinite(v) for v in draws)  # some replicates leave it out


def test_percentile_interval():
    assert percentile_interval([float(i) for i in range(101)]) == pytest.approx((2.5, 97.5))
    assert percentile_interval([-math.inf] * 10 + [1.0] * 90) == (-math.inf, 1.0)


def _job(root, arm, width, log2_lr, loss, seed):
    job = root / f"{arm}-w{width}-lr{log2_lr}-s{seed}"
    job.mkdir(parents=True)
    config = {"seed": seed, "model": {"width": width, "depth": 2},
              "optimizer": {"_target_": "torch.optim.AdamW", "lr": 2.0**log2_lr}, "parametrization": {"name": arm},
              "sweep": {"arm_keys": ["parametrization.name", "optimizer._target_"], "base_width": 64, "base_depth": 2}}
    (job / "metrics.json").write_text(json.dumps({
        "status": "ok", "config": config, "config_hash": "x", "steps": 10, "wall_time_s": 1.0,
        "sweep_metric": loss, "metrics": {}, "plan": {}}))


def test_report_shows_intervals_and_verdicts(tmp_path):
    rng = random.Random(4)
    for width in (64, 128, 256):
        for x in GRID:
            for seed in range(3):
                _job(tmp_path, "mup", width, x, 0.05 * (x + 7.3) ** 2 + 2.5 + rng.gauss(0, 0.02), seed)
    transfer = report_module.report(tmp_path)
    arm = transfer["arms"][0]
    assert arm["verdict"] == "holds" and arm["drift_ci"][1] < 1.0
    lo, hi = arm["optimal_log2_lr_ci"][64]
    assert lo < arm["optimal_log2_lr"][64] < hi
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| mup/AdamW"))
    assert row.endswith("| holds |") and row.count("[") == 6  # three sizes, drift, slope and regret
