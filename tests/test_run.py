"""End-to-end runs: metrics.json, loggers, determinism, divergence, failures, resume, DDP."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.records import config_hash, read_record
from tests.conftest import ROOT, TINY, make_config, run_cli

SHORT = [*TINY, "steps=4", "val_every=2", "ckpt_every=2", "log_every=1"]


def _csv_rows(run_dir: Path) -> list[dict]:
    (metrics,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(metrics) as f:
        return list(csv.DictReader(f))


def test_short_run_writes_metrics_json_csv_and_wandb_offline(train):
    metric, run_dir = train(*SHORT, "logger=wandb")
    record = read_record(run_dir)
    assert set(record) >= {"status", "config", "config_hash", "metrics", "sweep_metric", "steps",
                           "wall_time_s", "plan"}
    assert record["status"] == "ok" and record["steps"] == 4
    assert record["sweep_metric"] == metric == record["metrics"]["final"]["val/loss"]
    assert 2.0 < metric < math.log(256) + 0.5  # starts near ln(256) nats per byte
    assert record["metrics"]["best"]["val/loss"] <= metric
    assert record["metrics"]["final"]["train/tokens_per_s"] > 0
    assert 2.0 < record["metrics"]["final"]["train/loss"] < 6.0
    assert record["config"]["model"]["width"] == 32 and len(record["config_hash"]) == 16
    assert [g["name"] for g in record["plan"]["groups"]] == ["input", "branch.vector", "branch.hidden", "vector"]
    assert record["plan"]["parametrization"] == "sp" and record["plan"]["r_n"] == 1.0
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    # CSV: losses and one LR column per named parameter group
    rows = _csv_rows(run_dir)
    columns = set(rows[0])
    assert {"train/loss", "val/loss", "lr-AdamW/input", "lr-AdamW/branch.hidden", "lr-AdamW/vector"} <= columns
    assert [float(r["val/loss"]) for r in rows if r.get("val/loss")][-1] == pytest.approx(metric)
    # W&B: an offline run inside the run dir, and no WANDB_MODE leaked into this process
    (offline,) = run_dir.glob("wandb/offline-run-*")
    assert list(offline.glob("*.wandb"))
    assert "WANDB_MODE" not in os.environ


def test_wandb_mode_from_the_environment_wins(train, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    _, run_dir = train(*SHORT, "logger=wandb", "steps=2")
    assert read_record(run_dir)["status"] == "ok"
    assert not list(run_dir.glob("wandb/offline-run-*"))


def test_logger_none_needs_no_logger_and_the_last_step_is_evaluated(train):
    _, run_dir = train(*SHORT, "logger=none", "steps=3")  # val_every=2: step 3 is validated after fit
    record = read_record(run_dir)
    assert record["status"] == "ok" and record["steps"] == 3
    assert set(record["metrics"]["final"]) == {"val/loss", "train/loss", "train/tokens_per_s"}
    assert not (run_dir / "csv").exists() and not (run_dir / "wandb").exists()


def test_same_seed_same_result_and_a_new_seed_differs(train):
    a, _ = train(*SHORT, "model.dropout=0.1")
    b, _ = train(*SHORT, "model.dropout=0.1")
    c, _ = train(*SHORT, "model.dropout=0.1", "seed=1")
    assert a == b
    assert a != c


def test_config_hash_covers_results_not_paths():
    base = make_config(*TINY)
    from src.assemble import plain

    h = config_hash(plain(base))
    assert h == config_hash(plain(make_config(*TINY, "logger=none", "paths.output_dir=elsewhere",
                                              "paths.cache_dir=/tmp/x", "trainer.devices=1")))
    assert h != config_hash(plain(make_config(*TINY, "model.width=64")))
    assert h != config_hash(plain(make_config(*TINY, "seed=3")))
    assert h != config_hash(plain(make_config(*TINY, "steps=21")))


def test_a_diverging_run_stops_early_with_status_diverged(train):
    metric, run_dir = train(*TINY, "steps=40", "optimizer.lr=30", "optimizer.grad_clip=null",
                            "scheduler=constant")
    record = read_record(run_dir)
    assert record["status"] == "diverged"
    assert metric == math.inf and record["sweep_metric"] == math.inf
    assert record["steps"] < 40


def test_a_failing_job_inside_a_multirun_records_failed(train, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe" * 100)
    metric, run_dir = train(*TINY, "data=text_files", f"data.paths=[{bad}]", multirun=True)
    record = read_record(run_dir)
    assert metric == math.inf and record["status"] == "failed"
    assert "is not UTF-8 text" in record["error"] and record["sweep_metric"] == math.inf


def test_an_exception_in_training_is_recorded_and_reraised(train, monkeypatch):
    from src.tasks.causal_lm import CausalLMTask

    def broken(self, batch):
        raise RuntimeError("boom")

    monkeypatch.setattr(CausalLMTask, "loss", broken)
    with pytest.raises(RuntimeError, match="boom"):
        train(*SHORT)
    metric, run_dir = train(*SHORT, multirun=True)
    record = read_record(run_dir)
    assert record["status"] == "failed" and "RuntimeError: boom" in record["error"] and metric == math.inf


def test_a_run_never_overwrites_an_earlier_run(train, capsys):
    _, run_dir = train(*SHORT, "steps=2")
    before = (run_dir / "metrics.json").read_text()
    with pytest.raises(SystemExit) as exit_:
        train(*SHORT, "steps=2", run_dir=run_dir)
    assert exit_.value.code == 2
    assert "already holds a run; resume it with resume=" in capsys.readouterr().err
    assert (run_dir / "metrics.json").read_text() == before


def test_resume_refuses_changes_to_the_results_and_skips_finished_runs(train, capsys):
    metric, run_dir = train(*SHORT, "steps=2")
    again, same_dir = train(f"resume={run_dir}", run_dir=run_dir)
    assert again == metric and same_dir == run_dir
    with pytest.raises(SystemExit):
        train(f"resume={run_dir}", "optimizer.lr=1.0", run_dir=run_dir)
    assert "only trainer and logger may change (drop optimizer.lr)" in capsys.readouterr().err


def test_resume_overrides_only_the_keys_given(train):
    from src.run import resumed_config

    _, run_dir = train(*SHORT, "steps=2", "trainer.precision=bf16-mixed", "logger=wandb",
                       "logger.wandb.project=myproj", "logger.wandb.mode=disabled")
    overrides = [f"resume={run_dir}", "trainer.devices=1", "logger.wandb.tags=[x]"]
    cfg, _ = resumed_config(make_config(*overrides), overrides)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.logger.wandb.project == "myproj"
    assert list(cfg.logger.wandb.tags) == ["x"]
    overrides = [f"resume={run_dir}", "logger=csv"]
    cfg, _ = resumed_config(make_config(*overrides), overrides)
    assert "wandb" not in cfg.logger and cfg.trainer.precision == "bf16-mixed"


def test_a_failed_run_can_be_resumed_and_its_record_is_kept(train, monkeypatch):
    from src.tasks.causal_lm import CausalLMTask

    real = CausalLMTask.loss

    def flaky(self, batch):
        if self.training and self.global_step == 3:
            raise RuntimeError("transient")
        return real(self, batch)

    monkeypatch.setattr(CausalLMTask, "loss", flaky)
    _, run_dir = train(*SHORT, "steps=6", multirun=True)
    assert read_record(run_dir)["status"] == "failed"
    monkeypatch.setattr(CausalLMTask, "loss", real)
    metric, _ = train(f"resume={run_dir}", run_dir=run_dir)
    assert read_record(run_dir)["status"] == "ok" and read_record(run_dir)["steps"] == 6
    assert "transient" in (run_dir / "metrics.failed-1.json").read_text()
    assert math.isfinite(metric)


def test_a_relaunched_sweep_job_is_skipped_when_done_and_never_overwritten(train):
    metric, run_dir = train(*SHORT, "steps=2", multirun=True)
    before = (run_dir / "metrics.json").read_text()
    again, _ = train(*SHORT, "steps=2", run_dir=run_dir, multirun=True)
    assert again == metric
    other, _ = train(*SHORT, "steps=3", run_dir=run_dir, multirun=True)  # another config in that dir
    assert other == math.inf and (run_dir / "metrics.json").read_text() == before


def test_checkpoints_hold_each_weight_once(train):
    _, run_dir = train(*SHORT, "steps=2", "compile=false")
    keys = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert keys and all(k.startswith("model.") for k in keys)


def test_ema_is_the_average_of_the_trained_weights_in_the_final_checkpoint(train):
    """ema_decay=d: the average starts as a copy of the weights after step 1, so after 2 steps it is
    d·w₁ + (1 − d)·w₂, where w₂ is what the same run trains without EMA (EMA never feeds back)."""
    load = lambda d: torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)  # noqa: E731
    same = [*SHORT, "scheduler=constant", "val_every=1", "ckpt_every=1"]  # step 1 equal in all runs
    w1 = load(train(*same, "steps=1")[1])["state_dict"]
    w2 = load(train(*same, "steps=2")[1])["state_dict"]
    average = load(train(*same, "steps=2", "ema_decay=0.25")[1])["state_dict"]
    assert not torch.equal(w1["model.tok_emb.weight"], w2["model.tok_emb.weight"])
    for key, value in average.items():
        torch.testing.assert_close(value, 0.25 * w1[key] + 0.75 * w2[key])
    from src.errors import ConfigError
    from src.config_checks import check

    with pytest.raises(ConfigError, match=r"ema_decay=1.5 must be null \(no EMA\) or a number in \(0, 1\)"):
        check(make_config(*SHORT, "ema_decay=1.5"))


def test_run_dirs_are_claimed_once_and_hydra_files_never_rewritten(tmp_path):
    import src.resolvers as config

    path = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    first = config.claim_run_dir(None, path)
    assert config.claim_run_dir(None, path) == first == path  # idempotent in one process
    config._claimed.clear()  # what a second process launched in the same second sees
    assert config.claim_run_dir(None, path) == path + "-1"
    assert config.claim_run_dir("/some/run", path) == "/some/run"
    assert config.hydra_subdir(str(tmp_path), "t") == ".hydra"
    (tmp_path / ".hydra").mkdir()
    assert config.hydra_subdir(str(tmp_path), "t") == ".hydra/t"


def test_the_task_schedule_keeps_every_groups_ratio():
    from src.assemble import assemble
    from src.mup.optim import build_optimizer
    from src.mup.plan import build_model
    from src.tasks.causal_lm import CausalLMTask
    from src.training.schedules import cosine

    args = [*TINY, "model.tie_head=false", "parametrization=completep", "parametrization.base_width=16",
            "parametrization.base_depth=1"]
    cfg = make_config(*args)
    plan = assemble(cfg, {"vocab_size": 256})
    task = CausalLMTask(build_model(plan), functools.partial(build_optimizer, plan=plan), cosine, steps=20)
    config = task.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    ratios = {g["name"]: g["lr"] / opt.param_groups[0]["lr"] for g in opt.param_groups}
    assert len(set(ratios.values())) > 1  # μP gives the groups different LRs
    for _ in range(19):
        opt.step()
        sched.step()
        assert {g["name"]: g["lr"] / opt.param_groups[0]["lr"] for g in opt.param_groups} == pytest.approx(ratios)


@pytest.mark.timeout(300)
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(train, tmp_path):
    """Kill a run (SIGKILL) after its first checkpoint; the resumed run must match bit for bit."""
    args = [*TINY, "steps=60", "val_every=10", "ckpt_every=20", "model.dropout=0.1"]
    reference, ref_dir = train(*args)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "src.run", *args, f"hydra.run.dir={killed}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (killed / "metrics.json").exists(), "the run ended before the kill"
    stopped_at = torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < stopped_at < 60
    resumed, _ = train(f"resume={killed}", run_dir=killed)
    assert resumed == reference
    ref, res = read_record(ref_dir), read_record(killed)
    clocks = [h.pop("elapsed_s") for h in res["metrics"]["history"]]  # wall time: measured, not reproduced
    assert clocks == sorted(clocks) and clocks[0] > 0
    for h in ref["metrics"]["history"]:
        h.pop("elapsed_s")
    assert res["metrics"] == {**ref["metrics"], "final": {**ref["metrics"]["final"],
                              "train/tokens_per_s": res["metrics"]["final"]["train/tokens_per_s"]}}
    assert res["config_hash"] == ref["config_hash"] and res["steps"] == 60


@pytest.mark.timeout(300)
def test_ddp_on_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    result = run_cli(*TINY, "steps=4", "val_every=2", "trainer=ddp", "trainer.accelerator=cpu",
                     "trainer.devices=2", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(out)
    assert record["status"] == "ok" and record["steps"] == 4
    assert (out / "train_ddp_process_1.log").exists()  # the second rank ran
    assert "Starting with 2 processes" in result.stdout + result.stderr


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff")
    for args, message in [
        (["model.width=100"], "error: model: width=100 is not divisible by head_dim=32"),
        ([*TINY, "data=text_files", f"data.paths=[{bad}]", f"hydra.run.dir={tmp_path / 'r'}"],
         f"error: data.paths: {bad} is not UTF-8 text (byte 0xff at offset 3)"),
    ]:
        result = run_cli(*args)
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_cli_help_lists_the_config_groups():
    result = run_cli("--help")
    assert result.returncode == 0
    for group in ("task", "model", "parametrization", "optimizer", "scheduler", "data", "trainer",
                  "logger", "sweep", "budget", "experiment"):
        assert f"\n{group}: " in result.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fsdp_on_gpus(train):
    metric, run_dir = train(*SHORT, "trainer=fsdp", "trainer.devices=1")
    assert read_record(run_dir)["status"] == "ok" and math.isfinite(metric)


def test_printed_results_point_at_metrics_json(train, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="src.run"):
        _, run_dir = train(*SHORT, "steps=2")
    assert f"results: {run_dir / 'metrics.json'}" in caplog.text
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "ok"


def test_best_metrics_follow_the_directions_the_task_declares():
    """A task states which way each validation metric improves; nothing is guessed from its name."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from src.jobs.train import summarize
    from src.tasks.preference import PreferenceTask

    history = [{"step": 1, "elapsed_s": 1.0, "val/loss": 2.0, "val/score": -1.0, "val/accuracy": 0.1},
               {"step": 2, "elapsed_s": 2.0, "val/loss": 1.0, "val/score": 0.5, "val/accuracy": 0.3},
               {"step": 3, "elapsed_s": 3.0, "val/loss": 1.5, "val/score": 0.2, "val/accuracy": 0.2}]
    task = SimpleNamespace(history=history, last_train_loss=None, rate_count=0, item_name="tokens",
                           metric_goals=PreferenceTask.metric_goals)
    cfg = OmegaConf.create({"sweep_metric": {"key": "val/loss", "last_n": 1}})
    metrics, sweep_metric = summarize(task, "ok", cfg)
    assert metrics["best"] == {"val/loss": 1.0, "val/score": 0.5, "val/accuracy": 0.3}
    assert sweep_metric == 1.5 and metrics["final"] == {"val/loss": 1.5, "val/score": 0.2, "val/accuracy": 0.2}
    assert metrics["history"][1]["elapsed_s"] == 2.0  # kept in the history, not a metric


def test_a_key_added_at_its_neutral_value_keeps_old_records_hashes():
    """parametrization.init_gain came after thousands of committed records: at 1 it hashes as absent
    (so a relaunch recognises them), any other value is a different run."""
    from src.records import config_hash

    old = {"seed": 0, "parametrization": {"name": "mup", "embed_mult": 1.0}}
    assert config_hash({**old, "parametrization": {**old["parametrization"], "init_gain": 1.0}}) == config_hash(old)
    assert config_hash({**old, "parametrization": {**old["parametrization"], "init_gain": 2.0}}) != config_hash(old)
