"""Coordinate check and spectral monitor."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from src.mup import coord_check as cc
from src.mup.spectral import power_iteration, rms_norm_factor
from tests.conftest import TINY


def test_slope_fit():
    assert cc.slope([1, 2, 4, 8], [3.0, 6.0, 12.0, 24.0]) == pytest.approx(1.0)
    assert cc.slope([16, 32, 64], [0.5, 0.5, 0.5]) == pytest.approx(0.0)
    rows = [{"arm": "a", "axis": "width", "size": s, "seed": seed, "step": 1, "quantity": "logits",
             "value": s ** 0.5 * (1 + 0.01 * seed)} for s in (8, 16, 32) for seed in (0, 1)]
    slopes = cc.fit_slopes(rows, step=1)
    assert slopes["a"]["width"]["logits"] == pytest.approx(0.5, abs=1e-6)
    assert cc.verdicts(slopes, 0.1) == {"a/width": "fail"}


FAST = ["experiment=coord_check_gpt2", "coord_check.arms=[sp,mup]", "coord_check.widths=[32,64,128]",
        "coord_check.depths=[2,4]", "coord_check.base_width=32", "coord_check.base_depth=2", "model.depth=2",
        "coord_check.seeds=[0,1]", "coord_check.steps=3", "coord_check.judge_step=3",
        "coord_check.plot_steps=[0,3]", "model.head_dim=8", "data.seq_len=32", "data.batch_size=4"]


def _coord_check(train):
    _, run_dir = train(*FAST)
    result = json.loads((run_dir / "coord_check.json").read_text())
    assert (run_dir / "coord_check.png").stat().st_size > 10_000
    with open(run_dir / "coord_check.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 5 * 2 * 4 * 17  # arms × sizes × seeds × steps × quantities
    return result


def test_fast_coordinate_check_separates_mup_from_sp_on_width(train):
    result = _coord_check(train)
    assert result["verdict"]["mup/width"] == "pass"
    assert result["verdict"]["sp/width"] == "fail"
    assert result["slopes"]["sp"]["width"]["block_last"] >= 0.3


def test_fast_coordinate_check_fails_without_the_readout_multiplier(train, monkeypatch):
    import src.mup.plan as plan

    real = plan.model_multipliers

    def without_readout(param, r_n, r_L, head_dim):
        return {**real(param, r_n, r_L, head_dim), "readout_mult": param.readout_mult}

    monkeypatch.setattr(plan, "model_multipliers", without_readout)
    result = _coord_check(train)
    assert result["verdict"]["mup/width"] == "fail"
    assert result["slopes"]["mup"]["width"]["logits_delta"] > 0.3


def test_power_iteration_finds_the_spectral_norm():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(48, 32, generator=g))
    w, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    a = u @ torch.diag(torch.linspace(3.0, 0.1, 32)) @ w.T  # σ_max = 3, gap 3 → 2.9
    v = torch.randn(32, generator=g)
    sigma, v = power_iteration(a, v, 10)  # the cold start
    for _ in range(30):  # then warm starts of 2 iterations, as the monitor does
        sigma, v = power_iteration(a, v, 2)
    assert sigma == pytest.approx(3.0, rel=1e-4)
    assert rms_norm_factor(torch.nn.Linear(32, 48), "weight", a.shape) == pytest.approx(math.sqrt(32 / 48))
    emb = torch.nn.Embedding(100, 16)
    assert rms_norm_factor(emb, "weight", emb.weight.shape) == pytest.approx(math.sqrt(100 / 16))


def test_spectral_monitor_logs_every_role(train):
    _, run_dir = train(*TINY, "steps=4", "val_every=2", "spectral_every=2", "model.tie_head=false")
    (path,) = run_dir.glob("csv/version_0/metrics.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for group in ("input", "branch.hidden", "output"):
        values = [float(r[f"spectral/{group}/W_R"]) for r in rows if r.get(f"spectral/{group}/W_R")]
        updates = [float(r[f"spectral/{group}/dW_R"]) for r in rows if r.get(f"spectral/{group}/dW_R")]
        assert len(values) == 2 and all(v > 0 for v in values + updates)
