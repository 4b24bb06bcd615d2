"""The transfer sweeper: twins (jobs with the same training) run once and train identically; extra
seeds run only near each size's seed-mean optimum, pass after pass; a relaunch trains nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from src.records import RunRecord, read_record, write_record
from src.sweeps import archive
from src.sweeps.collect import points, records
from src.sweeps.sweeper import seed_pass, training_signature
from src.sweeps.transfer import build_curves
from tests.conftest import ROOT, make_config

STUDY = ["experiment=gpt2_width_depth_sweep", "logger=csv", "model.head_dim=16", "data.seq_len=32",
         "data.batch_size=4", "steps=4", "val_every=2", "sweep.base_width=32", "sweep.base_depth=2"]


def _signature(arm: str, size: str, log2_lr: int = -8) -> str:
    cfg = make_config(*STUDY, "hydra.mode=RUN", f"parametrization={arm}", f"sweep.size={size}", f"sweep.log2_lr={log2_lr}")
    return training_signature(cfg)


def test_twins_are_the_same_training_and_only_those():
    assert _signature("sp", "w32-d2") == _signature("completep", "w32-d2")  # at the base size every arm is SP
    wide = {arm: _signature(arm, "w64-d2") for arm in ("sp", "mup", "depth_mup", "completep")}
    assert wide["mup"] == wide["depth_mup"] == wide["completep"] != wide["sp"]  # r_L = 1: no depth rule acts
    deep = {arm: _signature(arm, "w32-d4") for arm in ("mup", "depth_mup", "completep")}
    assert len(set(deep.values())) == 3
    assert _signature("completep", "w64-d2", -7) != wide["completep"]


def test_twin_configs_train_bit_identically(train):
    common = [*STUDY, "hydra.mode=RUN", "sweep.size=w64-d2", "sweep.log2_lr=-7"]
    a, _ = train(*common, "parametrization=depth_mup")
    b, _ = train(*common, "parametrization=completep")
    assert a == b


def _loss(log2_lr: int, seed: int) -> float:
    """True optimum at log2 η = −10; seed 0 alone is lucky at −8 and puts its argmin there."""
    return 0.01 * (log2_lr + 10) ** 2 - (0.06 if (seed, log2_lr) == (0, -8) else 0.0)


def _dir(job) -> str:
    return ",".join(job)


def _run_fake(sweep_dir, jobs) -> None:
    """'Train' jobs of the form [lr=<log2 η>, seed=<s>]: write the record a job would write."""
    for job in jobs:
        x, seed = (int(o.split("=")[1]) for o in job)
        cfg = {"sweep": {"arm_keys": ["parametrization.name"], "axes": ["model.width"], "base_width": 32},
               "model": {"width": 32}, "optimizer": {"lr": 2.0 ** x}, "seed": seed,
               "parametrization": {"name": "mup", "width_rule": "mup"}}
        (sweep_dir / _dir(job)).mkdir()
        write_record(sweep_dir / _dir(job), RunRecord("ok", cfg, "hash", sweep_metric=_loss(x, seed)))


def test_seed_passes_follow_the_seed_mean_optimum_until_it_and_its_neighbours_have_every_seed(tmp_path):
    grid = [[f"lr={x}", "seed=0"] for x in range(-12, -4)]
    _run_fake(tmp_path, grid)
    done, passes = list(grid), []
    while more := seed_pass(tmp_path, grid, done, [1, 2], 1, _dir):
        passes.append(sorted((int(j[0][3:]), int(j[1][5:])) for j in more))
        _run_fake(tmp_path, more)
        done += more
    # seed 0's argmin −8 first; the seed mean then prefers −10, whose lower neighbour lacks seeds
    assert passes == [[(x, s) for x in (-9, -8, -7) for s in (1, 2)], [(x, s) for x in (-11, -10) for s in (1, 2)]]
    curve = build_curves(points(records(tmp_path))[0])[("mup", "width")][32]
    assert curve.optimum().grid_log2_lr == -10 and curve.seeded_optimum()
    assert [len(v) for v in curve.seeds] == [1, 3, 3, 3, 3, 3, 1, 1]
    # a relaunch decides each pass from the records of the passes before it only, not from later ones
    assert sorted((int(j[0][3:]), int(j[1][5:])) for j in seed_pass(tmp_path, grid, grid, [1, 2], 1, _dir)) == passes[0]


@pytest.mark.slow  # minutes on 2 cores: make test-slow
@pytest.mark.timeout(600)
def test_a_sweep_runs_twins_once_and_extra_seeds_near_the_optima(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [*STUDY, "budget=smoke", "budget.widths=[32,64]", "budget.depths=[2]", "budget.log2_lrs=[-11,-8,-5]",
            "sweep.arms=[depth_mup,completep]", "budget.seeds=[0]", "budget.extra_seeds=[1]",
            "hydra/launcher=basic", f"sweep.records={tmp_path / 'records.jsonl.gz'}", "hydra.sweeper.max_batch_size=4",
            f"hydra.sweep.dir={sweep_dir}"]
    command = [sys.executable, "-m", "src.run", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=500, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    recs = records(sweep_dir)
    twins = [r for r in recs if r.get("twin_of")]
    trained = [r for r in recs if not r.get("twin_of")]
    assert {r["config"]["parametrization"]["name"] for r in twins} == {"completep"}  # depth_mup ran first
    assert 2 * len(twins) == len(recs)  # at depth 2 the two arms are one training
    for twin in twins:
        first = read_record(sweep_dir / twin["twin_of"])
        assert first["config"]["parametrization"]["name"] == "depth_mup"
        assert twin["sweep_metric"] == first["sweep_metric"] and twin["config"]["seed"] == first["config"]["seed"]
    # seed 1 at seed 0's grid argmin and its neighbours, then wherever the seed mean moves the argmin
    pts, _ = points(recs)
    seeded = {(p["arm"], p["axis"], p["size"], p["log2_lr"]) for p in pts if p["seed"] == 1}
    for (arm, axis), curves in build_curves([p for p in pts if p["seed"] == 0]).items():
        for size, curve in curves.items():
            best = curve.optimum().grid_log2_lr
            assert {(arm, axis, size, x) for x in curve.log2_lrs if abs(x - best) <= 3} <= seeded  # 3 octaves a step
    assert all(c.seeded_optimum() for curves in build_curves(pts).values() for c in curves.values())
    assert 0 < sum(p["seed"] == 1 for p in pts) < sum(p["seed"] == 0 for p in pts)
    assert (sweep_dir / "report.md").exists() and "twin_of" in (sweep_dir / "runs.csv").read_text()
    # a fresh clone: a new sweep dir and the committed records file; the same command trains nothing
    archived = archive.read(tmp_path / "records.jsonl.gz")
    assert len(archived) == len(recs) and not any("plan" in r for r in archived)
    fresh = tmp_path / "fresh"
    again = subprocess.run([*command[:-1], f"hydra.sweep.dir={fresh}"], cwd=ROOT, capture_output=True, text=True,
                           timeout=500, env=os.environ)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "status ok |" not in log and "skipped" not in log  # no job was launched, not even to skip itself
    assert "jobs finished earlier (same config): not launched" in log
    assert (tmp_path / "records.compose.json.gz").exists() and "composed 0 job configs" in log  # no config composed
    assert {r["dir"]: r["sweep_metric"] for r in records(fresh)} == {r["dir"]: r["sweep_metric"] for r in recs}
    old, new = (json.loads((d / "transfer.json").read_text())["arms"] for d in (sweep_dir, fresh))
    assert [a["optimal_log2_lr"] for a in old] == [a["optimal_log2_lr"] for a in new]


def test_archive_round_trip_keeps_finished_jobs_only(tmp_path):
    for name, status in (("a", "ok"), ("b", "diverged"), ("c", "failed")):
        (tmp_path / "sweep" / name).mkdir(parents=True)
        (tmp_path / "sweep" / name / "metrics.json").write_text(json.dumps(
            {"status": status, "config": {"seed": 0}, "config_hash": name, "sweep_metric": 1.0, "plan": {"big": 1}}))
    path = tmp_path / "records.jsonl.gz"
    assert archive.export(tmp_path / "sweep", path) == 2
    first = path.read_bytes()
    assert archive.export(tmp_path / "sweep", path) == 2 and path.read_bytes() == first  # stable bytes
    assert first[3] & 0x08 == 0  # no file name in the gzip header (its tmp name holds the pid)
    assert archive.restore(path, tmp_path / "new") == 2 and archive.restore(path, tmp_path / "new") == 0
    assert read_record(tmp_path / "new" / "b") == {"status": "diverged", "config": {"seed": 0}, "config_hash": "b",
                                                    "sweep_metric": 1.0}


def test_archive_carries_named_sidecars_and_only_those(tmp_path):
    """A study's small per-run files (Fréchet distances of snapshots) travel with the record when named."""
    job = tmp_path / "sweep" / "mup-s0"
    job.mkdir(parents=True)
    (job / "metrics.json").write_text(json.dumps({"status": "ok", "config": {}, "config_hash": "h", "sweep_metric": 0.5}))
    (job / "fd.json").write_text(json.dumps({"200": 41.5, "400": 30.25}))
    (job / "other.json").write_text("{}")
    path = tmp_path / "records.jsonl.gz"
    assert archive.export(tmp_path / "sweep", path, sidecars=("fd.json", "absent.json")) == 1
    assert archive.restore(path, tmp_path / "new") == 1
    restored = tmp_path / "new" / "mup-s0"
    assert json.loads((restored / "fd.json").read_text()) == {"200": 41.5, "400": 30.25}
    assert not (restored / "other.json").exists() and not (restored / "absent.json").exists()
    assert read_record(restored) == {"status": "ok", "config": {}, "config_hash": "h", "sweep_metric": 0.5}


