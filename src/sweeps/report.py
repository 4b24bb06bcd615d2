"""The transfer report of a sweep dir:  python -m src.sweeps.report <sweep_dir>

Collects every job's metrics.json (a partial or failing sweep too), and writes beside them:
``runs.csv`` (one row per job), ``transfer.json`` (per arm and axis: sizes, optimal log2 LR per
size with its 95% interval, drift and slope with theirs, the verdict, regret, violations, seed
noise, flags, the best run per size (the dir that trained it, for sampling) and at the reference
size (its own dir, whose config ``mutransfer.from`` reads)) and the sweep's cost
(src/sweeps/cost.py), ``transfer_curves.png``, ``optimum_vs_size.png``
and ``report.md``; for image-diffusion sweeps also sample grids, Fréchet distance and class accuracy
of each size's best run. It runs by itself at the end of every multirun (src/sweeps/callback.py).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from src.errors import one_line
from src.sweeps import plots
from src.sweeps.collect import dedupe, points, records, write_table
from src.sweeps.cost import markdown as cost_markdown
from src.sweeps.cost import sweep_cost
from src.sweeps.transfer import ArmAxis, analyse

TRANSFER_FILE = "transfer.json"
log = logging.getLogger("src.sweeps")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return ("-∞" if value < 0 else "∞") if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _entry(result: ArmAxis, pts: list[dict[str, Any]]) -> dict[str, Any]:
    """transfer.json's record of one arm and axis, with what μTransfer needs to match and reuse it."""
    mine = [p for p in pts if p["arm"] == result.arm and p["axis"] == result.axis]
    at_ref = [p for p in mine if p["size"] == result.ref_size and math.isfinite(p["loss"])]
    best = min(at_ref, key=lambda p: p["loss"]) if at_ref else None
    best_runs = {}  # per size, the trained dir of the best seed's job at that size's grid optimum
    for p in sorted(mine, key=lambda p: p["loss"]):
        opt = result.optima.get(p["size"])
        if opt is not None and p["log2_lr"] == opt.grid_log2_lr and math.isfinite(p["loss"]):
            best_runs.setdefault(p["size"], p["trained_dir"])
    return {**result.to_dict(), "arm_values": mine[0]["arm_values"], "best_run": best and best["dir"],
            "best_runs": best_runs,
            "ref_log2_lr": result.optima[result.ref_size].log2_lr if result.ref_size in result.optima else None}


