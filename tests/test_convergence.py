"""The convergence study (experiments/dit_mup/convergence.py): steps to the SP baseline's final loss
and the speed-up, with a seed bootstrap; end to end on a tiny sweep (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("convergence", ROOT / "experiments" / "dit_mup" / "convergence.py")
convergence = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convergence)


def _curve(rate: float, noise: float = 0.0) -> dict[int, float]:
    return {s: 1.0 / (1 + rate * s) + noise for s in range(100, 1601, 100)}


def test_speedup_is_steps_over_the_first_step_at_the_baseline_final_loss():
    base = _curve(0.01)  # final 1/17
    fast = {s: 1.0 / (1 + 0.04 * s) for s in base}  # reaches 1/17 at step 400
    curves = {"sp_dit_recipe": [base, base], "mup_transferred": [fast, fast], "sp_best_grid": [base, fast]}
    result = convergence.analyse(curves, 1600, random.Random(0))
    assert result["baseline_loss"] == pytest.approx(1 / 17)
    arms = result["arms"]
    assert arms["sp_dit_recipe"]["steps_to_baseline"] == 1600 and arms["sp_dit_recipe"]["speedup"] == 1.0
    assert arms["mup_transferred"]["steps_to_baseline"] == 400 and arms["mup_transferred"]["speedup"] == 4.0
    assert tuple(arms["mup_transferred"]["speedup_ci"]) == (4.0, 4.0)  # every seed alike: no spread
    lo, hi = arms["sp_best_grid"]["speedup_ci"]  # one fast and one slow seed: the interval spans both
    assert (lo, hi) == (1.0, 4.0) and lo < arms["sp_best_grid"]["speedup"] < hi


def test_an_arm_that_never_reaches_the_baseline_has_no_step_and_speedup_zero():
    curves = {"sp_dit_recipe": [_curve(0.01)], "mup_transferred": [_curve(0.01, noise=0.5)]}
    arms = convergence.analyse(curves, 1600, random.Random(0))["arms"]
    assert arms["mup_transferred"]["steps_to_baseline"] is None and arms["mup_transferred"]["speedup"] == 0.0


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
    argv = ["--sweep", str(sweep), "--width", "64", "--steps", "8", "--every", "4", "--seeds", "0", "1",
            "--out", str(out), "--extra", "data=digits", "data.val_size=20", "model.patch_size=4"]
    convergence.main(argv)
    result = json.loads((out / "convergence.json").read_text())
    assert set(result["arms"]) == {"mup_transferred", "sp_dit_recipe", "sp_best_grid"}
    assert result["arms"]["sp_dit_recipe"]["steps_to_baseline"] == 8  # the baseline reaches itself at the end
    record = json.loads((out / "mup_transferred-s0" / "metrics.json").read_text())
    assert record["mutransfer"]["from"] == str(sweep) and record["config"]["model"]["width"] == 64
    assert (out / "convergence.png").exists() and "| mup_transferred |" in (out / "convergence.md").read_text()
    mtime = (out / "sp_best_grid-s1" / "metrics.json").stat().st_mtime
    convergence.main(argv)  # a relaunch trains nothing
    assert (out / "sp_best_grid-s1" / "metrics.json").stat().st_mtime == mtime
