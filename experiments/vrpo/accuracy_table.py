"""The SFT / naive DPO / VRPO comparison table from finished runs (mean ± sd over seeds).

    .venv/bin/python experiments/vrpo/accuracy_table.py outputs/llada_sft outputs/llada_vrpo_sft1 [more roots]

Reads ``<sft root>/seed<k>`` and, per preference root (one recipe each), ``<root>/seed<k>-<method>``
(method: vrpo, naive_dpo, sft_only, ...). Columns: held-out exact-match accuracy of greedy answers
(``val/accuracy``), its change against the SFT run of the same seed, the accuracy of answers sampled
at temperature 1 (``answers_T1.json`` from ``python -m src.eval.answers <run> --temperature 1``),
held-out preference accuracy with fixed antithetic draws, and the standard deviation of the logged
training loss as a smoothness measure. Then the paired differences between methods of one recipe
(same seed, same SFT start), and every run's numbers.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path


def _final(run: Path, key: str) -> float | None:
    return json.loads((run / "metrics.json").read_text())["metrics"]["final"].get(key)


def _sampled(run: Path) -> float | None:
    path = run / "answers_T1.json"
    return json.loads(path.read_text())["accuracy"] if path.exists() else None


def _loss_std(run: Path) -> float | None:
    path = run / "csv" / "version_0" / "metrics.csv"
    if not path.exists():
        return None
    with open(path) as f:
        values = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return statistics.stdev(values) if len(values) > 1 else None


def _cell(values: list[float | None], signed: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.3f} ± {sd:.3f}"


def _seed(run: Path) -> int:
    return int(re.match(r"seed(\d+)", run.name).group(1))


def _finished(runs: list[Path]) -> list[Path]:
    return sorted((r for r in runs if (r / "metrics.json").exists()), key=_seed)


def main(sft_root: str, *roots: str) -> None:
    sft = {_seed(r): r for r in _finished(list(Path(sft_root).glob("seed*")))}
    print("| recipe | method | seeds | greedy accuracy | Δ vs SFT (same seed) | sampled accuracy (T = 1) | "
          "preference accuracy | train-loss std |")
    print("|---|---|---|---|---|---|---|---|")
    runs = list(sft.values())
    print(f"| – | SFT | {', '.join(map(str, sft))} | {_cell([_final(r, 'val/accuracy') for r in runs])} | – | "
          f"{_cell([_sampled(r) for r in runs])} | – | – |")
    for root in map(Path, roots):
        methods = sorted({p.name.split("-", 1)[1] for p in root.glob("seed*-*")})
        for method in methods:
            runs = _finished(list(root.glob(f"seed*-{method}")))
            delta = [_final(r, "val/accuracy") - _final(sft[_seed(r)], "val/accuracy") for r in runs]
            print(f"| {root.name} | {method} | {', '.join(str(_seed(r)) for r in runs)} | "
                  f"{_cell([_final(r, 'val/accuracy') for r in runs])} | {_cell(delta, signed=True)} | "
                  f"{_cell([_sampled(r) for r in runs])} | "
                  f"{_cell([_final(r, 'val/preference_accuracy') for r in runs])} | "
                  f"{_cell([_loss_std(r) for r in runs])} |")
    print()
    print("| recipe | paired difference (same seed) | greedy accuracy | sampled accuracy (T = 1) |")
    print("|---|---|---|---|")
    for root in map(Path, roots):
        for a, b in (("vrpo", "naive_dpo"), ("vrpo", "sft_only"), ("naive_dpo", "sft_only")):
            pairs = [(run, root / f"seed{_seed(run)}-{b}") for run in _finished(list(root.glob(f"seed*-{a}")))]
            pairs = [(x, y) for x, y in pairs if (y / "metrics.json").exists()]
            if pairs:
                greedy = [_final(x, "val/accuracy") - _final(y, "val/accuracy") for x, y in pairs]
                sampled = [None if None in (_sampled(x), _sampled(y)) else _sampled(x) - _sampled(y) for x, y in pairs]
                print(f"| {root.name} | {a} − {b} (n={len(pairs)}) | {_cell(greedy, signed=True)} | "
                      f"{_cell(sampled, signed=True)} |")
    print()
    print("Per seed, greedy / sampled accuracy:")
    for root in [Path(sft_root), *map(Path, roots)]:
        for run in _finished(list(root.glob("seed*"))):
            sampled = _sampled(run)
            print(f"  {root.name}/{run.name}: {_final(run, 'val/accuracy'):.3f} / "
                  f"{'–' if sampled is None else f'{sampled:.3f}'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
