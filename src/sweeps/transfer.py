"""Transfer analysis of a learning-rate sweep: the optimal log2 LR per arm and size, and how it moves.

Per arm (parametrization × optimizer × any other arm key) and size (a width at the base depth, or a
depth at the base width), the loss curve over log2 η is the seed-mean of each run's ``sweep_metric``
(a diverged run, in any seed, makes that point +inf). A job that failed (a crash, a bad checkpoint:
not the learning rate's doing) is a missing point, not a diverged one: it is left out of the curve
and listed with it. Definitions, one each
(docs/transfer.md):

* η*(s): the grid argmin, refined by the vertex of the parabola through it and its two neighbours;
  when the argmin sits at the grid's edge or next to a diverged point the grid argmin is kept and
  flagged; when a failed job sits at the argmin or a grid point next to it, it is flagged
  ``next to failed`` (the optimum may lie where the failure is).
* drift = max over sizes of |log2 η*(s) − log2 η*(s_ref)| in octaves, s_ref = the base size if swept,
  else the smallest.
* slope = least-squares slope of log2 η* against log2 size.
* regret = loss at the largest size with η*(s_ref) (its nearest grid point) minus that size's best
  grid loss (+inf when that point diverged; None when no grid point lies within half an octave).
  Its interval comes from the same bootstrap, with η*(s_ref) refitted in each replicate.
* violations = adjacent size pairs where the larger size is worse at η*(s_ref) (wider/deeper should
  be better).
* seed noise = std over seeds of the loss at each size's grid optimum (where seeds were run).

Uncertainty, by bootstrap over seeds: each replicate resamples, with replacement, the seeds of every
grid point of every size independently (a point's replicate loss is the mean of its resampled seeds,
+inf when one of them diverged) and refits every η*(s), the drift and the slope. The 95% intervals
are the replicates' 2.5% and 97.5% percentiles. A point's finite seed losses are resampled as
residuals around their mean inflated by √(m/(m−1)) (m seeds), so a replicate's spread matches the
unbiased variance. A size needs ≥ 2 seeds at its grid optimum and at both its neighbours for an
interval (one seed has no spread to resample); without one, the arm's drift and slope intervals are
None too. A size where every LR diverged has no optimum: its η* interval is (−∞, −∞) and the drift
is +∞ (the optimum lies below the grid); the slope is fitted on the other sizes.

Verdict per arm and axis: ``undetermined`` when an optimum is flagged ``next to failed`` or a size
has only failed jobs; else ``holds`` when the drift interval lies below ``HOLDS_OCTAVES`` (and no
optimum sits at the grid's edge, where η* is only a bound); ``drifts`` when the slope interval
excludes 0 and |slope| ≥ ``DRIFT_SLOPE``; otherwise ``undetermined`` (with the reason).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

HOLDS_OCTAVES = 1.0  # a drift interval below this many octaves: the optimum transfers
DRIFT_SLOPE = 0.3  # octaves of η* per doubling of size that count as a drift
BOOTSTRAP = 1000  # replicates
LEVEL = 0.95


@dataclass
class Optimum:
    log2_lr: float | None  # None: every point diverged
    grid_log2_lr: float | None
    loss: float
    flag: str | None = None  # "edge" | "next to diverged" | "all diverged" | "next to failed"


def fit_optimum(log2_lrs: list[float], losses: list[float]) -> Optimum:
    """The grid argmin of ``losses`` (inf: diverged), refined by the parabola through it and its
    neighbours unless it sits at the edge or next to a diverged point (then flagged)."""
    finite = [i for i, y in enumerate(losses) if math.isfinite(y)]
    if not finite:
        return Optimum(None, None, math.inf, "all diverged")
    i = min(finite, key=lambda j: losses[j])
    x, y = log2_lrs[i], losses[i]
    if i == 0 or i == len(losses) - 1:
        return Optimum(x, x, y, "edge")
    y0, y2 = losses[i - 1], losses[i + 1]
    if not (math.isfinite(y0) and math.isfinite(y2)):
        return Optimum(x, x, y, "next to diverged")
    return Optimum(parabola_vertex(log2_lrs[i - 1: i + 2], [y0, y, y2]), x, y)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else math.inf


@dataclass
class Curve:
    size: int
    log2_lrs: list[float]
    losses: list[float]  # seed mean; inf where any seed diverged
    seeds: list[list[float]]  # per grid point, every finished seed's loss (inf: diverged)
    failed: list[float] = field(default_factory=list)  # log2 LRs where a job failed (left out above)

    def optimum(self) -> Optimum:
        opt = fit_optimum(self.log2_lrs, self.losses)
        if opt.grid_log2_lr is not None and self.failed:
            grid = sorted(set(self.log2_lrs) | set(self.failed))
            i = grid.index(opt.grid_log2_lr)
            if set(grid[max(0, i - 1): i + 2]) & set(self.failed):
                opt.flag = "next to failed"
        return opt

    def loss_at(self, log2_lr: float) -> float | None:
        return loss_at(self.log2_lrs, self.losses, log2_lr)

    def seed_noise(self) -> float | None:
        opt = self.optimum()
        if opt.grid_log2_lr is None:
            return None
        values = [v for v in self.seeds[self.log2_lrs.index(opt.grid_log2_lr)] if math.isfinite(v)]
        return statistics.stdev(values) if len(values) > 1 else None

    def seeded_optimum(self) -> bool:
        """Whether the grid optimum and both its neighbours have ≥ 2 seeds (else no interval).
        A size where every point diverged counts as seeded when every point has ≥ 2 seeds."""
        opt = self.optimum()
        if opt.grid_log2_lr is None:
            return all(len(v) > 1 for v in self.seeds)
        i = self.log2_lrs.index(opt.grid_log2_lr)
        return all(len(self.seeds[j]) > 1 for j in range(max(0, i - 1), min(len(self.seeds), i + 2)))

    def resample(self, rng: random.Random) -> list[float]:
        """One bootstrap replicate of the seed-mean losses (see the module docstring)."""
        out = []
        for values in self.seeds:
            m = len(values)
            draw = [values[rng.randrange(m)] for _ in range(m)]
            if m > 1 and all(math.isfinite(v) for v in values):
                mean = sum(values) / m
                draw = [mean + (v - mean) * math.sqrt(m / (m - 1)) for v in draw]
            out.append(_mean(draw))
        return out


def loss_at(log2_lrs: list[float], losses: list[float], log2_lr: float) -> float | None:
    """The loss at the grid point nearest to log2_lr; None when no point lies within half an
    octave (a partial sweep that has not run that LR at this size)."""
    i = min(range(len(log2_lrs)), key=lambda j: abs(log2_lrs[j] - log2_lr))
    return losses[i] if abs(log2_lrs[i] - log2_lr) <= 0.5 else None


def regret(log2_lrs: list[float], losses: list[float], ref_log2_lr: float) -> float | None:
    """L(η*(s_ref)) − min_η L on one size's curve: +inf when that point diverged, None when no grid
    point lies within half an octave of η*(s_ref)."""
    at_ref = loss_at(log2_lrs, losses, ref_log2_lr)
    if at_ref is None:
        return None
    return at_ref - min(losses) if math.isfinite(at_ref) else math.inf


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


def percentile_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (±inf allowed), by linear interpolation."""
    xs = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(xs) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        if lo == hi or not (math.isfinite(xs[lo]) and math.isfinite(xs[hi])):
            return xs[lo] if pos - lo < 0.5 else xs[hi]
        return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])

    return at((1 - level) / 2), at((1 + level) / 2)