def _failed(recs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The failed jobs: dir and the last line of the error."""
    return [{"dir": r["dir"], "error": ((r.get("error") or "").strip().splitlines() or ["?"])[-1]}
            for r in recs if r["status"] == "failed"]


def _ci(point: float | None, ci: tuple[float, float] | None, digits: int = 2) -> str:
    """``-7.12 [-7.50, -6.80]``: an estimate and its 95% interval (none without seeds)."""
    return _fmt(point, digits) + (f" [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]" if ci else "")


def _markdown(sweep_dir: Path, recs: list[dict[str, Any]], results: list[ArmAxis], stale: list[str],
              cost: dict[str, Any]) -> str:
    counts = Counter(r["status"] for r in recs)
    lines = [f"# Transfer report: {sweep_dir.parent.name}/{sweep_dir.name}", "",
             f"{len(recs)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), "",
             "log2 η* per size with its 95% bootstrap interval over seeds in brackets (none where a size's "
             "optimum has fewer than 2 seeds); verdict: `holds` (drift interval below 1 octave), `drifts` "
             "(slope interval excludes 0, |slope| ≥ 0.3) or `undetermined`.", ""]
    for axis in sorted({r.axis for r in results}):
        rows = [r for r in results if r.axis == axis]
        sizes = sorted({s for r in rows for s in r.curves})
        lines += [f"## {axis} (reference size {rows[0].ref_size})", "",
                  "| arm | " + " | ".join(f"log2 η* @{s}" for s in sizes)
                  + " | drift (oct) | slope | regret | violations | seed noise | verdict |",
                  "|---|" + "---|" * (len(sizes) + 6)]
        for r in rows:
            cells = []
            for s in sizes:
                opt = r.optima.get(s)
                cells.append("–" if opt is None else _ci(opt.log2_lr, r.intervals.get(s))
                             + (f" ({opt.flag})" if opt.flag else ""))
            noise = [v for v in r.seed_noise.values() if v is not None]
            lines.append(f"| {r.arm} | " + " | ".join(cells) + f" | {_ci(r.drift, r.drift_ci)} | "
                         f"{_ci(r.slope, r.slope_ci)} | {_ci(r.regret, r.regret_ci, 3)} | {_fmt(r.violations)} | "
                         f"{_fmt(max(noise), 3) if noise else '–'} | {r.verdict} |")
        lines.append("")
    if stale:
        lines += ["## Stale jobs (left out)", "", "Same arm, size, LR and seed as a newer job (a relaunch with "
                  "another fixed override?):", ""] + [f"- `{d}`" for d in stale] + [""]
    failed = _failed(recs)
    if failed:
        lines += ["## Failed jobs", "", "Left out of the curves (a failure is not a divergence); an optimum next to "
                  "one is flagged `next to failed` and its verdict is `undetermined`. Rerun them with "
                  "`sweep.rerun_failed=true`.", ""]
        lines += [f"- `{f['dir']}`: {f['error']}" for f in failed]
        lines.append("")
    lines += ["![loss vs learning rate](transfer_curves.png)", "", "![optimum vs size](optimum_vs_size.png)", ""]
    return "\n".join(lines + cost_markdown(cost))


def _task_extras(recs: list[dict[str, Any]]) -> tuple[str, ...]:
    """What the sweep's task asks its report to add (``Task.report_extras``)."""
    from hydra.utils import get_class

    target = (recs[0]["config"].get("task") or {}).get("_target_")
    try:
        return tuple(getattr(get_class(target), "report_extras", ())) if target else ()
    except Exception:  # noqa: BLE001 — a record of a task that no longer imports: the plain report
        return ()


def transfer_of(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[ArmAxis], list[str], dict[str, Any]] | None:
    """(records, analysed arms, stale dirs, transfer.json's content) of a sweep dir, written nowhere;
    None when it holds no finished job yet."""
    recs = records(sweep_dir)
    if not recs:
        return None
    pts, base = points(recs)
    pts, stale = dedupe(pts)
    results = analyse(pts, base) if pts else []
    if any(len(r.curves) > 1 for r in results):  # a one-axis sweep's base point also lies on the other axis
        results = [r for r in results if len(r.curves) > 1 or any(len(o.curves) > 1 for o in results if o.axis == r.axis)]
    transfer = {"sweep_dir": str(sweep_dir), "jobs": len(recs), "stale": stale,
                "status": dict(Counter(r["status"] for r in recs)), "failed": _failed(recs),
                "arms": [_entry(r, pts) for r in results], "cost": sweep_cost(recs, pts, base)}
    return recs, results, stale, transfer


def report(sweep_dir: str | Path, samples: bool | None = None) -> dict[str, Any] | None:
    """Write the report files into ``sweep_dir``; None when it holds no finished job yet. ``samples``
    (default: where the task's ``report_extras`` ask for it, image diffusion) adds sample grids, Fréchet distance and class accuracy of
    every arm and size's best run (src/eval/samples.py)."""
    sweep_dir = Path(sweep_dir)
    analysis = transfer_of(sweep_dir)
    if analysis is None:
        return None
    recs, results, stale, transfer = analysis
    write_table(recs, sweep_dir / "runs.csv")
    (sweep_dir / TRANSFER_FILE).write_text(json.dumps(transfer, indent=2, allow_nan=True))
    if results:
        plots.transfer_curves(results, sweep_dir / "transfer_curves.png")
        plots.optimum_vs_size(results, sweep_dir / "optimum_vs_size.png")
    text = _markdown(sweep_dir, recs, results, stale, transfer["cost"])
    if results and ("samples" in _task_extras(recs) if samples is None else samples):
        from src.eval import samples as sweep_samples

        (sweep_dir / "report.md").write_text(text)  # the transfer report stands even if sampling fails
        cache_dir = recs[0]["config"].get("paths", {}).get("cache_dir", ".cache/scaling-lab")
        try:
            rows = sweep_samples.evaluate_sweep(sweep_dir, transfer, cache_dir=cache_dir)
        except Exception as err:  # noqa: BLE001 — a report must not die on one unloadable run
            log.error("sample evaluation failed: %s", err)
            text += f"\n## Samples\n\nSample evaluation failed: {one_line(str(err))}\n"
        else:
            transfer["samples"] = rows
            (sweep_dir / TRANSFER_FILE).write_text(json.dumps(transfer, indent=2, allow_nan=True))
            text += "\n" + sweep_samples.markdown(rows)
    (sweep_dir / "report.md").write_text(text)
    return transfer


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m src.sweeps.report <sweep dir>", file=sys.stderr)
        return 2
    if report(argv[0]) is None:
        print(f"error: no metrics.json under {argv[0]}", file=sys.stderr)
        return 2
    print(f"report: {Path(argv[0]) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
