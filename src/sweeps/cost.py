"""What a sweep cost, and what the proxy search costs against training at the target.

Two units, both from each job's record: FLOPs as counted on the job's own steps (``cost.flops``,
src/training/flops.py) and wall time (``wall_time_s``: start-up, data, evaluation and logging as
well as compute; on small models these dominate, and FLOPs do not see them). A record without a
count (written before counting existed) makes every FLOP sum it enters unknown (None).

* **Per size** (of each axis with jobs trained at two sizes or more; the base size alone is not an
  axis): the jobs trained there and their summed cost, a twin counted once.
* **Per arm and axis**, as if the arm were swept alone (a twin costs what its first job cost):
  the proxy search C_proxy = the cost of every job of the arm at the reference size s_ref; one
  target run C_run = the median cost of the arm's finished (not diverged) jobs at the largest size;
  the direct search C_direct = the cost of every job of the arm at the largest size. The μTransfer
  economy is C_proxy / C_run (what tuning adds to one target run) and C_proxy / C_direct (what it
  saves against tuning at the target), each in percent.
* **Total**: every job that trained, once.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from typing import Any

UNITS = ("flops", "wall_time_s")


def _job_cost(record: dict[str, Any]) -> dict[str, float | None]:
    return {"flops": (record.get("cost") or {}).get("flops"), "wall_time_s": record.get("wall_time_s")}


def _sum(costs: list[dict[str, float | None]]) -> dict[str, float | None]:
    return {u: (None if any(c[u] is None for c in costs) else sum(c[u] for c in costs)) for u in UNITS}


def _median(costs: list[dict[str, float | None]]) -> dict[str, float | None]:
    return {u: (statistics.median(c[u] for c in costs) if costs and all(c[u] is not None for c in costs) else None)
            for u in UNITS}


def _percent(part: dict[str, float | None], whole: dict[str, float | None]) -> dict[str, float | None]:
    return {u: (100 * part[u] / whole[u] if part[u] is not None and whole[u] else None) for u in UNITS}


def sweep_cost(recs: list[dict[str, Any]], pts: list[dict[str, Any]], base: dict[str, int]) -> dict[str, Any]:
    """transfer.json's ``cost``: per axis and size, per arm and axis, and in total (module docstring).
    ``pts`` are the analysed points (one per job and axis it lies on, with ``trained_dir``) and
    ``base`` each axis's base size (s_ref when swept, as in the transfer analysis)."""
    trained = {r["dir"]: _job_cost(r) for r in recs if not r.get("twin_of") and r["status"] != "failed"}
    sizes: dict[tuple[str, int], set[str]] = defaultdict(set)
    arms: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for p in pts:
        if p["trained_dir"] in trained:
            sizes[(p["axis"], p["size"])].add(p["trained_dir"])
            arms[(p["arm"], p["axis"])][p["size"]].append(p)
    swept = Counter(axis for axis, _ in sizes)  # sizes trained per axis
    per_size = [{"axis": axis, "size": size, "jobs": len(dirs), **_sum([trained[d] for d in sorted(dirs)])}
                for (axis, size), dirs in sorted(sizes.items()) if swept[axis] > 1]
    per_arm = []
    for (arm, axis), by_size in arms.items():
        if len(by_size) < 2:
            continue
        ref = base[axis] if base.get(axis) in by_size else min(by_size)
        target = max(by_size)
        proxy = _sum([trained[p["trained_dir"]] for p in by_size[ref]])
        run = _median([trained[p["trained_dir"]] for p in by_size[target] if math.isfinite(p["loss"])])
        direct = _sum([trained[p["trained_dir"]] for p in by_size[target]])
        per_arm.append({"arm": arm, "axis": axis, "proxy_size": ref, "target_size": target, "proxy_search": proxy,
                        "target_run": run, "direct_search": direct, "proxy_vs_target_run_pct": _percent(proxy, run),
                        "proxy_vs_direct_search_pct": _percent(proxy, direct)})
    return {"per_size": per_size, "per_arm": per_arm, "total": {"jobs": len(trained), **_sum(list(trained.values()))}}



def _flops(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _wall(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def _pct(pair: dict[str, float | None]) -> str:
    return " / ".join("–" if pair[u] is None else f"{pair[u]:.1f}%" for u in UNITS)


def markdown(cost: dict[str, Any]) -> list[str]:
    """The report's cost section."""
    total = cost["total"]
    lines = ["## Cost", "",
             f"{total['jobs']} jobs trained: {_flops(total['flops'])} FLOPs, {_wall(total['wall_time_s'])} of wall "
             "time. FLOPs are counted on each job's own steps (matrix products and attention); wall time "
             "also holds start-up, data, evaluation and logging, which dominate on small models. "
             "A twin counts once here, and as its first job's cost in an arm's search. – : unknown "
             "(a record without a count).", "",
             "| axis | size | jobs trained | FLOPs | wall time |", "|---|---|---|---|---|"]
    lines += [f"| {r['axis']} | {r['size']} | {r['jobs']} | {_flops(r['flops'])} | {_wall(r['wall_time_s'])} |"
              for r in cost["per_size"]]
    lines += ["", "Per arm: the proxy search (every job at the reference size) against one target run (the "
              "median finished job at the largest size) and against the same search at the target; "
              "percentages as FLOPs / wall time.", "",
              "| arm | axis | proxy → target | proxy search | one target run | direct target search "
              "| proxy / one target run | proxy / direct search |", "|---|---|---|---|---|---|---|---|"]
    for r in cost["per_arm"]:
        cells = [f"{_flops(r[k]['flops'])} FLOPs, {_wall(r[k]['wall_time_s'])}"
                 for k in ("proxy_search", "target_run", "direct_search")]
        lines.append(f"| {r['arm']} | {r['axis']} | {r['proxy_size']} → {r['target_size']} | " + " | ".join(cells)
                     + f" | {_pct(r['proxy_vs_target_run_pct'])} | {_pct(r['proxy_vs_direct_search_pct'])} |")
    return lines + [""]