def drift_and_slope(optima: dict[int, float | None], ref: int) -> tuple[float | None, float | None]:
    """(drift in octaves, slope of log2 η* on log2 size) of optimal log2 LRs per size (None: every LR
    diverged there, which makes the drift +inf; the slope is fitted on the other sizes)."""
    found = [s for s in sorted(optima) if optima[s] is not None]
    slope = least_squares_slope([math.log2(s) for s in found], [optima[s] for s in found])
    if optima[ref] is None or len(optima) < 2:
        return None, slope
    if len(found) < len(optima):
        return math.inf, slope
    return max(abs(optima[s] - optima[ref]) for s in found), slope


def verdict(drift_ci: tuple[float, float] | None, slope: float | None, slope_ci: tuple[float, float] | None,
            flags: dict[int, str]) -> tuple[str, str]:
    """(holds | drifts | undetermined, why); the rules are in the module docstring."""
    if "next to failed" in flags.values():
        return "undetermined", "an optimum depends on a failed job (rerun it: sweep.rerun_failed=true)"
    if drift_ci is None:
        return "undetermined", "no interval: needs >= 2 seeds at every size's optimum and its neighbours"
    if drift_ci[1] < HOLDS_OCTAVES and not any(f == "edge" for f in flags.values()):
        return "holds", f"drift interval below {HOLDS_OCTAVES:g} octave"
    if slope_ci is not None and slope is not None and abs(slope) >= DRIFT_SLOPE and (slope_ci[0] > 0 or slope_ci[1] < 0):
        return "drifts", f"slope interval excludes 0 and |slope| >= {DRIFT_SLOPE:g}"
    if drift_ci[1] < HOLDS_OCTAVES:
        return "undetermined", "an optimum sits at the grid's edge"
    return "undetermined", "drift interval reaches 1 octave, slope interval includes 0 or |slope| < 0.3"


