"""The two pictures of a transfer sweep: loss against log2 LR (one panel per arm, one curve per size)
and the optimal log2 LR against size (one line per arm), one row per axis."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from src.sweeps.transfer import ArmAxis


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def transfer_curves(results: list[ArmAxis], path: Path) -> None:
    """Loss vs log2 LR; diverged points are left out; ★ marks each size's refined optimum."""
    plt = _pyplot()
    by_axis: dict[str, list[ArmAxis]] = defaultdict(list)
    for r in results:
        by_axis[r.axis].append(r)
    cols = max(len(v) for v in by_axis.values())
    fig, axes = plt.subplots(len(by_axis), cols, figsize=(4.2 * cols, 3.4 * len(by_axis)), squeeze=False)
    for i, (axis, arms) in enumerate(sorted(by_axis.items())):
        finite = [y for r in arms for c in r.curves.values() for y in c.losses if math.isfinite(y)]
        low = min(finite, default=0.0)
        high = min(max(finite, default=1.0), low + 2.0)  # losses far above the optimum are off the chart
        high = high if high > low else low + 1.0
        for j, r in enumerate(arms):
            ax = axes[i][j]
            sizes = sorted(r.curves)
            colors = plt.cm.viridis([k / max(1, len(sizes) - 1) for k in range(len(sizes))])
            for size, color in zip(sizes, colors):
                curve = r.curves[size]
                xs = [x for x, y in zip(curve.log2_lrs, curve.losses) if math.isfinite(y)]
                ys = [y for y in curve.losses if math.isfinite(y)]
                ax.plot(xs, ys, marker="o", ms=3, color=color, label=f"{axis} {size}")
                opt = r.optima[size]
                if opt.log2_lr is not None:
                    ax.plot([opt.log2_lr], [opt.loss], marker="*", ms=11, color=color, mec="k", mew=0.5)
            ax.set_ylim(low - 0.02 * (high - low), high)
            ax.set_title(f"{r.arm} ({axis})", fontsize=9)
            ax.set_xlabel("log2 learning rate")
            ax.set_ylabel("sweep metric")
            ax.legend(fontsize=7)
        for j in range(len(arms), cols):
            axes[i][j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def optimum_vs_size(results: list[ArmAxis], path: Path) -> None:
    """Optimal log2 LR vs log2 size per arm, with 95% bootstrap intervals as error bars (none where
    a size's optimum has one seed) and the arm's verdict in the legend."""
    plt = _pyplot()
    axes_names = sorted({r.axis for r in results})
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4.8 * len(axes_names), 3.6), squeeze=False)
    for ax, axis in zip(axes[0], axes_names):
        for r in (r for r in results if r.axis == axis):
            sizes = [s for s in sorted(r.optima) if r.optima[s].log2_lr is not None]
            ys = [r.optima[s].log2_lr for s in sizes]
            cis = [r.intervals.get(s) for s in sizes]
            errs = [[y - ci[0] if ci and math.isfinite(ci[0]) else 0.0 for y, ci in zip(ys, cis)],
                    [ci[1] - y if ci and math.isfinite(ci[1]) else 0.0 for y, ci in zip(ys, cis)]]
            label = f"{r.arm} ({r.verdict})"
            ax.errorbar([math.log2(s) for s in sizes], ys, yerr=errs, marker="o", capsize=3, label=label)
        ax.set_xlabel(f"log2 {axis}")
        ax.set_ylabel("optimal log2 LR")
        ax.set_title(f"optimum vs {axis}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
