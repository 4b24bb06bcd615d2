"""The optimizer-families study: the width–depth transfer sweep of every optimizer family, then one
table of intervals and verdicts.

    python experiments/optimizer_families/run.py                    # every family (hours; resumable)
    python experiments/optimizer_families/run.py --families adamw lion
    python experiments/optimizer_families/run.py --families muon_kimi --no-ln   # the depth axis without LayerNorm
    python experiments/optimizer_families/run.py --table            # the table from the committed records

Per family, two stages, each a ``python -m src.run experiment=gpt2_optimizer_families`` multirun into
``outputs/gpt2_optimizer_families/<family>`` that restores and archives its finished jobs in
``records/<family>.jsonl.gz`` (committed), so the same command continues on a fresh clone:

1. pilot: the base size only (every arm is SP there, so one job per LR) over log2 η ∈ PILOT, seed 0;
2. sweep: every arm and size over the 8 grid points from 4 octaves below to 3 above the pilot's
   grid optimum (recorded in grids.json), seed 0, then seeds 1 to 4 at each size's seed-mean
   optimum and its neighbours (src/sweeps/sweeper.py's seed passes). The pilot's jobs are the sweep's base-size jobs (same dirs).

``--no-ln`` runs the same two stages on the depth axis alone (width 32) with every LayerNorm removed,
under the key ``<family>_noln`` (sweep dir, records file, grid): the paper's caveat is that LayerNorm
lets SP, and so width-only μP, transfer over moderate depth, and that only a no-LN depth arm separates
the depth rules.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from src.sweeps import archive  # noqa: E402
from src.sweeps.collect import points, records  # noqa: E402
from src.sweeps.report import transfer_of  # noqa: E402
from src.sweeps.transfer import build_curves  # noqa: E402

FAMILIES = ["adamw", "lion", "sgd", "muon", "muon_kimi", "adafactor", "soap", "shampoo_grafted"]
PILOT = list(range(-14, 3))
GRID = range(-4, 4)  # around the pilot's optimum
GRIDS = HERE / "grids.json"
NO_LN = "_noln"  # the key suffix of a family's no-LayerNorm depth study
NO_LN_OVERRIDES = ("model.layernorm=false", "budget.widths=[32]")  # the base width alone: the depth axis


def sweep_dir(key: str) -> Path:
    return ROOT / "outputs" / "gpt2_optimizer_families" / key


def study_overrides(key: str) -> list[str]:
    """What a study key adds to the family's experiment: nothing for a family; for ``<family>_noln``,
    no LayerNorm, the depth axis only, and its own sweep dir and records file."""
    if not key.endswith(NO_LN):
        return []
    return [*NO_LN_OVERRIDES, f"hydra.sweep.dir={sweep_dir(key)}",
            f"sweep.records={(HERE / 'records' / key).relative_to(ROOT)}.jsonl.gz"]


def launch(key: str, *overrides: str) -> None:
    family = key.removesuffix(NO_LN)
    args = [sys.executable, "-m", "src.run", "experiment=gpt2_optimizer_families", f"sweep.optimizers=[{family}]",
            *study_overrides(key), *overrides]
    print("+", " ".join(args[1:]), flush=True)
    done = subprocess.run(args, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{key}: the sweep exited with {done.returncode}")


def pilot_optimum(key: str) -> int:
    """The grid argmin of the pilot's base-size curve (seed 0)."""
    pts, _ = points(records(sweep_dir(key)))
    curves = build_curves([p for p in pts if p["seed"] == 0 and p["log2_lr"] in PILOT and p["axis"] == "width"])
    base = min(next(iter(curves.values())))
    best = next(iter(curves.values()))[base].optimum().grid_log2_lr
    if best is None:
        raise SystemExit(f"{key}: every pilot LR diverged")
    return int(best)


def run_study(key: str) -> None:
    """The pilot (finished jobs are skipped, so a relaunch only fills in what is missing), the grid
    recorded in grids.json the first time (kept after that, so a relaunch sweeps the same grid), the
    sweep."""
    grids = json.loads(GRIDS.read_text()) if GRIDS.exists() else {}
    launch(key, "sweep.size=w32-d2", "sweep.arms=[sp]", "budget.extra_seeds=[]",
           f"budget.log2_lrs=[{','.join(map(str, PILOT))}]")
    if key not in grids:
        center = pilot_optimum(key)
        grids[key] = [center + k for k in GRID]
        GRIDS.write_text(json.dumps(grids, indent=1, sort_keys=True) + "\n")
    launch(key, f"budget.log2_lrs=[{','.join(map(str, grids[key]))}]")


def _cell(entry: dict, size: str) -> str:
    x, ci = entry["optimal_log2_lr"].get(size), entry["optimal_log2_lr_ci"].get(size)
    if x is None:
        return "all diverged"
    return f"{x:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and all(map(math.isfinite, ci)) else "")


def transfer(key: str) -> dict | None:
    """The study's transfer analysis from its committed records alone (restored into a scratch dir),
    so the table is the same on a fresh clone as beside the running study; None: no records yet."""
    with tempfile.TemporaryDirectory() as scratch:
        if not archive.restore(HERE / "records" / f"{key}.jsonl.gz", Path(scratch)):
            return None
        return json.loads(json.dumps(transfer_of(Path(scratch))[3], allow_nan=True))  # as transfer.json reads


def table() -> str:
    """One row per study (a family, then its no-LN depth study), arm and axis from the records."""
    lines = ["| study | arm | axis | log2 η* per size [95% interval] | drift (oct) | slope | regret | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for study in [key for f in FAMILIES for key in (f, f + NO_LN)]:
        if (analysis := transfer(study)) is None:
            continue
        for a in analysis["arms"]:
            sizes = [str(s) for s in a["sizes"]]
            fmt = lambda v, ci: "–" if v is None else f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")  # noqa: E731
            lines.append(f"| {study} | {a['arm'].split('/')[0]} | {a['axis']} {sizes[0]}→{sizes[-1]} | "
                         + "; ".join(_cell(a, s) for s in sizes)
                         + f" | {fmt(a['drift_octaves'], a['drift_ci'])} | {fmt(a['slope'], a['slope_ci'])} | "
                         f"{'–' if a['regret'] is None else format(a['regret'], '.3f')} | {a['verdict']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--no-ln", action="store_true", help="the depth axis without LayerNorm (<family>_noln)")
    parser.add_argument("--table", action="store_true", help="only write table.md from the committed records")
    args = parser.parse_args()
    if not args.table:
        for family in args.families:
            run_study(family + (NO_LN if args.no_ln else ""))
    (HERE / "table.md").write_text(table())
    print(f"table: {HERE / 'table.md'}")


if __name__ == "__main__":
    main()
