"""Studies nothing can silently corrupt (issue 13): what a config hash covers, failures against
divergence, one owner per dir, signals, damaged files, degenerate data, W&B that never blocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.assemble import plain
from src.records import config_hash
from tests.conftest import ROOT, TINY, make_config, run_cli


def _hash(*overrides: str) -> str:
    return config_hash(plain(make_config(*TINY, *overrides)))


@pytest.mark.parametrize("override", ["ema_decay=0.9", "sweep_metric.key=train/loss", "sweep_metric.last_n=3",
                                      "divergence.factor=3.0", "val_every=7", "spectral_every=5",
                                      "compile=true"])
def test_every_key_that_can_change_a_result_changes_the_hash(override):
    assert _hash(override) != _hash()


@pytest.mark.parametrize("override", ["ckpt_every=7", "log_every=3", "name=elsewhere", "print_plan=true",
                                      "mutransfer.from=some/sweep", "logger=csv"])
def test_keys_that_cannot_change_a_result_leave_the_hash(override):
    assert _hash(override) == _hash()


def _source(path: Path, digest: str) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"status": "ok", "config_hash": digest}))
    return path


def test_init_from_is_hashed_by_the_starting_weights_not_the_path(tmp_path):
    a, b = _source(tmp_path / "a", "1111"), _source(tmp_path / "b", "2222")
    assert _hash(f"init_from={a}") != _hash(f"init_from={b}") != _hash()
    moved = tmp_path / "moved"
    shutil.copytree(a, moved)
    assert _hash(f"init_from={moved}") == _hash(f"init_from={a}")


def _seeded_sweep(root: Path, failed_at: float | None) -> None:
    """CompleteP, optimum at log2 η = -8 at widths 64 and 128, three seeds; one job at width 128 fails."""
    from tests.test_sweeps import _write

    for width in (64, 128):
        for x in range(-11, -4):
            for seed in range(3):
                status = "failed" if (width, x, seed) == (128, failed_at, 0) else "ok"
                _write(root, "completep", width, 2, x, 3 + 0.1 * (x + 8) ** 2 + 0.003 * seed, status, seed)


def test_a_failed_job_is_a_missing_point_not_a_divergence(tmp_path):
    from src.sweeps import report

    _seeded_sweep(tmp_path / "clean", None)
    _seeded_sweep(tmp_path / "far", -11)
    _seeded_sweep(tmp_path / "near", -7)
    for name in ("clean", "far", "near"):
        report.report(tmp_path / name)
    arms = {name: json.loads((tmp_path / name / "transfer.json").read_text())["arms"][0]
            for name in ("clean", "far", "near")}
    assert arms["clean"]["verdict"] == "holds" and arms["clean"]["drift_octaves"] == pytest.approx(0, abs=1e-9)
    # far from the optimum the failure changes nothing but the list of failed LRs
    assert arms["far"]["verdict"] == "holds" and arms["far"]["drift_octaves"] == pytest.approx(0, abs=1e-9)
    assert arms["far"]["failed"] == {"128": [-11.0]} and not arms["far"]["flags"]
    # next to it (a diverged point there would have read as 'next to diverged' or moved the optimum)
    near = arms["near"]
    assert near["flags"] == {"128": "next to failed"} and near["verdict"] == "undetermined"
    assert near["optimal_log2_lr"]["128"] == pytest.approx(-8, abs=0.01) and near["drift_octaves"] < 0.01
    text = (tmp_path / "near" / "report.md").read_text()
    assert "## Failed jobs" in text and "RuntimeError: boom" in text and "next to failed" in text
    assert json.loads((tmp_path / "near" / "transfer.json").read_text())["failed"][0]["error"] == "RuntimeError: boom"


def test_mutransfer_refuses_an_optimum_that_depends_on_a_failed_job(tmp_path):
    from src.errors import ConfigError
    from src.sweeps import mutransfer

    def target(sweep, *more):
        return make_config(*TINY, "parametrization=completep", "optimizer=adamw", "model.width=256",
                           f"mutransfer.from={sweep}", *more)

    for name, failed_at in (("near", -8), ("far", -11)):
        _seeded_sweep(tmp_path / name, failed_at)
    # the reference size is the base, 64: a failure there at the optimum is what μTransfer reads
    for width in (64,):
        from tests.test_sweeps import _write
        shutil.rmtree(tmp_path / "near" / f"completep-w{width}-d2-lr-8-s0")
        _write(tmp_path / "near", "completep", width, 2, -8, 0.0, "failed", 0)
    with pytest.raises(ConfigError, match="depends on a failed job"):
        mutransfer.apply(target(tmp_path / "near"))
    cfg, info = mutransfer.apply(target(tmp_path / "near", "mutransfer.allow_failed=true"))
    assert info["flag"] == "next to failed"
    cfg, info = mutransfer.apply(target(tmp_path / "far"))
    assert info["log2_lr"] == pytest.approx(-8) and info["flag"] is None


def test_mutransfer_reads_a_proxy_sweep_without_writing_into_it(tmp_path):
    from src.sweeps import mutransfer

    _seeded_sweep(tmp_path, None)  # no report yet: μTransfer analyses the records in memory
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    cfg, info = mutransfer.apply(make_config(*TINY, "parametrization=completep", "optimizer=adamw",
                                             "model.width=256", f"mutransfer.from={tmp_path}"))
    assert info["log2_lr"] == pytest.approx(-8, abs=0.01) and cfg.optimizer.lr == pytest.approx(2.0**info["log2_lr"])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written, nothing touched


HOLD = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); " \
       "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); time.sleep(120)"


def _hold(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s claim, as a running job would."""
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / ".claim")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_single_run_into_a_held_dir_is_refused_before_it_trains(tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold(run_dir)
    try:
        done = run_cli(*TINY, "steps=4", "logger=csv", f"hydra.run.dir={run_dir}")
        assert done.returncode == 2
        assert f"error: {run_dir} is in use by another run (pid {holder.pid})" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not (run_dir / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    from src.records import claim

    with claim(run_dir) as holder_now:  # the claim died with its holder (kill -9)
        assert holder_now is None


@pytest.mark.slow
def test_a_sweep_skips_the_jobs_another_launcher_holds_and_reports(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "steps=4", "logger=csv", "optimizer.lr=0.001,0.002", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=lr${optimizer.lr}"]
    holder = _hold(sweep / "lr0.002")
    try:
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"another process (pid {holder.pid}) is running this job; skipped" in done.stdout + done.stderr
        assert (sweep / "lr0.001" / "metrics.json").exists() and not (sweep / "lr0.002" / "metrics.json").exists()
        assert (sweep / "report.md").exists()
    finally:
        holder.kill()
        holder.wait()
    done = run_cli(*args)  # the relaunch runs what was held and skips what finished
    assert done.returncode == 0 and "finished earlier" in done.stdout + done.stderr
    assert (sweep / "lr0.002" / "metrics.json").exists()


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)


def _step_of(checkpoint: Path) -> int:
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


LONG = [*TINY, "steps=150", "val_every=10", "ckpt_every=20", "model.dropout=0.1", "logger=csv"]


def _reference(tmp_path: Path) -> dict:
    done = run_cli(*LONG, f"hydra.run.dir={tmp_path / 'reference'}")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((tmp_path / "reference" / "metrics.json").read_text())


def _same_result(record: dict, reference: dict) -> None:
    assert record["status"] == "ok" and record["steps"] == 150
    assert record["sweep_metric"] == reference["sweep_metric"]
    assert record["metrics"]["best"] == reference["metrics"]["best"]
    assert record["config_hash"] == reference["config_hash"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_checkpoints_the_step_records_exits_143_and_the_same_command_continues(tmp_path):
    reference = _reference(tmp_path)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "src.run", *LONG, f"hydra.run.dir={run_dir}", "resume=auto"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    _wait_for(checkpoint, proc)
    time.sleep(0.3)  # into a step that is not a checkpoint step
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, proc.stderr.read()[-2000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and 0 < record["steps"] < 150
    assert _step_of(checkpoint) == record["steps"]  # the step it stopped in, not the last periodic one
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)  # the same command
    assert again.returncode == 0, again.stderr[-2000:]
    _same_result(json.loads((run_dir / "metrics.json").read_text()), reference)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "already finished" in done.stdout + done.stderr


@pytest.mark.slow
def test_resume_auto_refuses_a_dir_with_another_run_and_needs_a_fixed_dir(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(*TINY, "steps=2", "logger=csv", f"hydra.run.dir={run_dir}", "resume=auto").returncode == 0
    other = run_cli(*TINY, "steps=3", "logger=csv", f"hydra.run.dir={run_dir}", "resume=auto")
    assert other.returncode == 2 and "holds a run with another config" in other.stderr
    loose = run_cli(*TINY, "steps=3", "resume=auto")
    assert loose.returncode == 2 and "give hydra.run.dir" in loose.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slurm_preemption_requeues_and_the_requeued_command_continues_the_run(tmp_path):
    """SLURM, simulated: Lightning's auto-requeue handler gets SIGUSR1, calls ``scontrol requeue``
    (a stand-in that records the call and, as SLURM does, terminates the job); the requeued job is
    the same command line, which continues the run in its dir to the uninterrupted result."""
    reference = _reference(tmp_path)
    bin_dir, marker = tmp_path / "bin", tmp_path / "requeued"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {marker}\nkill -TERM $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1",
           "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0", "SLURM_NNODES": "1"}
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "src.run", *LONG, f"hydra.run.dir={run_dir}", "resume=auto"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == 143, proc.stderr.read()[-2000:]
    assert marker.read_text().split() == ["requeue", "4242"]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    _same_result(json.loads((run_dir / "metrics.json").read_text()), reference)


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


SWEEP = ["-m", *TINY, "steps=400", "val_every=10", "ckpt_every=20", "logger=csv", "optimizer.lr=0.001,0.002",
         "hydra.sweep.subdir=lr${optimizer.lr}"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killing_a_local_launcher_driver_stops_its_workers_with_their_work_saved(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "src.run", *SWEEP, "hydra/launcher=local", f"hydra.sweep.dir={sweep}"]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    for job in ("lr0.001", "lr0.002"):
        _wait_for(sweep / job / "checkpoints" / "last.ckpt", driver)
    workers = _children(driver.pid)
    assert workers and driver.poll() is None
    driver.kill()  # kill -9: no handler runs in the driver
    driver.wait()
    deadline = time.time() + 60
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(map(_alive, workers)), "workers outlived their driver"
    for job in ("lr0.001", "lr0.002"):  # each stopped at a step boundary, checkpointed and recorded it
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["status"] == "interrupted" and _step_of(sweep / job / "checkpoints" / "last.ckpt") == record["steps"]
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [json.loads((sweep / j / "metrics.json").read_text())["status"] for j in ("lr0.001", "lr0.002")] == ["ok"] * 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_stops_an_in_process_sweep_with_a_partial_report(tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "src.run", *SWEEP, f"hydra.sweep.dir={sweep}"]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(sweep / "lr0.001" / "checkpoints" / "last.ckpt", driver)
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=120) == 143
    assert "1 interrupted" in (sweep / "report.md").read_text()
    assert json.loads((sweep / "lr0.001" / "metrics.json").read_text())["status"] == "interrupted"
    assert not (sweep / "lr0.002").exists()  # the sweep stopped; the next job never started


def test_a_truncated_record_is_an_unfinished_job_named_in_one_warning(tmp_path, caplog):
    from src.records import read_record
    from src.sweeps import report
    from tests.test_sweeps import _write

    for x in (-9, -8, -7):
        _write(tmp_path, "mup", 64, 2, x, 3 + 0.1 * (x + 8) ** 2)
    damaged = tmp_path / "mup-w64-d2-lr-7-s0" / "metrics.json"
    damaged.write_text(damaged.read_text()[:40])
    assert read_record(damaged.parent) is None
    transfer = report.report(tmp_path)  # the report goes on without it
    assert transfer["jobs"] == 2 and f"{damaged} is unreadable" in caplog.text


def _trained(tmp_path: Path, name: str, *more: str) -> Path:
    from src.run import run

    run_dir = tmp_path / name
    run(make_config(*TINY, "steps=10", "val_every=4", "ckpt_every=4", *more), run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "ok"
    return run_dir


def test_a_damaged_last_checkpoint_falls_back_to_the_one_before(tmp_path):
    import torch

    from src.records import previous_checkpoint, resumable_checkpoint

    run_dir = _trained(tmp_path, "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(previous_checkpoint(last), weights_only=False)["global_step"] == 8  # kept beside step 10
    last.write_bytes(last.read_bytes()[:1000])
    assert resumable_checkpoint(run_dir) == previous_checkpoint(last)


def test_init_from_a_damaged_checkpoint_is_one_line(tmp_path):
    from src.checkpoints import load_model
    from src.errors import ConfigError

    source = _trained(tmp_path, "source")
    last = source / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    with pytest.raises(ConfigError, match=f"^{last} is unreadable \\(.*\\); rerun that run$"):
        load_model(source)


def test_a_full_disk_removes_the_partial_file_and_says_so(tmp_path):
    import errno as errno_module

    from src.records import write_atomically

    target = tmp_path / "last.ckpt"
    target.write_text("previous")

    def fill(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError(errno_module.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"no space left on the device writing {target}"):
        write_atomically(target, fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"] and target.read_text() == "previous"


def test_a_run_on_a_full_disk_stops_with_one_line_and_leaves_no_partial_files(tmp_path, monkeypatch, capsys):
    import errno as errno_module

    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from src.run import run

    def full(self, checkpoint, path, storage_options=None):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"partial")
        raise OSError(errno_module.ENOSPC, "No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run(make_config(*TINY, "steps=4", "ckpt_every=2", "hydra.mode=RUN"), run_dir)
    assert stopped.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: no space left on the device writing")
    assert not list(run_dir.rglob("*.tmp*")) and not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "\xff", "rejected": "c"}\n',
     "row 2: not UTF-8 text (byte 0xff at offset"),
    (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "2+2", "chosen": "4", "rejected": " 4"}\n',
     "row 2: chosen equals rejected"),
])
def test_bad_preference_rows_are_one_line_naming_file_and_row(tmp_path, content, message):
    from src.errors import ConfigError
    from src.data.pairs import read_rows

    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^{path}: " + message.replace("(", r"\(").replace("+", r"\+")):
        read_rows(str(path), ["prompt", "chosen", "rejected"])


@pytest.mark.parametrize("damage", [b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"])
def test_an_empty_or_truncated_image_is_one_line(tmp_path, damage):
    import numpy as np
    from PIL import Image

    from src.errors import ConfigError
    from src.data.image_files import ImageFolderData

    (tmp_path / "cat").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "cat" / f"{i}.png")
    (tmp_path / "cat" / "bad.png").write_bytes(damage)
    with pytest.raises(ConfigError, match=f"data.root: {tmp_path / 'cat' / 'bad.png'} is not a readable image"):
        ImageFolderData(root=str(tmp_path), image_size=4).setup()


def test_betas_of_the_wrong_length_are_one_line():
    from src.errors import ConfigError
    from src.config_checks import check

    with pytest.raises(ConfigError, match="^optimizer: "):
        check(make_config(*TINY, "optimizer.betas=[0.9]"))


@pytest.mark.slow
def test_a_refused_resume_writes_nothing_into_the_dir_it_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli(f"resume={empty}")
    assert done.returncode == 2 and "no config.yaml there" in done.stderr and not list(empty.iterdir())
    run_dir = _trained(tmp_path, "run")
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    done = run_cli(f"resume={run_dir}", "model.width=64")
    assert done.returncode == 2 and "drop model.width" in done.stderr
    holder = _hold(run_dir)
    try:
        done = run_cli(f"resume={run_dir}")
        assert done.returncode == 2 and "is in use by another run" in done.stderr
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_wandb_online_without_a_server_falls_back_to_offline_at_once(monkeypatch, caplog):
    from src.training import loggers

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    loggers._server_reachable.cache_clear()
    started = time.time()
    assert [loggers.wandb_mode("offline") for _ in range(3)] == ["offline"] * 3
    assert time.time() - started < loggers.REACH_TIMEOUT_S + 1
    assert caplog.text.count("is not reachable") == 1  # once per process
    loggers._server_reachable.cache_clear()


@pytest.mark.slow
def test_a_run_with_wandb_online_and_no_server_logs_offline(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli(*TINY[:1], "logger=wandb", "steps=2", f"hydra.run.dir={run_dir}",
                   env={"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (done.stdout + done.stderr).count("is not reachable") == 1
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "ok"
    assert list((run_dir / "wandb").glob("offline-run-*"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_growing_a_sweep_trains_only_the_new_jobs(tmp_path):
    from tests.test_sweeper import STUDY

    sweep = tmp_path / "sweep"
    base = [*STUDY, "budget=smoke", "budget.widths=[32]", "budget.depths=[2]", "sweep.arms=[completep]",
            "budget.seeds=[0]", "budget.extra_seeds=[]", "hydra/launcher=basic", "steps=10", f"hydra.sweep.dir={sweep}"]
    first = run_cli(*base, "budget.log2_lrs=[-8,-6]")
    assert first.returncode == 0 and (first.stdout + first.stderr).count("status ok |") == 2
    grown = run_cli(*base, "budget.log2_lrs=[-8,-6,-4]", "budget.seeds=[0,1]")
    log = grown.stdout + grown.stderr
    assert grown.returncode == 0 and log.count("status ok |") == 4 and log.count("finished earlier") == 2


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_preempted_submitit_job_checkpoints_is_requeued_and_continues_to_the_same_result(tmp_path):
    one = [a for a in SWEEP if not a.startswith("optimizer.lr=")] + ["optimizer.lr=0.001"]
    reference = run_cli(*one, f"hydra.sweep.dir={tmp_path / 'reference'}", timeout=500)
    assert reference.returncode == 0, reference.stderr[-2000:]
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "src.run", *one, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
               f"hydra.sweep.dir={sweep}"]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(sweep / "lr0.001" / "checkpoints" / "last.ckpt", driver, timeout=300)
    (task,) = [pid for pid in _children(driver.pid) if "submitit.core._submit" in _cmdline(pid)]
    os.kill(task, signal.SIGUSR2)  # submitit's preemption signal
    assert driver.wait(timeout=600) == 0, driver.stderr.read()[-2000:]
    log = (sweep / "lr0.001" / "run.log").read_text()
    assert "interrupted at step" in log and "continuing the interrupted job" in log
    done, ref = (json.loads((d / "lr0.001" / "metrics.json").read_text()) for d in (sweep, tmp_path / "reference"))
    assert done["status"] == "ok" and done["sweep_metric"] == ref["sweep_metric"]


def _transfer(sweep: Path) -> list[dict]:
    arms = json.loads((sweep / "transfer.json").read_text())["arms"]
    keep = ("arm", "axis", "optimal_log2_lr", "optimal_log2_lr_ci", "best_loss", "drift_octaves", "slope", "verdict")
    return [{k: a[k] for k in keep} for a in arms]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_sweep_killed_raced_and_relaunched_ends_with_the_undisturbed_transfer_json(tmp_path):
    from tests.test_sweeper import STUDY

    args = [*STUDY, "budget=smoke", "budget.widths=[32,64]", "budget.depths=[2]", "sweep.arms=[completep]",
            "budget.log2_lrs=[-8,-6]", "budget.seeds=[0,1]", "budget.extra_seeds=[]", "steps=60", "val_every=10",
            "ckpt_every=10"]
    undisturbed = tmp_path / "undisturbed"
    assert run_cli(*args, f"hydra.sweep.dir={undisturbed}", timeout=900).returncode == 0
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "src.run", *args, "hydra/launcher=local", f"hydra.sweep.dir={sweep}"]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(sweep.glob("*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.05)
    driver.kill()  # kill -9 mid-job
    driver.wait()
    basic = [c for c in command if c != "hydra/launcher=local"]
    racers = [subprocess.Popen(basic, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]  # two launchers of one sweep dir at once
    logs = [r.communicate(timeout=900)[0] for r in racers]
    assert [r.returncode for r in racers] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert all("transfer report:" in log for log in logs)  # both end with a report
    trained = sum(log.count("status ok |") for log in logs)
    assert trained <= 8  # no job trained by both
    final = subprocess.run(basic, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0 and "status ok |" not in final.stdout + final.stderr
    assert _transfer(sweep) == _transfer(undisturbed)


def test_a_relaunched_sweep_reruns_a_job_whose_record_is_truncated(train, caplog):
    from src.run import run
    from src.records import read_record

    args = [*TINY, "steps=4", "val_every=2", "ckpt_every=2"]
    metric, run_dir = train(*args)
    damaged = run_dir / "metrics.json"
    damaged.write_text(damaged.read_text()[:50])
    again = run(make_config(*args), run_dir, multirun=True)  # a relaunch of the sweep that holds this job
    assert again == metric and read_record(run_dir)["status"] == "ok"
    assert f"{damaged} is unreadable" in caplog.text
