"""Compute accounting: FLOPs counted on a run's own steps match the analytic count and change
nothing in training; a sweep's cost tables sum, resolve twins and take ratios as documented."""

from __future__ import annotations

import json

import pytest
from lightning.pytorch.callbacks import Callback

from src.sweeps.cost import sweep_cost

B, T, D, L, V = 4, 32, 32, 2, 256  # experiment=gpt2_smoke: batch, sequence, width, depth, vocabulary
RUN = ["experiment=gpt2_smoke", "logger=csv", "steps=4", "val_every=2"]


def gpt2_forward_flops(batch: int) -> tuple[int, int]:
    """(matrix products, attention) of one GPT-2 forward: 2·B·T·(12·L·d² + d·V) and 2 · 2·B·T²·d per layer."""
    return 2 * batch * T * (12 * L * D * D + D * V), 4 * batch * T * T * D * L


def test_gpt2_flops_match_the_analytic_count(train):
    _, run_dir = train(*RUN)
    cost = json.loads((run_dir / "metrics.json").read_text())["cost"]
    linear, attention = gpt2_forward_flops(B)
    # backward: 2× forward for products (input and weight grads); 2.5× for attention (torch's formula)
    assert cost["train_step_flops"] == 3 * linear + 3.5 * attention
    assert cost["val_round_flops"] == 2 * (linear + attention)  # val_batches=2, forward only
    assert cost["flops"] == 4 * cost["train_step_flops"] + 2 * cost["val_round_flops"]  # 4 steps, 2 rounds


def test_counting_flops_leaves_training_bit_identical(train, monkeypatch):
    counted, counted_dir = train(*RUN)

    class NoCount(Callback):
        def cost(self, trainer, rounds):
            return None

    monkeypatch.setattr("src.training.trainer.FlopCount", NoCount)
    plain, plain_dir = train(*RUN)
    records = [json.loads((d / "metrics.json").read_text()) for d in (counted_dir, plain_dir)]
    assert records[1].get("cost") is None and records[0]["cost"]["flops"] > 0
    losses = [{k: v for k, v in r["metrics"]["final"].items() if not k.endswith("_per_s")} for r in records]
    assert losses[0] == losses[1] and records[0]["metrics"]["best"] == records[1]["metrics"]["best"]
    assert counted == plain


def _rec(name, flops, wall, twin_of=None, status="ok"):
    return {"dir": name, "status": status, "cost": None if flops is None else {"flops": flops},
            "wall_time_s": 0.0 if twin_of else wall, "twin_of": twin_of}


def _pt(name, arm, size, loss=1.0, trained=None):
    return {"dir": name, "arm": arm, "axis": "width", "size": size, "loss": loss, "trained_dir": trained or name}


def test_sweep_cost_resolves_twins_and_takes_the_documented_ratios():
    recs = [_rec("a32", 10, 1.0), _rec("b32", 10, 1.0, twin_of="a32"), _rec("a32x", 12, 2.0),
            _rec("a64", 40, 4.0), _rec("a64x", 60, 8.0), _rec("a64d", 5, 0.5, status="diverged"),
            _rec("b64", 50, 5.0)]
    pts = [_pt("a32", "A", 32), _pt("b32", "B", 32, trained="a32"), _pt("a32x", "A", 32),
           _pt("a64", "A", 64), _pt("a64x", "A", 64), _pt("a64d", "A", 64, loss=float("inf")),
           _pt("b64", "B", 64)]
    cost = sweep_cost(recs, pts, {"width": 32})
    assert cost["total"] == {"jobs": 6, "flops": 177, "wall_time_s": 20.5}  # the twin trained nothing
    assert [(r["size"], r["jobs"], r["flops"]) for r in cost["per_size"]] == [(32, 2, 22), (64, 4, 155)]
    a, b = sorted(cost["per_arm"], key=lambda r: r["arm"])
    assert a["proxy_search"] == {"flops": 22, "wall_time_s": 3.0}
    assert a["target_run"] == {"flops": 50, "wall_time_s": 6.0}  # median of the finished runs, not the diverged
    assert a["direct_search"] == {"flops": 105, "wall_time_s": 12.5}
    assert a["proxy_vs_target_run_pct"] == pytest.approx({"flops": 44.0, "wall_time_s": 50.0})
    assert a["proxy_vs_direct_search_pct"] == pytest.approx({"flops": 2200 / 105, "wall_time_s": 24.0})
    assert b["proxy_search"] == {"flops": 10, "wall_time_s": 1.0}  # its twin costs what its first job cost


def test_an_axis_held_at_its_base_size_gets_no_cost_rows():
    recs = [_rec("a32", 10, 1.0), _rec("a64", 40, 4.0)]
    pts = [_pt("a32", "A", 32), _pt("a64", "A", 64), {**_pt("a32", "A", 4), "axis": "depth"}]
    cost = sweep_cost(recs, pts, {"width": 32, "depth": 4})
    assert [(r["axis"], r["size"]) for r in cost["per_size"]] == [("width", 32), ("width", 64)]
    assert [(r["arm"], r["axis"]) for r in cost["per_arm"]] == [("A", "width")]


def test_a_record_without_a_count_makes_its_flop_sums_unknown():
    recs = [_rec("a32", None, 1.0), _rec("a64", 40, 4.0)]
    cost = sweep_cost(recs, [_pt("a32", "A", 32), _pt("a64", "A", 64)], {"width": 32})
    assert cost["total"] == {"jobs": 2, "flops": None, "wall_time_s": 5.0}
    assert cost["per_arm"][0]["proxy_vs_target_run_pct"] == {"flops": None, "wall_time_s": 25.0}


def test_the_wandb_report_run_carries_the_cost_table(tmp_path):
    from src.training.loggers import log_transfer_summary

    recs = [_rec("a32", 10, 1.0), _rec("a64", 40, 4.0)]
    transfer = {"arms": [], "cost": sweep_cost(recs, [_pt("a32", "A", 32), _pt("a64", "A", 64)], {"width": 32})}
    log_transfer_summary({"project": "test", "mode": "offline"}, tmp_path, transfer)
    media = next(tmp_path.glob("wandb/offline-run-*/files/media/table/transfer"))
    tables = list(media.glob("cost_[0-9]*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    (per_size,) = media.glob("cost_per_size_[0-9]*.table.json")
    sizes = json.loads(per_size.read_text())["data"]
    assert sizes == [["width", 32, 1, 10, 1.0], ["width", 64, 1, 40, 4.0], ["all", None, 2, 50, 5.0]]
    row = dict(zip(table["columns"], table["data"][0]))
    assert (row["proxy_flops"], row["target_run_flops"], row["pct_of_target_run_flops"]) == (10, 40, 25.0)