@dataclass
class ArmAxis:
    """One arm's curves along one axis, and its transfer metrics with bootstrap intervals."""

    arm: str
    axis: str  # "width" | "depth"
    ref_size: int
    curves: dict[int, Curve]
    optima: dict[int, Optimum] = field(default_factory=dict)
    drift: float | None = None
    slope: float | None = None
    regret: float | None = None
    regret_ci: tuple[float, float] | None = None
    violations: int | None = None
    seed_noise: dict[int, float | None] = field(default_factory=dict)
    intervals: dict[int, tuple[float, float] | None] = field(default_factory=dict)  # log2 η* per size
    drift_ci: tuple[float, float] | None = None
    slope_ci: tuple[float, float] | None = None
    verdict: str = "undetermined"
    why: str = ""
    failed_sizes: list[int] = field(default_factory=list)  # sizes with only failed jobs: no curve

    def analyse(self, replicates: int = BOOTSTRAP, seed: int = 0) -> ArmAxis:
        self.failed_sizes = sorted(s for s, c in self.curves.items() if not c.log2_lrs)
        self.curves = {s: c for s, c in self.curves.items() if c.log2_lrs}
        sizes = sorted(self.curves)
        self.optima = {s: self.curves[s].optimum() for s in sizes}
        self.seed_noise = {s: self.curves[s].seed_noise() for s in sizes}
        if self.ref_size not in self.curves:  # nothing to measure the other sizes against
            self.verdict, self.why = "undetermined", f"only failed jobs at the reference size {self.ref_size}"
            return self
        self.drift, self.slope = drift_and_slope({s: o.log2_lr for s, o in self.optima.items()}, self.ref_size)
        self._bootstrap(replicates, seed)
        flags = {s: o.flag for s, o in self.optima.items() if o.flag}
        self.verdict, self.why = verdict(self.drift_ci, self.slope, self.slope_ci, flags)
        if self.failed_sizes:
            self.verdict, self.why = "undetermined", f"only failed jobs at size {self.failed_sizes}"
        ref = self.optima[self.ref_size].log2_lr
        if ref is None or self.slope is None:
            self.regret_ci = None
            return self
        at_ref = [self.curves[s].loss_at(ref) for s in sizes]
        self.regret = regret(self.curves[sizes[-1]].log2_lrs, self.curves[sizes[-1]].losses, ref)
        if self.regret is None:
            self.regret_ci = None
        self.violations = sum(1 for a, b in zip(at_ref, at_ref[1:]) if a is not None and b is not None and not b <= a)
        return self

    def _bootstrap(self, replicates: int, seed: int) -> None:
        """Percentile intervals of every η*(s), the drift, the slope and the regret (module docstring)."""
        rng = random.Random(seed)
        sizes = sorted(self.curves)
        draws: dict[int, list[float]] = {s: [] for s in sizes}
        drifts, slopes, regrets = [], [], []
        for _ in range(replicates):
            losses = {s: self.curves[s].resample(rng) for s in sizes}
            optima = {s: fit_optimum(self.curves[s].log2_lrs, losses[s]).log2_lr for s in sizes}
            for s, x in optima.items():
                draws[s].append(-math.inf if x is None else x)
            drift, slope = drift_and_slope(optima, self.ref_size)
            drifts.append(math.inf if drift is None else drift)
            slopes.append(slope)
            if optima[self.ref_size] is not None:
                regrets.append(regret(self.curves[sizes[-1]].log2_lrs, losses[sizes[-1]], optima[self.ref_size]))
        seeded = {s: self.curves[s].seeded_optimum() for s in sizes}
        self.intervals = {s: percentile_interval(draws[s]) if seeded[s] else None for s in sizes}
        if all(seeded.values()) and len(sizes) > 1:
            self.drift_ci = percentile_interval(drifts)
            finite = [v for v in slopes if v is not None]
            self.slope_ci = percentile_interval(finite) if len(finite) == len(slopes) else None
            if regrets and None not in regrets:
                self.regret_ci = percentile_interval(regrets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm, "axis": self.axis, "ref_size": self.ref_size, "sizes": sorted(self.curves),
            "optimal_log2_lr": {s: o.log2_lr for s, o in self.optima.items()},
            "optimal_log2_lr_ci": {s: list(ci) if ci else None for s, ci in self.intervals.items()},
            "grid_log2_lr": {s: o.grid_log2_lr for s, o in self.optima.items()},
            "best_loss": {s: o.loss for s, o in self.optima.items()},
            "flags": {s: o.flag for s, o in self.optima.items() if o.flag},
            "drift_octaves": self.drift, "drift_ci": list(self.drift_ci) if self.drift_ci else None,
            "slope": self.slope, "slope_ci": list(self.slope_ci) if self.slope_ci else None,
            "verdict": self.verdict, "verdict_reason": self.why,
            "regret": self.regret, "regret_ci": list(self.regret_ci) if self.regret_ci else None,
            "violations": self.violations, "seed_noise": self.seed_noise,
            "failed": {s: c.failed for s, c in self.curves.items() if c.failed}, "failed_sizes": self.failed_sizes,
            "curves": {s: asdict(c) for s, c in self.curves.items()},
        }


