"""The sorting study's bookkeeping (experiments/vrpo/sorting_study.py) on fabricated run dirs: selection
on the even held-out rows, report on the odd ones, paired t intervals and their verdicts."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("sorting_study", ROOT / "experiments" / "vrpo" / "sorting_study.py")
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def _run(path, greedy_rows, sampled_rows, final=None):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"metrics": {"final": final or {}}}))
    (path / "answers_T0.json").write_text(json.dumps({"draws": 1, "row_hits": greedy_rows}))
    (path / "answers_T1.json").write_text(json.dumps({"draws": 2, "row_hits": sampled_rows}))


def test_selection_uses_even_rows_and_the_table_reports_odd_rows_with_paired_intervals(tmp_path):
    # seed 0 search: lr 1e-4 wins on the even rows although lr 3e-5 is better on the odd ones
    _run(tmp_path / "vrpo-lr3e-05-beta0.2" / "seed0", [0, 1, 0, 1], [0, 2, 0, 2])
    _run(tmp_path / "vrpo-lr0.0001-beta0.2" / "seed0", [1, 0, 1, 0], [2, 0, 2, 0])
    hps = study.grid("vrpo", (3e-5, 1e-4), (0.2,))
    assert study.selected(tmp_path, hps, 0, "vrpo") == {"lr": 1e-4, "beta": 0.2}
    assert study.half(tmp_path / "vrpo-lr3e-05-beta0.2" / "seed0", 1, 1) == 1.0  # odd rows, 2 draws each
    # three seeds of vrpo and naive DPO: VRPO's odd-row greedy accuracy is 0.5 above on every seed
    for seed in (0, 1, 2):
        if seed:
            _run(tmp_path / "vrpo-lr0.0001-beta0.2" / f"seed{seed}", [1, 1, 1, 0], [2, 1, 2, 1])
        _run(tmp_path / "naive_dpo-lr0.0001-beta0.2" / f"seed{seed}", [1, 0, 1, 0][: 4], [1, 0, 1, 0],
             {"val/preference_accuracy": 0.6, "val/loss": 0.7})
        _run(tmp_path / "sft" / f"seed{seed}", [0, 0, 0, 0], [0, 0, 0, 0])
    (tmp_path / "selected.json").write_text(json.dumps({"seeds": [0, 1, 2], "methods": {
        "vrpo": {"lr": 1e-4, "beta": 0.2}, "naive_dpo": {"lr": 1e-4, "beta": 0.2}}}))
    text = study.table(tmp_path)
    assert "| naive_dpo | {'lr': 0.0001, 'beta': 0.2} | 3 | 0.000 ± 0.000 | 0.000 ± 0.000 | 0.600 ± 0.000 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| vrpo − sft (n=3) | greedy"))
    assert "+0.333 [" in row and row.endswith("| undetermined |")  # seed 0's vrpo is 0 on the odd rows
    mean, low, high = study.interval([0.5, 0.5, 0.5])
    assert (mean, low, high) == (0.5, 0.5, 0.5) and study.verdict(low, high) == "above"
    mean, low, high = study.interval([0.1, 0.2, 0.3])
    assert low == pytest.approx(0.2 - 4.303 * 0.1 / math.sqrt(3)) and study.verdict(low, high) == "undetermined"
    assert study.verdict(-0.1, 0.2) == "undetermined" and study.verdict(-0.3, -0.1) == "below"


def _fake_launch(calls, loss):
    """``launch`` without training: a run dir without a record gets one (final val/loss ``loss``), its
    weights and, where missing, its answers."""
    def launch(run_dir, args, extra):
        if not (run_dir / "metrics.json").exists():
            calls.append(run_dir)
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "checkpoints" / "last.ckpt").write_text("weights")
            (run_dir / "metrics.json").write_text(json.dumps({"metrics": {"final": {"val/loss": loss}}}))
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
    study.sft_run(first, 0, [], records)
    study.preference(first, "vrpo", hp, 0, [], [], records)
    assert calls == [first / "sft" / "seed0", first / "vrpo-lr0.0001-beta0.1" / "seed0"]
    assert not (records / "sft" / "seed0" / "checkpoints").exists()  # records and answers, never weights
    assert sorted(p.name for p in (records / "sft" / "seed0").iterdir()) == sorted(study.KEPT)

    calls.clear()
    study.restore(fresh, records)
    study.sft_run(fresh, 0, [], records)  # its record is here: not trained
    study.preference(fresh, "vrpo", hp, 0, [], [], records)  # finished on machine 1: not trained
    assert calls == []
    study.preference(fresh, "naive_dpo", hp, 0, [], [], records)  # new: needs the SFT weights
    assert calls == [fresh / "sft" / "seed0", fresh / "naive_dpo-lr0.0001-beta0.1" / "seed0"]
    assert (records / "naive_dpo-lr0.0001-beta0.1" / "seed0" / "metrics.json").exists()

    other = tmp_path / "machine3"
    study.restore(other, records)
    monkeypatch.setattr(study, "launch", _fake_launch([], 0.26))  # this machine's SFT comes out different
    with pytest.raises(SystemExit, match="does not reproduce"):
        study.preference(other, "sft_chosen", {"lr": 1e-4}, 0, [], [], records)


def test_the_table_is_made_from_the_archived_records_alone(tmp_path):
    records, root = tmp_path / "records", tmp_path / "fresh"
    for name in ("sft", "vrpo-lr0.0001-beta0.2"):
        _run(records / name / "seed0", [1, 1], [1, 1], {"val/loss": 0.5})
    (records / "selected.json").write_text(json.dumps({"seeds": [0], "methods": {"vrpo": {"lr": 1e-4, "beta": 0.2}}}))
    assert study.main(["--table", "--root", str(root), "--records", str(records)]) == 0
    assert "| vrpo | {'lr': 0.0001, 'beta': 0.2} | 1 | 1.000 ± 0.000 |" in (root / "sorting_study.md").read_text()
