"""Transfer analysis of a learning-rate sweep: the optimal log2 LR per arm and size, and how it moves.

Per arm (parametrization × optimizer × any other arm key) and size (a width at the base depth, or a
depth at the base width), the loss curve over log2 η is the seed-mean of each run's ``sweep_metric``
(a diverged or failed run, in any seed, makes that point +inf). Definitions, one each
(reference/mup.md §8, reference/width_depth.md §5d):

* η*(s): the grid argmin, refined by the vertex of the parabola through it and its two neighbours;
  when the argmin sits at the grid's edge or next to a diverged point the grid argmin is kept and
  flagged.
* drift = max over sizes of |log2 η*(s) − log2 η*(s_ref)| in octaves, s_ref = the base size if swept,
  else the smallest.
* slope = least-squares slope of log2 η* against log2 size.
* regret = loss at the largest size with η*(s_ref) (its nearest grid point) minus that size's best
  grid loss (+inf when that point diverged; None when no grid point lies within half an octave).
* violations = adjacent size pairs where the larger size is worse at η*(s_ref) (wider/deeper should
  be better).
* seed noise = std over seeds of the loss at each size's grid optimum (where seeds were run).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Optimum:
    log2_lr: float | None  # None: every point diverged
    grid_log2_lr: float | None
    loss: float
    flag: str | None = None  # "edge" | "next to diverged" | "all diverged"


@dataclass
class Curve:
    size: int
    log2_lrs: list[float]
    losses: list[float]  # seed mean; inf where any seed diverged or failed
    seeds: list[list[float]]  # per grid point, the finite losses of the seeds

    def optimum(self) -> Optimum:
        finite = [i for i, y in enumerate(self.losses) if math.isfinite(y)]
        if not finite:
            return Optimum(None, None, math.inf, "all diverged")
        i = min(finite, key=lambda j: self.losses[j])
        x, y = self.log2_lrs[i], self.losses[i]
        if i == 0 or i == len(self.losses) - 1:
            return Optimum(x, x, y, "edge")
        y0, y2 = self.losses[i - 1], self.losses[i + 1]
        if not (math.isfinite(y0) and math.isfinite(y2)):
            return Optimum(x, x, y, "next to diverged")
        return Optimum(parabola_vertex(self.log2_lrs[i - 1: i + 2], [y0, y, y2]), x, y)

    def loss_at(self, log2_lr: float) -> float | None:
        """The loss at the grid point nearest to log2_lr; None when no point lies within half an
        octave (a partial sweep that has not run that LR at this size)."""
        i = min(range(len(self.log2_lrs)), key=lambda j: abs(self.log2_lrs[j] - log2_lr))
        return self.losses[i] if abs(self.log2_lrs[i] - log2_lr) <= 0.5 else None

    def seed_noise(self) -> float | None:
        opt = self.optimum()
        if opt.grid_log2_lr is None:
            return None
        values = self.seeds[self.log2_lrs.index(opt.grid_log2_lr)]
        return statistics.stdev(values) if len(values) > 1 else None


def parabola_vertex(xs: list[float], ys: list[float]) -> float:
    """x of the vertex of the parabola through three points (x ascending, the middle one lowest)."""
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
    return x1 if a <= 0 else -b / (2 * a)


def least_squares_slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else None


@dataclass
class ArmAxis:
    """One arm's curves along one axis, and its transfer metrics."""

    arm: str
    axis: str  # "width" | "depth"
    ref_size: int
    curves: dict[int, Curve]
    optima: dict[int, Optimum] = field(default_factory=dict)
    drift: float | None = None
    slope: float | None = None
    regret: float | None = None
    violations: int | None = None
    seed_noise: dict[int, float | None] = field(default_factory=dict)

    def analyse(self) -> ArmAxis:
        sizes = sorted(self.curves)
        self.optima = {s: self.curves[s].optimum() for s in sizes}
        self.seed_noise = {s: self.curves[s].seed_noise() for s in sizes}
        ref = self.optima[self.ref_size].log2_lr
        found = [s for s in sizes if self.optima[s].log2_lr is not None]
        if ref is None or len(found) < 2:
            return self
        self.drift = max(abs(self.optima[s].log2_lr - ref) for s in found)
        self.slope = least_squares_slope([math.log2(s) for s in found], [self.optima[s].log2_lr for s in found])
        at_ref = [self.curves[s].loss_at(ref) for s in sizes]
        best = min(self.curves[sizes[-1]].losses)
        if at_ref[-1] is not None:
            self.regret = at_ref[-1] - best if math.isfinite(at_ref[-1]) else math.inf
        self.violations = sum(1 for a, b in zip(at_ref, at_ref[1:]) if a is not None and b is not None and not b <= a)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm, "axis": self.axis, "ref_size": self.ref_size, "sizes": sorted(self.curves),
            "optimal_log2_lr": {s: o.log2_lr for s, o in self.optima.items()},
            "grid_log2_lr": {s: o.grid_log2_lr for s, o in self.optima.items()},
            "best_loss": {s: o.loss for s, o in self.optima.items()},
            "flags": {s: o.flag for s, o in self.optima.items() if o.flag},
            "drift_octaves": self.drift, "slope": self.slope, "regret": self.regret,
            "violations": self.violations, "seed_noise": self.seed_noise,
            "curves": {s: asdict(c) for s, c in self.curves.items()},
        }


def build_curves(points: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[int, Curve]]:
    """Group points {arm, axis, size, log2_lr, seed, loss (inf unless ok)} into curves."""
    by_key: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        by_key[(p["arm"], p["axis"], p["size"])][p["log2_lr"]].append(p["loss"])
    curves: dict[tuple[str, str], dict[int, Curve]] = defaultdict(dict)
    for (arm, axis, size), grid in by_key.items():
        xs = sorted(grid)
        losses = [sum(grid[x]) / len(grid[x]) if all(math.isfinite(v) for v in grid[x]) else math.inf for x in xs]
        seeds = [[v for v in grid[x] if math.isfinite(v)] for x in xs]
        curves[(arm, axis)][size] = Curve(size, xs, losses, seeds)
    return dict(curves)


def analyse(points: Iterable[Mapping[str, Any]], base: Mapping[str, int]) -> list[ArmAxis]:
    """Every (arm, axis) of a sweep; ``base`` maps an axis to its base size."""
    out = []
    sp_first = lambda item: (item[0][1], not item[0][0].startswith("sp/"), item[0][0])  # noqa: E731
    for (arm, axis), curves in sorted(build_curves(points).items(), key=sp_first):
        ref = base[axis] if base.get(axis) in curves else min(curves)
        out.append(ArmAxis(arm, axis, ref, curves).analyse())
    return out