def build_curves(points: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[int, Curve]]:
    """Group points {arm, axis, size, log2_lr, seed, loss (inf: diverged), failed} into curves; a
    failed point only marks its LR in ``Curve.failed`` (a size with only failed jobs has no grid)."""
    by_key: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    failed: dict[tuple, set[float]] = defaultdict(set)
    for p in sorted(points, key=lambda p: (p["seed"] is None, p["seed"] or 0)):
        key = (p["arm"], p["axis"], p["size"])
        if p.get("failed"):
            failed[key].add(p["log2_lr"])
            by_key.setdefault(key, defaultdict(list))
        else:
            by_key[key][p["log2_lr"]].append(p["loss"])
    curves: dict[tuple[str, str], dict[int, Curve]] = defaultdict(dict)
    for (arm, axis, size), grid in by_key.items():
        xs = sorted(grid)
        curves[(arm, axis)][size] = Curve(size, xs, [_mean(grid[x]) for x in xs], [list(grid[x]) for x in xs],
                                          sorted(failed[(arm, axis, size)]))
    return dict(curves)


def analyse(points: Iterable[Mapping[str, Any]], base: Mapping[str, int], replicates: int = BOOTSTRAP) -> list[ArmAxis]:
    """Every (arm, axis) of a sweep; ``base`` maps an axis to its base size."""
    out, points = [], list(points)
    sp = {p["arm"]: p.get("sp", False) for p in points}
    sp_first = lambda item: (item[0][1], not sp[item[0][0]], item[0][0])  # noqa: E731
    for (arm, axis), curves in sorted(build_curves(points).items(), key=sp_first):
        ref = base[axis] if base.get(axis) in curves else min(curves)
        out.append(ArmAxis(arm, axis, ref, curves).analyse(replicates))
    return out
