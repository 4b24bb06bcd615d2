"""Smoothness of a GPT-2 learning-rate sweep: per arm, size and LR the seed-mean sweep metric, its
spread over seeds, the validation loss along training, and whether the seed-mean curve over the LR
grid is unimodal; with the optimum's 95% bootstrap interval.

    python experiments/gpt2_testbed/curves.py <sweep dir> [...] [--history] [--plot curves.png --size 64]

``--plot`` draws the seed-mean loss ± sd over seeds against log2 LR at one width, one curve per sweep
dir (labelled by the dir's name).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from src.sweeps.collect import dedupe, points, records
from src.sweeps.transfer import analyse, build_curves


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
    parser.add_argument("sweep_dirs", type=Path, nargs="+")
    parser.add_argument("--history", action="store_true", help="print every run's validation loss along training")
    parser.add_argument("--plot", type=Path, help="write loss vs log2 LR of every sweep dir here")
    parser.add_argument("--size", type=int, default=64, help="the width --plot shows")
    args = parser.parse_args()
    for sweep_dir in args.sweep_dirs:
        print(f"== {sweep_dir.name}")
        describe(sweep_dir, args.history)
    if args.plot:
        plot(args.sweep_dirs, args.size, args.plot)


def plot(sweep_dirs: list[Path], size: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for sweep_dir in sweep_dirs:
        pts, _ = dedupe(points(records(sweep_dir))[0])
        for (arm, axis), curves in build_curves(pts).items():
            if axis != "width" or size not in curves:
                continue
            c = curves[size]
            ok = [i for i, y in enumerate(c.losses) if math.isfinite(y)]
            sds = [statistics.stdev(c.seeds[i]) if len(c.seeds[i]) > 1 else 0.0 for i in ok]
            ax.errorbar([c.log2_lrs[i] for i in ok], [c.losses[i] for i in ok], yerr=sds, marker="o", ms=3,
                        capsize=3, label=sweep_dir.name)
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel("validation loss (seed mean ± sd)")
    ax.set_title(f"width {size}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def describe(sweep_dir: Path, show_history: bool) -> None:
    pts, base = points(records(sweep_dir))
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
    if show_history:
        by_job = defaultdict(list)
        for p in pts:
            by_job[(p["arm"], p["axis"], p["size"], p["log2_lr"])].append(p)
        for key, ps in sorted(by_job.items()):
            for p in sorted(ps, key=lambda p: p["seed"]):
                h = history(sweep_dir / p["dir"])
                print(key, "seed", p["seed"], " ".join(f"{s}:{v:.2f}" for s, v in h))


if __name__ == "__main__":
    main()
