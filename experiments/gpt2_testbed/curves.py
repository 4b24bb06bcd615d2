"""Smoothness of a GPT-2 learning-rate sweep: per arm, size and LR the seed-mean sweep metric, its
spread over seeds, the validation loss along training, and whether the seed-mean curve over the LR
grid is unimodal; with the optimum's 95% bootstrap interval.

    python experiments/gpt2_testbed/curves.py <sweep dir> [--history]
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from src.sweeps.collect import dedupe, points, records
from src.sweeps.transfer import analyse


def local_minima(losses: list[float]) -> int:
    """Strict local minima of the finite part of a curve (1: unimodal)."""
    ys = [y for y in losses if math.isfinite(y)]
    return sum(1 for i, y in enumerate(ys) if (i == 0 or y < ys[i - 1]) and (i == len(ys) - 1 or y < ys[i + 1]))


def history(job_dir: Path) -> list[tuple[int, float]]:
    """(step, val/loss) of one run, from its CSV logger."""
    out = []
    for path in sorted(job_dir.glob("csv/version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("val/loss"):
                    out.append((int(row["step"]), float(row["val/loss"])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--history", action="store_true", help="print every run's validation loss along training")
    args = parser.parse_args()
    pts, base = points(records(args.sweep_dir))
    pts, _ = dedupe(pts)
    for r in analyse(pts, base):
        for size, curve in sorted(r.curves.items()):
            ci = r.intervals.get(size)
            width = f"{ci[1] - ci[0]:.2f}" if ci else "–"
            print(f"{r.arm} {r.axis} {size}: η* {r.optima[size].log2_lr}  95% interval width {width} oct  "
                  f"local minima {local_minima(curve.losses)}")
            for x, seeds in zip(curve.log2_lrs, curve.seeds):
                finite = [v for v in seeds if math.isfinite(v)]
                sd = statistics.stdev(finite) if len(finite) > 1 else float("nan")
                print(f"   log2 lr {x:6.2f}: mean {statistics.fmean(finite) if finite else math.inf:.4f}  "
                      f"sd {sd:.4f}  seeds " + " ".join(f"{v:.3f}" for v in seeds))
    if args.history:
        by_job = defaultdict(list)
        for p in pts:
            by_job[(p["arm"], p["axis"], p["size"], p["log2_lr"])].append(p)
        for key, ps in sorted(by_job.items()):
            for p in sorted(ps, key=lambda p: p["seed"]):
                h = history(args.sweep_dir / p["dir"])
                print(key, "seed", p["seed"], " ".join(f"{s}:{v:.2f}" for s, v in h))


if __name__ == "__main__":
    main()
