"""Sweeps: collection and transfer analysis on synthetic metrics.json trees with a known optimum,
resuming and retrying sweep jobs, a 2×2 multirun end to end with the local launcher, μTransfer."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from src.records import read_record
from src.sweeps import report as report_module
from src.sweeps.collect import points, records
from src.sweeps.transfer import Curve, analyse, parabola_vertex
from tests.conftest import ROOT, TINY, make_config

ARM_KEYS = ["parametrization.name", "optimizer._target_"]


def _write(root, arm, width, depth, log2_lr, loss, status="ok", seed=0):
    job = root / f"{arm}-w{width}-d{depth}-lr{log2_lr}-s{seed}"
    job.mkdir(parents=True)
    config = {"seed": seed, "model": {"width": width, "depth": depth},
              "optimizer": {"_target_": "torch.optim.AdamW", "lr": 2.0**log2_lr},
              "parametrization": {"name": arm, "width_rule": arm != "sp"},
              "sweep": {"arm_keys": ARM_KEYS, "base_width": 64, "base_depth": 2}}
    record = {"status": status, "config": config, "config_hash": "x", "steps": 10, "wall_time_s": 1.0,
              "sweep_metric": loss if status == "ok" else math.inf, "metrics": {}, "plan": {}}
    if status == "failed":
        record["error"] = "Traceback ...\nRuntimeError: boom"
    (job / "metrics.json").write_text(json.dumps(record))


def synthetic_sweep(root):
    """μP: optimum at log2 η = -8 at every size, wider/deeper better. SP: the optimum falls one octave
    per width doubling, and LRs 3 octaves above it diverge."""
    grid = range(-11, -4)
    for width in (64, 128, 256):
        for x in grid:
            _write(root, "mup", width, 2, x, 3 + 0.1 * (x + 8) ** 2 - 0.05 * math.log2(width))
            opt = -8 - math.log2(width / 64)
            status = "diverged" if x - opt >= 3 else "ok"
            _write(root, "sp", width, 2, x, 3 + 0.1 * (x - opt) ** 2, status)
    for depth in (4, 8):
        for x in grid:
            _write(root, "mup", 64, depth, x, 3 + 0.1 * (x + 8) ** 2 - 0.05 * math.log2(64) - 0.01 * depth)
    _write(root, "mup", 64, 16, -8, 0.0, status="failed")  # a failed job: its size has no curve


def test_parabola_and_flags():
    assert parabola_vertex([-1, 0, 1], [1.0, 0.0, 1.0]) == 0.0
    assert parabola_vertex([0, 1, 2], [3.0, 1.0, 2.0]) == pytest.approx(1.1666666)
    edge = Curve(64, [-3, -2, -1], [3.0, 2.0, 1.0], [[3.0], [2.0], [1.0]]).optimum()
    assert (edge.log2_lr, edge.flag) == (-1, "edge")
    near = Curve(64, [-3, -2, -1, 0], [3.0, 2.0, 1.0, math.inf], [[3.0], [2.0], [1.0], []]).optimum()
    assert (near.log2_lr, near.flag) == (-1, "next to diverged")
    assert Curve(64, [-1], [math.inf], [[]]).optimum().flag == "all diverged"


def test_transfer_metrics_on_a_known_sweep(tmp_path):
    synthetic_sweep(tmp_path)
    recs = records(tmp_path)
    assert len(recs) == 3 * 7 * 2 + 2 * 7 + 1
    pts, base = points(recs)
    results = {(r.arm, r.axis): r for r in analyse(pts, base)}
    mup, sp = results[("mup/AdamW", "width")], results[("sp/AdamW", "width")]
    assert mup.ref_size == 64 and sp.ref_size == 64
    assert [mup.optima[s].log2_lr for s in (64, 128, 256)] == pytest.approx([-8, -8, -8])
    assert (mup.drift, mup.slope, mup.regret, mup.violations) == (pytest.approx(0), pytest.approx(0), 0.0, 0)
    assert [sp.optima[s].log2_lr for s in (64, 128, 256)] == pytest.approx([-8, -9, -10])
    assert sp.drift == pytest.approx(2.0) and sp.slope == pytest.approx(-1.0)
    assert sp.regret == pytest.approx(0.1 * 2**2)  # at η*(64) = 2^-8 the 256-wide SP sits 2 octaves off
    assert sp.violations == 2  # the larger SP model is worse at the small model's optimum
    depth = results[("mup/AdamW", "depth")]
    # a size with only failed jobs is missing, not diverged: no curve, a finite drift, no verdict
    assert sorted(depth.curves) == [2, 4, 8] and depth.failed_sizes == [16] and depth.slope == pytest.approx(0)
    assert depth.drift == pytest.approx(0) and depth.verdict == "undetermined" and "failed" in depth.why
    assert mup.verdict == "undetermined" and mup.drift_ci is None  # one seed: no interval to decide on
    assert all(p["failed"] for p in pts if p["dir"].startswith("mup-w64-d16"))


def test_a_reference_size_with_only_failed_jobs_leaves_the_arm_undetermined(tmp_path):
    for width in (64, 128):
        for x in (-9, -8, -7):
            _write(tmp_path, "mup", width, 2, x, 3 + 0.1 * (x + 8) ** 2, status="failed" if width == 64 else "ok")
    pts, base = points(records(tmp_path))
    (arm,) = [a for a in analyse(pts, base) if a.axis == "width"]
    assert arm.ref_size == 64 and arm.failed_sizes == [64] and arm.drift is None
    assert arm.verdict == "undetermined" and "reference size 64" in arm.why
    assert arm.to_dict()["optimal_log2_lr"] == {128: pytest.approx(-8)}
    report_module.report(tmp_path)  # the report, plots and cost section take it too
    assert "reference size 64" in (tmp_path / "report.md").read_text()


def test_report_files_name_the_optimum_per_size(tmp_path):
    synthetic_sweep(tmp_path)
    transfer = report_module.report(tmp_path)
    for name in ("runs.csv", "transfer.json", "transfer_curves.png", "optimum_vs_size.png", "report.md"):
        assert (tmp_path / name).exists(), name
    text = (tmp_path / "report.md").read_text()
    assert "| sp/AdamW | -8.00 | -9.00 | -10.00 | 2.00 | -1.00 | 0.400 | 2 |" in text
    assert "RuntimeError: boom" in text and "1 failed" in text
    saved = json.loads((tmp_path / "transfer.json").read_text())
    assert saved == json.loads(json.dumps(transfer))
    arm = next(a for a in saved["arms"] if a["arm"] == "mup/AdamW" and a["axis"] == "width")
    assert arm["optimal_log2_lr"] == {"64": -8.0, "128": -8.0, "256": -8.0}
    assert arm["best_run"].startswith("mup-w64-d2-lr-8") and arm["arm_values"]["parametrization.name"] == "mup"


def test_a_duplicate_job_counts_once_and_is_reported_stale(tmp_path):
    import os
    import time

    _write(tmp_path, "mup", 64, 2, -8, 3.0)
    _write(tmp_path / "relaunch", "mup", 64, 2, -8, 2.5)  # same arm, size, LR and seed, newer
    newer = tmp_path / "relaunch" / "mup-w64-d2-lr-8-s0" / "metrics.json"
    os.utime(newer, (time.time() + 10, time.time() + 10))
    transfer = report_module.report(tmp_path)
    assert transfer["stale"] == ["mup-w64-d2-lr-8-s0"]
    width = next(a for a in transfer["arms"] if a["axis"] == "width")
    assert width["best_loss"] == {"64": 2.5} or width["best_loss"] == {64: 2.5}
    assert "Stale jobs" in (tmp_path / "report.md").read_text()


def test_report_on_a_partial_or_empty_sweep(tmp_path, capsys):
    _write(tmp_path, "mup", 64, 2, -8, 3.0)
    assert report_module.report(tmp_path)["jobs"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_module.main([str(empty)]) == 2 and "no metrics.json" in capsys.readouterr().err


def test_a_relaunched_sweep_continues_interrupted_jobs_and_retries_failures_on_request(train, monkeypatch):
    from src.tasks.causal_lm import CausalLMTask

    args = [*TINY, "steps=6", "val_every=2", "ckpt_every=2"]
    real = CausalLMTask.loss

    def flaky(self, batch):
        if self.training and self.global_step == 4:
            raise RuntimeError("transient")
        return real(self, batch)

    monkeypatch.setattr(CausalLMTask, "loss", flaky)
    _, job = train(*args, multirun=True)
    assert read_record(job)["status"] == "failed"
    monkeypatch.setattr(CausalLMTask, "loss", real)
    assert train(*args, run_dir=job, multirun=True)[0] == math.inf  # failures are left alone by default
    metric, _ = train(*args, "sweep.rerun_failed=true", run_dir=job, multirun=True)
    assert read_record(job)["status"] == "ok" and math.isfinite(metric)
    assert (job / "metrics.failed-1.json").exists()
    (job / "metrics.json").unlink()  # as if killed after its last checkpoint
    again, _ = train(*args, run_dir=job, multirun=True)
    assert again == metric and read_record(job)["steps"] == 6


def test_a_job_that_failed_before_saving_its_config_is_left_alone_or_rerun(train):
    args = [*TINY, "model.width=30"]  # not a multiple of head_dim: a ConfigError before anything is saved
    first, job = train(*args, multirun=True)
    assert first == math.inf and read_record(job)["status"] == "failed" and not (job / "config.yaml").exists()
    assert train(*args, run_dir=job, multirun=True)[0] == math.inf  # relaunch: no crash, left alone
    assert train(*args, "sweep.rerun_failed=true", run_dir=job, multirun=True)[0] == math.inf
    assert (job / "metrics.failed-1.json").exists() and read_record(job)["status"] == "failed"


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from src.assemble import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True).hydra
    assert hydra_cfg.launcher._target_.endswith("SlurmLauncher")
    assert hydra_cfg.launcher.timeout_min == 240 and hydra_cfg.launcher.array_parallelism == 64


SMALL = ["experiment=gpt2_width_depth_sweep", "budget=smoke", "budget.widths=[32,64]", "budget.depths=[2]",
         "budget.log2_lrs=[-9,-7]", "sweep.arms=[completep]", "steps=4", "val_every=2", "logger=csv",
         "model.head_dim=16", "data.seq_len=32", "data.batch_size=4", "budget.extra_seeds=[]"]


@pytest.mark.timeout(600)
def test_a_two_by_two_multirun_end_to_end_then_mutransfer(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "src.run", *SMALL, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=500, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    recs = records(sweep_dir)
    assert len(recs) == 4 and {r["status"] for r in recs} == {"ok"}
    swept = ["optimizer", "parametrization", "seed", "sweep.log2_lr", "sweep.size"]
    assert all([i.split(":")[0] for i in r["dir"].split("+")[:5]] == swept for r in recs)  # named from them
    text = (sweep_dir / "report.md").read_text()
    assert "| completep/AdamW |" in text and "log2 η* @32" in text and "log2 η* @64" in text
    transfer = json.loads((sweep_dir / "transfer.json").read_text())
    width = next(a for a in transfer["arms"] if a["axis"] == "width")
    assert set(width["optimal_log2_lr"]) == {"32", "64"}

    # μTransfer: a wider target takes the proxy's optimal LR at the base size
    from src.run import run

    target = tmp_path / "target"
    target.mkdir()
    cfg = make_config(*[a for a in SMALL if a not in ("budget=smoke",)], "hydra.mode=RUN",
                      "parametrization=completep", "sweep.size=w256-d2", "steps=6", f"mutransfer.from={sweep_dir}")
    run(cfg, target)
    record = read_record(target)
    assert record["status"] == "ok"
    info = record["mutransfer"]
    assert info["source_size"] == 32 and info["log2_lr"] == width["ref_log2_lr"]
    assert record["config"]["optimizer"]["lr"] == pytest.approx(2.0 ** width["ref_log2_lr"])
    assert any("steps differs" in w for w in info["warnings"])
    started = record["wall_time_s"]
    assert run(cfg, target, multirun=True) == record["sweep_metric"]  # a relaunch skips the finished target
    assert read_record(target)["wall_time_s"] == started


@pytest.mark.slow  # minutes on 2 cores: make test-slow
@pytest.mark.timeout(600)
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [*SMALL, "budget.widths=[32]", "budget.log2_lrs=[-9]", "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=500, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["status"] for r in records(sweep_dir)] == ["ok"]
    assert (sweep_dir / "report.md").exists()
    shutil.rmtree(sweep_dir)


@pytest.mark.slow  # minutes on 2 cores: make test-slow
@pytest.mark.timeout(600)
def test_an_optuna_sweep_feeds_mutransfer(tmp_path):
    sweep_dir = tmp_path / "optuna"
    args = ["-m", *TINY, "sweep=optuna", "hydra.sweeper.n_trials=2", "steps=4", "val_every=2",
            "parametrization=completep", "model.tie_head=false", "parametrization.base_width=32",
            "parametrization.base_depth=2", f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=500, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    recs = records(sweep_dir)
    assert len(recs) == 2 and len({r["config"]["parametrization"]["init_gain"] for r in recs}) == 2
    best = min((r for r in recs if r["status"] == "ok"), key=lambda r: r["sweep_metric"])

    from src.run import run

    target = tmp_path / "target"
    target.mkdir()
    run(make_config(*TINY, "steps=4", "val_every=2", "parametrization=completep", "model.tie_head=false",
                    "model.width=64", f"mutransfer.from={sweep_dir}"), target)
    record = read_record(target)
    assert record["mutransfer"]["source_run"] == best["dir"]
    for key in ("lr",):
        assert record["config"]["optimizer"][key] == best["config"]["optimizer"][key]
    assert record["config"]["parametrization"]["init_gain"] == best["config"]["parametrization"]["init_gain"]
    assert record["config"]["parametrization"]["readout_mult"] == best["config"]["parametrization"]["readout_mult"]


def test_long_job_dirnames_are_shortened_stably():
    from src.resolvers import job_dirname

    short = "model.width:128+sweep.log2_lr:-9"
    assert job_dirname(short) == short
    assert job_dirname(short, {"sweep.log2_lr": "-9,-8"}) == "sweep.log2_lr:-9+model.width:128"  # swept first
    assert job_dirname("paths.cache_dir:/tmp/c+task/objective:flow") == "paths.cache_dir:%2Ftmp%2Fc+task%2Fobjective:flow"
    long = "+".join(f"parametrization.mult_{i}:{0.123456789 * i}" for i in range(20))
    name = job_dirname(long)
    assert len(name) <= 200 and name.startswith("parametrization.mult_0:0.0+") and name == job_dirname(long)
    assert name != job_dirname(long.replace("0.123", "0.124"))


@pytest.mark.timeout(600)
def test_a_dit_sweep_reports_transfer_and_samples(tmp_path):
    sweep_dir = tmp_path / "dit"
    args = ["experiment=dit_mup_sweep", "budget=smoke", "data=digits", "budget.widths=[32,64]",
            "budget.log2_lrs=[-10,-8]", "steps=4", "val_every=4", "logger=csv", "data.val_size=50",
            "model.depth=2", "sweep.base_depth=2", "model.patch_size=2", "hydra/launcher=basic",
            f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=500, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    recs = records(sweep_dir)
    assert len(recs) == 8 and {r["status"] for r in recs} == {"ok"}  # 2 widths × 2 LRs × SP, μP
    samples = json.loads((sweep_dir / "samples.json").read_text())
    assert {(s["arm"], s["size"]) for s in samples} == {(a, w) for a in ("sp/AdamW", "mup/AdamW") for w in (32, 64)}
    assert all(math.isfinite(s["frechet_distance"]) and 0 <= s["class_accuracy"] <= 1 for s in samples)
    assert all((sweep_dir / s["grid"]).exists() for s in samples)
    text = (sweep_dir / "report.md").read_text()
    assert "| mup/AdamW |" in text and "## Samples of each size's best run" in text
    cost = json.loads((sweep_dir / "transfer.json").read_text())["cost"]
    assert "## Cost" in text and cost["total"]["jobs"] == 6 and cost["total"]["flops"] > 0  # 2 twins at width 32
    assert sorted(r["arm"] for r in cost["per_arm"]) == ["mup/AdamW", "sp/AdamW"]
    assert all((r["proxy_size"], r["target_size"]) == (32, 64) for r in cost["per_arm"])

    from src.eval import samples as samples_cli  # one run, with classifier-free guidance

    run_dir = sweep_dir / samples[0]["run"]
    assert samples_cli.main([str(run_dir), "--guidance", "2", "--per-class", "1", "--steps", "4"]) == 0
    row = json.loads((run_dir / "samples_cfg2.json").read_text())
    assert row["guidance"] == 2 and math.isfinite(row["frechet_distance"]) and (run_dir / "samples_cfg2.png").exists()
    assert samples_cli.main([str(sweep_dir)]) == 2  # not a run dir

    restored = sweep_dir / samples[1]["run"]  # as a job restored from the sweep's records: metrics only
    for path in restored.iterdir():
        if path.name != "metrics.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    arms = [{"arm": "sp/AdamW", "axis": "width", "best_runs": {"32": samples[1]["run"]}}]
    rows = samples_cli.evaluate_sweep(sweep_dir, {"arms": arms})
    assert rows == [{"arm": "sp/AdamW", "axis": "width", "size": 32, "run": samples[1]["run"],
                     "missing": "no weights here: a job restored from the sweep's records"}]
    assert "| sp/AdamW | width | 32 | – | – (no weights here: a job restored" in samples_cli.markdown(rows)


SLOW = pytest.mark.slow  # each model has its own fast tests; one preset runs in the fast suite


@pytest.mark.parametrize("study, model, objective", [
    pytest.param("uvit_mup_sweep", "UViT", "GaussianDiffusion", marks=SLOW),
    pytest.param("pixart_mup_sweep", "PixArt", "GaussianDiffusion", marks=SLOW),
    ("mmdit_mup_sweep", "MMDiT", "RectifiedFlow"),
    pytest.param("dit_flow_mup_sweep", "DiT", "RectifiedFlow", marks=SLOW)])
def test_each_diffusion_transformer_study_trains_its_model_with_its_objective(train, study, model, objective):
    """One short job of each width study at a width off the base (μP rules in force)."""
    metric, run_dir = train(f"experiment={study}", "hydra.mode=RUN", "parametrization=mup", "model.width=64",
                            "data=digits", "steps=2", "val_every=2", "logger=csv", "data.val_size=20")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "ok" and math.isfinite(metric) and record["cost"]["flops"] > 0
    assert record["config"]["model"]["_target_"].endswith(model)
    assert record["config"]["task"]["objective"]["_target_"].endswith(objective)
    assert record["config"]["task"]["timesteps"] == ("logit_normal" if objective == "RectifiedFlow" else "iid")
    assert record["plan"]["r_n"] == 2.0  # base width 32


def test_a_batch_axis_is_collected_from_its_own_key_with_the_smallest_batch_as_reference(tmp_path):
    for batch in (16, 32, 64):
        for x in range(-10, -5):
            job = tmp_path / f"b{batch}-lr{x}"
            job.mkdir()
            config = {"seed": 0, "model": {"width": 128, "depth": 4}, "data": {"batch_size": batch},
                      "optimizer": {"_target_": "torch.optim.AdamW", "lr": 2.0**x}, "parametrization": {"name": "mup"},
                      "sweep": {"arm_keys": ARM_KEYS, "base_width": 32, "base_depth": 4,
                                "axes": ["data.batch_size"]}}
            loss = 1 + 0.1 * (x + 8 - 0.5 * math.log2(batch / 16)) ** 2 - 0.01 * batch  # η* ∝ √batch
            (job / "metrics.json").write_text(json.dumps({"status": "ok", "config": config, "sweep_metric": loss}))
    pts, base = points(records(tmp_path))
    assert {p["axis"] for p in pts} == {"batch_size"} and len(pts) == 15  # width 128 is no width axis here
    (result,) = analyse(pts, base)
    assert result.ref_size == 16 and sorted(result.curves) == [16, 32, 64]
    assert [result.optima[b].log2_lr for b in (16, 32, 64)] == pytest.approx([-8, -7.5, -7])
    assert result.drift == pytest.approx(1.0) and result.slope == pytest.approx(0.5)


@pytest.mark.slow  # minutes on 2 cores: make test-slow
@pytest.mark.timeout(600)
def test_an_lr_steps_sweep_runs_one_width_over_step_counts(tmp_path):
    sweep_dir = tmp_path / "steps"
    args = [*[a for a in SMALL if not a.startswith("steps=")], "sweep=lr_steps", "budget.axis_width=64", "budget.step_counts=[2,4]", "budget.log2_lrs=[-9]",
            "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=500, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    recs = records(sweep_dir)
    assert sorted((r["config"]["model"]["width"], r["steps"]) for r in recs) == [(64, 2), (64, 4)]
    (arm,) = json.loads((sweep_dir / "transfer.json").read_text())["arms"]
    assert arm["axis"] == "steps" and arm["sizes"] == [2, 4] and arm["ref_size"] == 2


def test_mutransfer_from_a_sweep_recorded_before_init_gain_carries_its_neutral_value(tmp_path):
    """The synthetic sweep's configs have no init_gain: its jobs ran at 1, so a target set to 2 is reset."""
    from omegaconf import OmegaConf

    from src.sweeps import mutransfer

    synthetic_sweep(tmp_path)
    cfg = OmegaConf.create({"mutransfer": {"from": str(tmp_path)}, "seed": 0, "model": {"width": 256, "depth": 2},
                            "parametrization": {"name": "mup", "width_rule": True, "init_gain": 2.0},
                            "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1.0}})
    cfg, info = mutransfer.apply(cfg)
    assert cfg.parametrization.init_gain == 1.0 and info["carried"]["parametrization.init_gain"] == 1.0
    assert cfg.optimizer.lr == pytest.approx(2.0**-8)  # the proxy's optimum, as before
