"""The sorting study's bookkeeping (experiments/vrpo/sorting_study.py) on fabricated run dirs: selection
on the even held-out rows, report on the odd ones, paired t intervals and their verdicts."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("sorting_study", ROOT / "experiments" / "vrpo" / "sorting_study.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def _run(path, greedy_rows, sampled_rows, final=None, status="ok"):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "metrics.json").write_text(json.dumps({"status": status, "metrics": {"final": final or {}}}))
    (path / "answers_T0.json").write_text(json.dumps({"draws": 1, "row_hits": greedy_rows}))
    (path / "answers_T1.json").write_text(json.dumps({"draws": 2, "row_hits": sampled_rows}))


def test_selection_uses_even_rows_and_the_table_reports_odd_rows_with_paired_intervals(tmp_path):
    # search seed 0: lr 1e-4 wins on the even rows (greedy and T = 1 pooled) although lr 3e-5 is better
    # on the odd ones
    _run(tmp_path / "vrpo-lr3e-05-beta0.2" / "seed0", [0, 1, 0, 1], [1, 2, 0, 2])
    _run(tmp_path / "vrpo-lr0.0001-beta0.2" / "seed0", [1, 0, 1, 0], [2, 0, 0, 0])
    hps = study.lr_stage("vrpo", (3e-5, 1e-4))
    assert study.selection_score(tmp_path / "vrpo-lr3e-05-beta0.2" / "seed0") == pytest.approx(1 / 6)
    assert study.selected(tmp_path, hps, 0, "vrpo") == {"lr": 1e-4, "beta": 0.2}
    assert study.half(tmp_path / "vrpo-lr3e-05-beta0.2" / "seed0", 1, 1) == 1.0  # odd rows, 2 draws each
    # report seeds 1-3 of vrpo and naive DPO: VRPO's odd-row greedy accuracy is 0.5 above on two seeds
    for seed in (1, 2, 3):
        _run(tmp_path / "vrpo-lr0.0001-beta0.2" / f"seed{seed}", [1, 1, 1, 0] if seed > 1 else [0, 0, 1, 0],
             [2, 1, 2, 1], {"val/loss": 0.6})
        _run(tmp_path / "naive_dpo-lr0.0001-beta0.2" / f"seed{seed}", [1, 0, 1, 0], [1, 0, 1, 0],
             {"val/preference_accuracy": 0.6, "val/loss": 0.7}, status="diverged" if seed == 3 else "ok")
    _run(tmp_path / "sft", [0, 0, 0, 0], [0, 0, 0, 0], {"val/loss": 0.04})  # one SFT run: every seed's start
    (tmp_path / "selected.json").write_text(json.dumps({"search_seed": 0, "seeds": [1, 2, 3], "methods": {
        "vrpo": {"lr": 1e-4, "beta": 0.2}, "naive_dpo": {"lr": 1e-4, "beta": 0.2}}}))
    text = study.table(tmp_path)
    assert "| naive_dpo | {'lr': 0.0001, 'beta': 0.2} | 3 | 1 | 0.000 ± 0.000 | 0.000 ± 0.000 | 0.600 ± 0.000 |" in text
    assert "| sft | – | 1 (shared) | 0 | 0.000 | 0.000 | – | – |" in text  # its val/loss is no DPO loss
    row = next(line for line in text.splitlines() if line.startswith("| vrpo − sft (n=3) | greedy"))
    assert "+0.333 [" in row and row.endswith("| undetermined |")  # seed 1's vrpo is 0 on the odd rows
    mean, low, high = study.interval([0.5, 0.5, 0.5])
    assert (mean, low, high) == (0.5, 0.5, 0.5) and study.verdict(low, high) == "above"
    mean, low, high = study.interval([0.1, 0.2, 0.3])
    assert low == pytest.approx(0.2 - 4.303 * 0.1 / math.sqrt(3)) and study.verdict(low, high) == "undetermined"
    assert study.verdict(-0.1, 0.2) == "undetermined" and study.verdict(-0.3, -0.1) == "below"


def test_the_search_tunes_the_lr_at_the_recipes_beta_then_beta_at_that_lr(tmp_path):
    """The same two-stage search for every method; the SFT-only method has no β to tune."""
    scores = {(3e-5, 0.2): 1, (1e-4, 0.2): 3, (3e-4, 0.2): 2, (1e-4, 0.1): 1, (1e-4, 0.5): 4}
    trained = []

    def run(hp):  # a run whose even-row greedy hits are its score
        trained.append(hp)
        hits = scores[(hp["lr"], hp.get("beta", 0.2))]
        _run(tmp_path / study.run_name("vrpo", hp) / "seed0", [hits, 0], [0, 0])

    assert study.search(tmp_path, "vrpo", run) == {"lr": 1e-4, "beta": 0.5}
    assert trained == [{"lr": lr, "beta": 0.2} for lr in study.LRS] + [{"lr": 1e-4, "beta": b} for b in (0.1, 0.5)]
    assert study.beta_stage("sft_chosen", 1e-4) == [] and study.lr_stage("sft_chosen") == [{"lr": lr} for lr in study.LRS]
    with pytest.raises(SystemExit, match="seed 0 is the search's"):
        study.run_all(tmp_path / "root", [], seeds=(0, 1))


def _fake_launch(calls, loss):
    """``launch`` without training: a dir without a finished run gets one (final val/loss ``loss``), its
    weights and, where missing, its answers; ``calls`` gets (run dir, args, extra)."""
    def launch(run_dir, args, extra):
        if not study.finished(run_dir):
            calls.append((run_dir, args, extra))
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            torch.save({"step": 1}, run_dir / "checkpoints" / "last.ckpt")
            record = {"status": "ok", "config_hash": f"hash-{run_dir.name}", "metrics": {"final": {"val/loss": loss}}}
            (run_dir / "metrics.json").write_text(json.dumps(record))
            (run_dir / "config.yaml").write_text("seed: 0\n")
            for t in (0, 1):
                if not (run_dir / f"answers_T{t}.json").exists():
                    (run_dir / f"answers_T{t}.json").write_text(json.dumps({"draws": 1, "row_hits": [1, 0]}))
        return run_dir
    return launch


def test_a_fresh_clone_continues_from_the_archived_records_and_retrains_only_the_sft_weights_it_needs(
        tmp_path, monkeypatch):
    calls, records, first, fresh = [], tmp_path / "records", tmp_path / "machine1", tmp_path / "machine2"
    monkeypatch.setattr(study, "launch", _fake_launch(calls, 0.25))
    hp = {"lr": 1e-4, "beta": 0.1}
    study.sft_run(first, ["model.width=8"], records)
    study.preference(first, "vrpo", hp, 1, ["data.prompts=4"], ["model.width=8"], records)
    sft, vrpo = first / "sft", first / "vrpo-lr0.0001-beta0.1" / "seed1"
    assert [c[0] for c in calls] == [sft, vrpo]
    assert calls[0][1:] == (study.SFT, ["model.width=8"])
    assert f"init_from={sft}" in calls[1][1] and "task.beta=0.1" in calls[1][1] and calls[1][2] == ["data.prompts=4"]
    assert "seed=1" in calls[1][1] and "data.pairs_seed=0" in calls[1][1]  # every seed trains on the same pairs
    assert sorted(p.name for p in (records / "sft").iterdir()) == sorted(study.KEPT)  # never weights

    calls.clear()
    study.restore(fresh, records)
    study.sft_run(fresh, [], records)  # finished on machine 1: not trained
    study.preference(fresh, "vrpo", hp, 1, [], [], records)  # finished on machine 1: not trained
    assert calls == []
    study.preference(fresh, "naive_dpo", hp, 1, [], ["model.width=8"], records)  # new: needs the SFT weights
    assert [(c[0], c[2]) for c in calls] == [(fresh / "sft", ["model.width=8"]),
                                              (fresh / "naive_dpo-lr0.0001-beta0.1" / "seed1", [])]
    assert study.finished(records / "naive_dpo-lr0.0001-beta0.1" / "seed1")


def test_the_first_report_seeds_naive_and_vrpo_runs_measure_their_score_noise(tmp_path, monkeypatch):
    calls, noise, records, root = [], [], tmp_path / "records", tmp_path / "root"
    monkeypatch.setattr(study, "launch", _fake_launch(calls, 0.25))

    def score_noise(command, **kw):  # the script writes its table into the run dir
        noise.append(command)
        run_dir = Path(command[2])
        (run_dir / study.NOISE_FILE).write_text(json.dumps([{"step": 100, "mean_abs_s": 0.5,
            "noise_to_signal_naive": 9.0, "wrong_sign_naive": 0.4, "noise_to_signal_vrpo": 0.5, "wrong_sign_vrpo": 0.1}]))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(study.subprocess, "run", score_noise)
    run_dir = study.preference(root, "vrpo", {"lr": 1e-4, "beta": 0.2}, 1, [], [], records, noise=True)
    assert f"snapshot_every={study.NOISE_EVERY}" in calls[-1][1] and noise[0][-2:] == ["--n-t", str(study.N_T)]
    assert (records / run_dir.relative_to(root) / study.NOISE_FILE).exists()  # archived with the record
    _run(root / "naive_dpo-lr0.0001-beta0.2" / "seed1", [1, 0], [1, 0])
    (root / "selected.json").write_text(json.dumps({"search_seed": 0, "seeds": [1], "methods": {
        "vrpo": {"lr": 1e-4, "beta": 0.2}, "naive_dpo": {"lr": 1e-4, "beta": 0.2}}}))
    assert "| 100 | 0.500 | 9.00 | 0.40 | 0.50 | 0.10 |" in study.table(root)


def test_an_sft_run_that_does_not_reproduce_stops_the_driver_and_leaves_the_records_alone(tmp_path, monkeypatch):
    records, first, other = tmp_path / "records", tmp_path / "machine1", tmp_path / "machine2"
    monkeypatch.setattr(study, "launch", _fake_launch([], 0.25))
    study.sft_run(first, [], records)
    committed = (records / "sft" / "metrics.json").read_text()
    study.restore(other, records)
    monkeypatch.setattr(study, "launch", _fake_launch([], 0.26))  # this machine's SFT comes out different
    for _ in range(2):  # a plain relaunch stops again: the new run is aside, the archived record back
        with pytest.raises(SystemExit, match="does not reproduce"):
            study.preference(other, "sft_chosen", {"lr": 1e-4}, 1, [], [], records)
        assert (records / "sft" / "metrics.json").read_text() == committed
        assert (other / "sft" / "metrics.json").read_text() == committed
        assert (other / "sft.not-reproduced" / "checkpoints" / "last.ckpt").exists()
    assert not (other / "sft_chosen-lr0.0001").exists()


def test_an_interrupted_run_is_continued_not_counted_or_archived(tmp_path, monkeypatch):
    records, root = tmp_path / "records", tmp_path / "root"
    run_dir = root / "sft"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "interrupted", "config_hash": "h"}))
    assert not study.finished(run_dir)
    study.archive(run_dir, root, records)
    assert not (records / "sft").exists()
    commands = []
    monkeypatch.setattr(study.subprocess, "run", lambda command, **kw: commands.append(command) or
                        type("Done", (), {"returncode": 0})())
    with pytest.raises(SystemExit, match="did not finish"):  # the (fake) run exits 0 but is still unfinished
        study.launch(run_dir, ["steps=5"], [])
    assert commands[0][-2:] == ["resume=auto", f"hydra.run.dir={run_dir}"]


def test_the_table_is_made_from_the_archived_records_alone(tmp_path):
    records, root = tmp_path / "records", tmp_path / "fresh"
    _run(records / "sft", [1, 1], [1, 1], {"val/loss": 0.5})
    _run(records / "vrpo-lr0.0001-beta0.2" / "seed1", [1, 1], [1, 1], {"val/loss": 0.5})
    (records / "selected.json").write_text(json.dumps({"search_seed": 0, "seeds": [1],
                                                       "methods": {"vrpo": {"lr": 1e-4, "beta": 0.2}}}))
    assert study.main(["--table", "--root", str(root), "--records", str(records)]) == 0
    assert "| vrpo | {'lr': 0.0001, 'beta': 0.2} | 1 | 0 | 1.000 |" in (root / "sorting_study.md").read_text()
