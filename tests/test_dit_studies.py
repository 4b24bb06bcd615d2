"""The DiT-μP studies of experiments/dit_mup/: convergence (steps to the SP baseline's final loss and
the speed-up) and multi-HP μTransfer (paired regret, tuning cost), each with a seed bootstrap; end to
end on tiny settings (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys

import pytest

from src.sweeps.collect import records
from tests.conftest import ROOT



def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "dit_mup" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convergence, multi_hp = _script("convergence"), _script("multi_hp")


def _curve(rate: float, noise: float = 0.0) -> dict[int, float]:
    return {s: 1.0 / (1 + rate * s) + noise for s in range(100, 1601, 100)}


def test_speedup_is_steps_over_the_step_where_the_curve_reaches_the_baseline_final_loss():
    base = _curve(0.01)  # final 1/17
    fast = {s: 1.0 / (1 + 0.04 * s) for s in base}  # reaches 1/17 at step 400
    curves = {"sp_dit_recipe": [base, base], "mup_transferred": [fast, fast], "sp_best_grid": [base, fast]}
    result = convergence.analyse(curves, 1600, random.Random(0))
    assert result["baseline"] == pytest.approx(1 / 17)
    arms = result["arms"]
    assert arms["sp_dit_recipe"]["steps_to_baseline"] == 1600 and arms["sp_dit_recipe"]["speedup"] == 1.0
    assert arms["mup_transferred"]["steps_to_baseline"] == pytest.approx(400)
    assert arms["mup_transferred"]["speedup"] == pytest.approx(4.0)
    assert arms["mup_transferred"]["speedup_ci"] == pytest.approx((4.0, 4.0))  # every seed alike: no spread
    lo, hi = arms["sp_best_grid"]["speedup_ci"]  # one fast and one slow seed: the interval spans both
    assert (lo, hi) == pytest.approx((1.0, 4.0)) and lo < arms["sp_best_grid"]["speedup"] < hi


def test_the_crossing_is_linear_between_the_recorded_steps_around_it():
    curves = [{100: 3.0, 200: 2.0, 300: 1.0}]
    assert convergence.crossing(curves, 1.5) == pytest.approx(250.0)
    assert convergence.crossing(curves, 5.0) == 100.0 and convergence.crossing(curves, 0.5) is None


def test_without_a_clock_at_the_last_step_the_speedup_is_in_steps_only():
    base = _curve(0.01)
    times = {"sp_dit_recipe": [{s: float(s) for s in base if s < 800}], "mup_transferred": [{s: float(s) for s in base}]}
    arm = convergence.analyse({"sp_dit_recipe": [base], "mup_transferred": [base]}, 1600, random.Random(0),
                              times)["arms"]["mup_transferred"]
    assert arm["speedup"] == 1.0 and "wall_speedup" not in arm


def test_wall_time_speedup_reads_each_arms_own_clock_at_the_crossing():
    base, fast = _curve(0.01), {s: 1.0 / (1 + 0.04 * s) for s in range(100, 1601, 100)}
    slow_clock = {s: 2.0 * s for s in base}  # μP's steps cost twice as much: 4× in steps is 2× in time
    curves = {"sp_dit_recipe": [base], "mup_transferred": [fast]}
    times = {"sp_dit_recipe": [{s: float(s) for s in base}], "mup_transferred": [slow_clock]}
    arm = convergence.analyse(curves, 1600, random.Random(0), times)["arms"]["mup_transferred"]
    assert arm["speedup"] == pytest.approx(4.0) and arm["wall_s_to_baseline"] == pytest.approx(800.0)
    assert arm["wall_speedup"] == pytest.approx(2.0)
    columns, rows = convergence.wandb_tables({"loss": convergence.analyse(curves, 1600, random.Random(0), times)})[
        "convergence/loss"]
    assert dict(zip(columns, rows[1]))["wall_speedup"] == pytest.approx(2.0) and len(rows) == 2


def test_the_bootstrap_pairs_the_arms_by_seed():
    """Seed 1 is slower in every arm; resampling the arms' seeds jointly keeps μP exactly 2× the
    baseline, where independent draws would spread the ratio."""
    curves = {"sp_dit_recipe": [_curve(0.01), _curve(0.005)], "mup_transferred": [_curve(0.02), _curve(0.01)]}
    arm = convergence.analyse(curves, 1600, random.Random(0))["arms"]["mup_transferred"]
    lo, hi = arm["speedup_ci"]
    assert lo > 1.5 and hi < 4.0


def test_an_arm_that_never_reaches_the_baseline_has_no_step_and_speedup_zero():
    curves = {"sp_dit_recipe": [_curve(0.01)], "mup_transferred": [_curve(0.01, noise=0.5)]}
    arms = convergence.analyse(curves, 1600, random.Random(0))["arms"]
    assert arms["mup_transferred"]["steps_to_baseline"] is None and arms["mup_transferred"]["speedup"] == 0.0


METRIC_KEYS = ("loss", "frechet_distance")


@pytest.mark.slow  # a tiny width sweep, then 6 short runs: about 2 minutes on 2 cores
@pytest.mark.timeout(900)
def test_the_convergence_study_runs_from_a_sweep_and_resumes(tmp_path):
    tiny = ["data=digits", "steps=8", "data.val_size=20", "model.depth=2", "model.patch_size=4", "logger=csv"]
    sweep = tmp_path / "sweep"
    args = [sys.executable, "-m", "src.run", "experiment=dit_mup_sweep", "budget=smoke", "budget.widths=[32,64]",
            "budget.log2_lrs=[-10,-8]", "val_every=8", "sweep.base_depth=2", f"hydra.sweep.dir={sweep}", *tiny]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "convergence"
    argv = ["--sweep", str(sweep), "--width", "64", "--steps", "8", "--every", "4", "--fd-every", "4", "--per-class",
            "2", "--sample-steps", "4", "--seeds", "0", "1", "--out", str(out), "--records",
            str(tmp_path / "convergence.jsonl.gz"), "--extra", "data=digits", "data.val_size=20", "model.patch_size=4"]
    convergence.main(argv)
    result = json.loads((out / "convergence.json").read_text())
    for metric in ("loss", "frechet_distance"):
        assert set(result[metric]["arms"]) == {"mup_transferred", "sp_dit_recipe", "sp_best_grid"}
        assert result[metric]["arms"]["sp_dit_recipe"]["steps_to_baseline"] <= 8  # it reaches itself at the end
    assert set(json.loads((out / "sp_dit_recipe-s0" / "fd.json").read_text())) == {"4", "8"}
    record = json.loads((out / "mup_transferred-s0" / "metrics.json").read_text())
    assert record["mutransfer"]["from"] == str(sweep) and record["config"]["model"]["width"] == 64
    assert (out / "convergence.png").exists() and "| mup_transferred |" in (out / "convergence.md").read_text()
    mtime = (out / "sp_best_grid-s1" / "metrics.json").stat().st_mtime
    convergence.main(argv)  # a relaunch trains nothing
    assert (out / "sp_best_grid-s1" / "metrics.json").stat().st_mtime == mtime
    fresh = tmp_path / "fresh"  # a fresh clone: the sweep and the committed records, no run dirs
    convergence.main([*argv[:argv.index("--out") + 1], str(fresh), *argv[argv.index("--out") + 2:]])
    assert not list(fresh.rglob("*.ckpt"))  # nothing trained, nothing sampled again
    again = json.loads((fresh / "convergence.json").read_text())
    assert {m: again[m] for m in METRIC_KEYS} == {m: result[m] for m in METRIC_KEYS}


def test_train_once_continues_an_unfinished_run_with_a_command_preflight_accepts(tmp_path, monkeypatch):
    """A relaunch of a study resumes its interrupted runs: ``resume=<dir>`` alone, since a resumed run
    keeps its config and preflight refuses any other override with it."""
    from src.preflight import preflight
    from src.records import CONFIG_FILE

    train_once = _script("train_once")
    run_dir = tmp_path / "mup_transferred-s0"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text("seed: 0\n")  # a run that started and never wrote its record
    calls = []
    monkeypatch.setattr(train_once.subprocess, "run", lambda args, cwd: calls.append(args) or _Done())
    monkeypatch.setattr(train_once, "read_record", lambda d: None if not calls else {"status": "ok"})
    assert train_once.train_once(run_dir, "dit_mup_sweep", ["model.width=64", "seed=0"]) == {"status": "ok"}
    assert calls[0][3:] == [f"resume={run_dir}"]
    preflight(calls[0][3:])  # raises ConfigError on a refused command line
    fresh = train_once.command(tmp_path / "new", "dit_mup_sweep", ["seed=1"])
    assert fresh[0] == "experiment=dit_mup_sweep" and f"hydra.run.dir={tmp_path / 'new'}" in fresh
    with pytest.raises(SystemExit, match=r"other settings \(model.width=128 model.width=64 differ\)"):
        train_once.train_once(run_dir, "dit_mup_sweep", ["model.width=128", "seed=0"])  # resuming would ignore it


class _Done:
    returncode = 0


def test_multi_hp_regret_is_paired_by_seed_and_cost_is_a_percentage_of_one_target_run():
    losses = {"tuned": [1.0, 2.0, 3.0], "transferred": [1.1, 2.1, 3.1], "defaults": [1.5, 1.5, 4.0]}
    costs = {"proxy": {"flops": 30.0, "wall_time_s": 60.0}, "direct": {"flops": 600.0, "wall_time_s": 300.0}}
    runs = [{"cost": {"flops": f}, "wall_time_s": w} for f, w in ((100.0, 20.0), (120.0, 30.0), (140.0, 40.0))]
    result = multi_hp.analyse(losses, costs, runs, random.Random(0))
    transferred = result["regret"]["transferred"]
    assert transferred["mean"] == pytest.approx(0.1) and transferred["ci"] == pytest.approx((0.1, 0.1))  # paired
    defaults = result["regret"]["defaults"]  # differences +0.5, −0.5, +1.0
    assert defaults["mean"] == pytest.approx(1 / 3) and defaults["ci"][0] < 0 < defaults["ci"][1]
    assert result["cost"]["one_target_run"] == {"flops": 120.0, "wall_time_s": 30.0}
    assert result["cost"]["proxy_vs_target_run_pct"] == pytest.approx({"flops": 25.0, "wall_time_s": 200.0})
    assert result["cost"]["proxy_vs_direct_search_pct"] == pytest.approx({"flops": 5.0, "wall_time_s": 20.0})
    tables = multi_hp.wandb_tables(result)  # the W&B report run's
    assert tables["multi_hp/arms"][1][0] == ["transferred", 2.1, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1)]
    assert ["proxy_vs_target_run_pct", 25.0, 200.0] in tables["multi_hp/cost"][1]


@pytest.mark.slow  # two 2-trial searches and 6 short runs: a few minutes on 2 cores
@pytest.mark.timeout(900)
def test_the_multi_hp_study_runs_end_to_end_and_transfers_the_proxy_trial(tmp_path):
    out = tmp_path / "multi_hp"
    with pytest.raises(SystemExit, match="seed 0 is the searches' own"):
        multi_hp.main(["--seeds", "0", "1", "--out", str(out)])
    argv = ["--trials", "2", "--proxy-width", "32", "--target-width", "64", "--seeds", "1", "2", "--out", str(out),
            "--records", str(tmp_path / "multi_hp.jsonl.gz"), "--extra", "data=digits", "steps=4", "val_every=4", "data.val_size=20", "model.depth=2", "model.patch_size=4"]
    multi_hp.main(argv)
    result = json.loads((out / "multi_hp.json").read_text())
    assert set(result["per_seed"]) == {"transferred", "tuned", "defaults"}
    assert all(len(v) == 2 for v in result["per_seed"].values())
    best = min((r for r in records(out / "proxy_search") if r["status"] == "ok"), key=lambda r: r["sweep_metric"])
    target = json.loads((out / "transferred-s1" / "metrics.json").read_text())
    assert target["config"]["optimizer"]["lr"] == best["config"]["optimizer"]["lr"]
    assert target["config"]["optimizer"]["weight_decay"] == best["config"]["optimizer"]["weight_decay"]
    assert target["config"]["parametrization"]["init_gain"] == best["config"]["parametrization"]["init_gain"] != 1.0
    assert target["config"]["model"]["width"] == 64 and target["plan"]["r_n"] == 2.0
    assert result["cost"]["proxy_search"]["flops"] > 0 and result["cost"]["direct_search"]["flops"] > 0
    assert "| transferred |" in (out / "multi_hp.md").read_text()
    fresh = tmp_path / "fresh"  # a fresh clone: the committed records alone; the searches replay, nothing trains
    multi_hp.main([*argv[:argv.index("--out") + 1], str(fresh), *argv[argv.index("--out") + 2:]])
    assert not list(fresh.rglob("*.ckpt"))
    again = json.loads((fresh / "multi_hp.json").read_text())
    assert again["per_seed"] == result["per_seed"] and again["cost"] == result["cost"]


def test_snapshots_keep_the_weights_of_every_nth_step_and_change_nothing_else(train):
    from src.records import read_record, snapshots

    run = ["experiment=gpt2_smoke", "logger=csv", "steps=4", "val_every=2"]
    plain, plain_dir = train(*run)
    kept, kept_dir = train(*run, "snapshot_every=2")
    assert sorted(snapshots(kept_dir)) == [2, 4] and snapshots(plain_dir) == {}
    assert kept == plain and read_record(kept_dir)["config_hash"] == read_record(plain_dir)["config_hash"]
