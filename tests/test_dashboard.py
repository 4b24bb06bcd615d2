"""W&B as a place to explore sweeps: native charts in the offline run files, swept values at the top of
every run's config, and the workspace spec built with wandb-workspaces (src/sweeps/dashboard.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from src.sweeps import dashboard
from src.training.loggers import log_transfer_summary
from tests.conftest import TINY
from tests.wandb_files import run_contents

SIZES = (32, 64, 128)


def _transfer() -> dict:
    """A two-arm transfer report: μP's optimum stays at −8, SP's moves one octave per doubling; SP's
    widest interval reaches −inf (an optimum at the grid's edge), which a chart cannot draw."""
    arms = []
    for arm, shift in (("mup/AdamW", 0), ("sp/AdamW", -1)):
        curves, optima, cis = {}, {}, {}
        for i, size in enumerate(SIZES):
            best = -8 + shift * i
            lrs = [-11.0, -10.0, -9.0, -8.0, -7.0, -6.0]
            losses = [3 + 0.1 * (x - best) ** 2 if x < -6 else math.inf for x in lrs]
            curves[size] = {"size": size, "log2_lrs": lrs, "losses": losses, "seeds": [[v] for v in losses]}
            optima[size], cis[size] = float(best), ([best - 0.5, best + 0.5] if i else None)  # int keys, as in memory
        if shift:
            cis[SIZES[-1]] = [-math.inf, -9.5]
        arms.append({"arm": arm, "axis": "width", "sizes": list(SIZES), "curves": curves, "optimal_log2_lr": optima,
                     "optimal_log2_lr_ci": cis})
    return {"arms": arms}


def _table(run_dir: Path, key: str) -> dict:
    """The table logged at ``key`` (a chart's data is at ``<chart key>_table``)."""
    (path,) = run_dir.glob(f"files/media/table/{key}_[0-9]*.table.json")
    return json.loads(path.read_text())


def _lines(table: dict) -> dict[str, list[tuple[float, float]]]:
    """A line_series table as line name → [(x, y)]."""
    col = {c: i for i, c in enumerate(table["columns"])}
    out: dict[str, list[tuple[float, float]]] = {}
    for row in table["data"]:
        out.setdefault(row[col["lineKey"]], []).append((row[col["step"]], row[col["lineVal"]]))
    return out


def test_the_summary_run_holds_native_line_charts_of_the_curves_and_optima(tmp_path):
    cost = {"per_size": [{"axis": "width", "size": s, "jobs": 6, "flops": 1e9 * s, "wall_time_s": 0.5 * s}
                         for s in SIZES], "per_arm": [], "total": {"jobs": 18, "flops": 2.24e11, "wall_time_s": 112.0}}
    log_transfer_summary({"project": "test", "mode": "offline"}, tmp_path, {**_transfer(), "cost": cost})
    (run_dir,) = tmp_path.glob("wandb/offline-run-*")
    curves = _lines(_table(run_dir, "transfer/sp/AdamW/width/loss_vs_log2_lr_table"))
    assert sorted(curves) == ["width 128", "width 32", "width 64"]
    assert curves["width 128"][1] == (-10.0, 3.0) and len(curves["width 32"]) == 5  # the diverged −6 left out
    by_line = _lines(_table(run_dir, "transfer/mup/AdamW/width/optimum_vs_size_table"))
    assert by_line["log2 lr*"] == [(5.0, -8.0), (6.0, -8.0), (7.0, -8.0)]
    assert by_line["95% low"] == [(6.0, -8.5), (7.0, -8.5)] and by_line["95% high"] == [(6.0, -7.5), (7.0, -7.5)]
    assert _lines(_table(run_dir, "transfer/sp/AdamW/width/optimum_vs_size_table"))["95% low"] == [(6.0, -9.5)]
    assert run_contents(run_dir)["run"]["group"] == f"{tmp_path.parent.name}/{tmp_path.name}"  # its jobs' group
    charts = run_contents(run_dir)["config"]["_wandb"]["visualize"]
    assert charts["transfer/sp/AdamW/width/loss_vs_log2_lr"]["panel_config"]["panelDefId"] == dashboard.LINE_SERIES
    assert len(charts) == 4
    sizes = _table(run_dir, "transfer/cost_per_size")
    assert sizes["data"][0] == ["width", 32, 6, 3.2e10, 16.0] and sizes["data"][-1] == ["all", None, 18, 2.24e11, 112.0]
    points = _table(run_dir, "transfer/points")
    assert len(points["data"]) == 2 * 3 * 6 and points["columns"][:5] == ["arm", "axis", "size", "log2_lr", "loss"]


def test_every_run_carries_the_swept_values_at_the_top_of_its_config(train):
    _, run_dir = train(*TINY, "logger=wandb", "steps=2", "val_every=2", "seed=3")
    (offline,) = run_dir.glob("wandb/offline-run-*")
    contents = run_contents(offline)
    config = contents["config"]
    assert {k: config[k] for k in ("arm", "seed", "optimizer_name")} == {"arm": "sp", "seed": 3, "optimizer_name": "AdamW"}
    assert config["width"] == config["model"]["width"] and config["depth"] == config["model"]["depth"]
    assert config["log2_lr"] == math.log2(config["optimizer"]["lr"])
    assert set(config["group_lr"]) >= {"branch.hidden", "input"}
    assert config["group_lr"]["branch.hidden"] == config["optimizer"]["lr"]  # SP: one LR
    assert contents["summary"]["status"] == "ok" and math.isfinite(contents["summary"]["sweep_metric"])
    group = f"{run_dir.parent.parent.name}/{run_dir.parent.name}"  # two levels: studies' folders may share a name
    assert contents["run"] == {"group": group, "name": run_dir.name}  # a single run is grouped too
    _, named = train(*TINY, "logger=wandb", "steps=2", "val_every=2", "+logger.wandb.name=mine")
    assert run_contents(next(named.glob("wandb/offline-run-*")))["run"]["name"] == "mine"  # the user's name wins


def test_a_coordinate_check_logs_its_curves_as_native_charts(train):
    _, run_dir = train("experiment=coord_check_gpt2", "logger=wandb", "coord_check.arms=[sp,mup]",
                       "coord_check.widths=[32,64]", "coord_check.depths=[]", "coord_check.base_width=32",
                       "coord_check.seeds=[0]", "coord_check.steps=2", "coord_check.judge_step=2",
                       "coord_check.plot_steps=[0,2]", "model.head_dim=8", "data.seq_len=16", "data.batch_size=2")
    (offline,) = run_dir.glob("wandb/offline-run-*")
    charts = run_contents(offline)["config"]["_wandb"]["visualize"]
    assert set(charts) == {"coord_check/sp/width", "coord_check/mup/width"}
    lines = _lines(_table(offline, "coord_check/mup/width_table"))
    assert set(lines) >= {"logits", "block_last", "preact_update"}
    assert all([x for x, _ in points] == [5.0, 6.0] for points in lines.values())


def test_the_sweep_workspace_builds_offline_from_a_sweep_dir(tmp_path, capsys):
    sweep = tmp_path / "my_sweep"
    sweep.mkdir()
    (sweep / "transfer.json").write_text(json.dumps(_transfer()))  # as report.py writes it: str keys, -Infinity
    assert dashboard.main([str(sweep), "--entity", "me", "--project", "lab"]) == 0
    spec = json.loads((sweep / "workspace.json").read_text())
    assert (spec["entity"], spec["project"], spec["display_name"]) == ("me", "lab", f"sweep {tmp_path.name}/my_sweep")
    text = json.dumps(spec)
    assert "my_sweep" in text and "transfer/sp/AdamW/width/optimum_vs_size_table" in text
    assert "config:log2_lr.value" in text and "summary:sweep_metric" in text
    sections = spec["spec"]["section"]["panel_bank_config"]["sections"]
    assert [s["name"] for s in sections] == ["Transfer", "Runs"] and len(sections[0]["panels"]) == 4
    assert dashboard.main([str(tmp_path)]) == 2 and "no transfer.json" in capsys.readouterr().out


def test_a_study_report_run_joins_its_runs_group_with_their_wandb_settings(tmp_path):
    out = tmp_path / "convergence"
    out.mkdir()
    records = [{"config": {"logger": {"csv": True, "wandb": {"project": "test", "mode": "offline", "group": None}}}}]
    tables = {"convergence/loss": (["arm", "speedup"], [["mup_transferred", 2.5], ["sp_dit_recipe", 1.0]])}
    assert dashboard.log_study_report(records, out, tables)
    (run_dir,) = out.glob("wandb/offline-run-*")
    assert run_contents(run_dir)["run"] == {"group": f"{tmp_path.name}/convergence", "name": "convergence-report"}
    assert _table(run_dir, "convergence/loss")["data"] == [["mup_transferred", 2.5], ["sp_dit_recipe", 1.0]]
    assert not dashboard.log_study_report([{"config": {"logger": {"csv": True}}}], tmp_path, tables)  # ran without W&B
