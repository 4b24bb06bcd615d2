"""Seconds and FLOPs per training step of each diffusion-Transformer width study, per width, to size
a study's budget before running it. Each job is the study's own run (``python -m src.run
experiment=<study> hydra.mode=RUN``, SP arm: μP trains the same shapes) for ``--steps`` steps at one
torch thread; the step time is the batch over the job's mean ``train/images_per_s`` (the first step
excluded), the FLOPs its counted ``cost.train_step_flops`` (src/training/flops.py).

    python experiments/dit_mup/step_times.py [--studies dit_mup_sweep uvit_mup_sweep ...] [--steps 20]

Prints one row per study and width: seconds per step, GFLOPs per step, and both relative to the
first study at the same width. Absolute times drift with the machine's load; run nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ["dit_mup_sweep", "dit_flow_mup_sweep", "uvit_mup_sweep", "pixart_mup_sweep", "mmdit_mup_sweep"]
WIDTHS = [32, 64, 128, 256]


def measure(study: str, width: int, steps: int, out: Path) -> tuple[float, float]:
    """(seconds per step, FLOPs per step) of one short run of ``study`` at ``width``."""
    run_dir = out / f"{study}-{width}"
    args = [sys.executable, "-m", "src.run", f"experiment={study}", "hydra.mode=RUN", "logger=none",
            "parametrization=sp", f"model.width={width}", f"steps={steps}", f"val_every={steps}",
            f"ckpt_every={steps}", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{study} at width {width} failed:\n{done.stderr[-2000:]}")
    record = json.loads((run_dir / "metrics.json").read_text())
    batch = record["config"]["data"]["batch_size"]
    return batch / record["metrics"]["final"]["train/images_per_s"], record["cost"]["train_step_flops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", default=STUDIES)
    parser.add_argument("--widths", nargs="+", type=int, default=WIDTHS)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {(s, w): measure(s, w, args.steps, Path(tmp)) for w in args.widths for s in args.studies}
    print("| study | width | s / step | GFLOPs / step | time vs first | FLOPs vs first |")
    print("|---|---|---|---|---|---|")
    for study in args.studies:
        for w in args.widths:
            (sec, flops), (sec0, flops0) = rows[(study, w)], rows[(args.studies[0], w)]
            print(f"| {study} | {w} | {sec:.3f} | {flops / 1e9:.3f} | {sec / sec0:.2f} | {flops / flops0:.2f} |")


if __name__ == "__main__":
    main()