def test_job_facts_are_reused_only_under_the_same_code_and_overrides(tmp_path):
    """The sweeper's cache of composed-config facts: a hit composes nothing; new code, new multirun
    overrides, a config that depends on another run's files, or a damaged file compose again."""
    from omegaconf import OmegaConf

    from src.sweeps.sweeper import JobFacts

    composed = []

    def compose(job):
        composed.append(tuple(job))
        extra = {"init_from": str(tmp_path / "sft")} if "from=1" in job else {}
        return f"dir-{job[0]}", OmegaConf.create({"seed": int(job[0].split("=")[1]), **extra})

    path = tmp_path / "records" / "study.compose.json.gz"  # a records dir the first save creates
    first = JobFacts(path, "code-a", "salt", compose)
    facts = first(["seed=1"], twins=False)
    first(["seed=2", "from=1"], twins=False)
    first.save()
    again = JobFacts(path, "code-a", "salt", compose)
    assert again(["seed=1"], twins=False) == facts and facts["dir"] == "dir-seed=1"
    again(["seed=2", "from=1"], twins=False)  # starts from another run: never kept
    assert composed == [("seed=1",), ("seed=2", "from=1"), ("seed=2", "from=1")]
    JobFacts(path, "code-b", "salt", compose)(["seed=1"], twins=False)  # the code changed
    JobFacts(path, "code-a", "other", compose)(["seed=1"], twins=False)  # the multirun's overrides changed
    assert composed[3:] == [("seed=1",), ("seed=1",)]
    path.write_bytes(b"not gzip")
    assert JobFacts(path, "code-a", "salt", compose)(["seed=1"], twins=False) == facts  # damaged: composed again
    assert len(composed) == 6
