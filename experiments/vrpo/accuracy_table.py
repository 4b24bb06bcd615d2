"""The SFT / naive DPO / VRPO comparison table from finished runs (mean ± sd over seeds).

    .venv/bin/python experiments/vrpo/accuracy_table.py outputs/llada_sft outputs/llada_vrpo

Reads every ``<sft root>/seed<k>/metrics.json`` and ``<vrpo root>/seed<k>-<vrpo|naive_dpo>/metrics.json``:
held-out exact-match accuracy of greedy samples (``val/accuracy``), held-out preference accuracy with
fixed antithetic draws (``val/preference_accuracy``), and the standard deviation of the logged
training loss (``csv/version_0/metrics.csv``) as a smoothness measure.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path


def _final(run: Path, key: str) -> float | None:
    return json.loads((run / "metrics.json").read_text())["metrics"]["final"].get(key)


def _loss_std(run: Path) -> float | None:
    path = run / "csv" / "version_0" / "metrics.csv"
    if not path.exists():
        return None
    with open(path) as f:
        values = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return statistics.stdev(values) if len(values) > 1 else None


def _cell(values: list[float | None], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f} (n={len(values)})"


def main(sft_root: str, vrpo_root: str) -> None:
    rows = {"SFT": sorted(Path(sft_root).glob("seed*"))}
    for method in ("naive_dpo", "vrpo"):
        rows[method] = sorted(Path(vrpo_root).glob(f"seed*-{method}"))
    print("| method | held-out answer accuracy | held-out preference accuracy | train loss std |")
    print("|---|---|---|---|")
    for name, runs in rows.items():
        runs = [r for r in runs if (r / "metrics.json").exists()]
        print(f"| {name} | {_cell([_final(r, 'val/accuracy') for r in runs])} | "
              f"{_cell([_final(r, 'val/preference_accuracy') for r in runs])} | "
              f"{_cell([_loss_std(r) for r in runs] if name != 'SFT' else [])} |")
        for r in runs:
            print(f"|   {r.name} | {_final(r, 'val/accuracy')} | {_final(r, 'val/preference_accuracy')} | |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
