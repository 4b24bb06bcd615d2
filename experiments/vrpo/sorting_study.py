"""The five-method preference comparison on the long-response sorting task (issue 16), resumable.

    .venv/bin/python experiments/vrpo/sorting_study.py            # every stage (hours on 2 cores)
    .venv/bin/python experiments/vrpo/sorting_study.py --table    # sorting_study.md from what has run
    .venv/bin/python experiments/vrpo/sorting_study.py --seeds 0 --lrs 1e-4 -- steps=20   # overrides after --

Stages, each run a ``python -m src.run`` into its own dir under ``--root`` (a dir that holds a record
is kept, so a relaunch continues). Every finished run's record and answers (a few KB, never weights)
are copied to ``--records`` (committed), and a relaunch restores them first, so the same command on a
fresh clone continues the study. A preference run still to train needs its SFT run's weights; where
only the SFT record was restored, the SFT run is trained again (a run is a pure function of its config
and seed on CPU) and must reproduce its recorded held-out loss.

1. SFT on ``data=sorting`` for every seed (the ``llada_sft`` recipe, 1200 steps).
2. The search, seed 0 only: every method over its grid (LR, and β for the DPO methods), scored by
   greedy exact match on the *even* held-out rows (``src.eval.answers``' ``row_hits``).
3. Every other seed at each method's selected settings.
4. The table (``--table``): greedy and T = 1 exact match on the *odd* held-out rows (never used to
   select), held-out preference accuracy and DPO loss (``val/preference_accuracy``, ``val/loss``), per
   method as mean ± sd over seeds, and the paired differences (same seed, same SFT start) against
   VRPO with 95% t intervals over seeds and a verdict the interval decides.

Methods (``experiment=llada_vrpo``, which adds the SFT term of weight 1 to every DPO run):
``sft_chosen`` (the SFT term alone, ``task.dpo_weight=0``), ``naive_dpo`` (n_t = 1, independent
draws), ``naive_dpo_budget`` (naive DPO with 8× the pairs per step: VRPO's forward passes per step),
``vrpo`` (n_t = 8, antithetic). SFT itself is the fifth row.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from src.records import read_record, resumable_checkpoint  # noqa: E402

RECORDS = ROOT / "experiments" / "vrpo" / "sorting_records"
KEPT = ("config.yaml", "metrics.json", "answers_T0.json", "answers_T1.json")  # what a relaunch needs of a run
SEEDS = (0, 1, 2)
SFT = ["experiment=llada_sft", "data=sorting", "steps=1200", "val_every=600", "ckpt_every=1200"]
PREFERENCE = ["experiment=llada_vrpo", "data.max_length=72", "steps=300"]
METHODS = {
    "sft_chosen": ["vrpo=naive_dpo", "task.dpo_weight=0"],
    "naive_dpo": ["vrpo=naive_dpo"],
    "naive_dpo_budget": ["vrpo=naive_dpo", "data.batch_size=256"],
    "vrpo": ["vrpo=vrpo"],
}
LRS = (3e-5, 1e-4)  # the llada_vrpo recipe's 1e-4 and a third of it
BETAS = (0.1, 0.5)  # around the recipe's 0.2
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t quantiles


def grid(method: str, lrs=LRS, betas=BETAS) -> list[dict[str, float]]:
    """The search of one method: LR, and β for the methods with a DPO term."""
    betas = (None,) if method == "sft_chosen" else betas
    return [{"lr": lr, **({} if beta is None else {"beta": beta})} for lr in lrs for beta in betas]


def run_name(method: str, hp: dict[str, float]) -> str:
    return "-".join([method, *(f"{k}{v:g}" for k, v in hp.items())])


def finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (not an interrupted or failed one)."""
    record = read_record(run_dir)
    return record is not None and record["status"] in ("ok", "diverged")


def launch(run_dir: Path, args: list[str], extra: list[str]) -> Path:
    """Train into ``run_dir`` unless it holds a finished run (``resume=auto`` continues an interrupted
    one from its checkpoint); then its greedy and T = 1 answers."""
    if not finished(run_dir):
        command = [sys.executable, "-m", "src.run", *args, *extra, "resume=auto", f"hydra.run.dir={run_dir}"]
        print("+", " ".join(command[1:]), flush=True)
        if subprocess.run(command, cwd=ROOT).returncode != 0 or not finished(run_dir):
            raise SystemExit(f"{run_dir}: the run did not finish")
    for temperature, draws in ((0, 1), (1, 2)):
        if not (run_dir / f"answers_T{temperature:g}.json").exists():
            subprocess.run([sys.executable, "-m", "src.eval.answers", str(run_dir), "--temperature", str(temperature),
                            "--draws", str(draws)], cwd=ROOT, check=True)
    return run_dir


def restore(root: Path, records: Path) -> None:
    """Copy every archived run (and the search's selection) into ``root`` where ``root`` has none."""
    if (records / "selected.json").exists() and not (root / "selected.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy2(records / "selected.json", root / "selected.json")
    for record in sorted(records.rglob("metrics.json")):
        run_dir = root / record.parent.relative_to(records)
        if all((record.parent / name).exists() for name in KEPT) and not (run_dir / "metrics.json").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in KEPT:
                shutil.copy2(record.parent / name, run_dir / name)


def archive(run_dir: Path, root: Path, records: Path) -> None:
    """Copy a finished run's ``KEPT`` files to ``records`` under its path in ``root``; an archived
    record is never replaced."""
    target = records / run_dir.relative_to(root)
    if finished(run_dir) and not (target / "metrics.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            shutil.copy2(run_dir / name, target / name)


def _identity(record: dict) -> tuple[str, float]:
    """What a retrained run must reproduce: its config hash (the preference runs' hashes hold it,
    through ``init_from``) and its final held-out loss."""
    return record["config_hash"], record["metrics"]["final"]["val/loss"]


def sft_run(root: Path, seed: int, extra: list[str], records: Path, weights: bool = False) -> Path:
    """The SFT run of ``seed``: trained unless it has finished here. With ``weights`` (a preference
    run is about to start from it), a restored record without its checkpoint is trained again and
    must reproduce ``_identity``; if it does not, the new run is moved aside, the archived record put
    back, and the driver stops."""
    run_dir = root / "sft" / f"seed{seed}"
    if not (weights and finished(run_dir) and resumable_checkpoint(run_dir) is None):
        launch(run_dir, [*SFT, f"seed={seed}"], extra)
        archive(run_dir, root, records)
        return run_dir
    recorded = _identity(read_record(run_dir))
    for name in ("config.yaml", "metrics.json"):  # copies of the archive's; its answers are kept
        (run_dir / name).unlink()
    launch(run_dir, [*SFT, f"seed={seed}"], extra)
    if (again := _identity(read_record(run_dir))) != recorded:
        aside = run_dir.with_name(f"{run_dir.name}.not-reproduced")
        shutil.rmtree(aside, ignore_errors=True)
        run_dir.rename(aside)
        restore(root, records)
        raise SystemExit(f"{run_dir}: trained again, (config hash, val/loss) {again} against the recorded "
                         f"{recorded}: the run does not reproduce on this machine (new run in {aside}; remove "
                         f"its seed's runs from {records} to run that seed afresh)")
    return run_dir


def preference(root: Path, method: str, hp: dict[str, float], seed: int, extra: list[str], sft_extra: list[str],
               records: Path) -> Path:
    """One preference run from the SFT run of its seed, on ``extra``'s data.prompts × data.samples."""
    run_dir = root / run_name(method, hp) / f"seed{seed}"
    sft = root / "sft" / f"seed{seed}"
    if not finished(run_dir):
        sft_run(root, seed, sft_extra, records, weights=True)
    args = [*PREFERENCE, *METHODS[method], f"seed={seed}", f"init_from={sft}", f"optimizer.lr={hp['lr']}",
            *([f"task.beta={hp['beta']}"] if "beta" in hp else [])]
    launch(run_dir, args, extra)
    archive(run_dir, root, records)
    return run_dir


def half(run_dir: Path, temperature: float, parity: int) -> float:
    """Exact match over the held-out rows of one parity (0: selection, 1: report), over the draws."""
    result = json.loads((run_dir / f"answers_T{temperature:g}.json").read_text())
    rows = result["row_hits"][parity::2]
    return sum(rows) / (len(rows) * result["draws"])


def selected(root: Path, hps: list[dict[str, float]], seed: int, method: str) -> dict[str, float]:
    """The grid point of ``method`` with the best greedy exact match of the search seed on the
    selection rows (the first grid point on a tie)."""
    scores = [(half(root / run_name(method, hp) / f"seed{seed}", 0, 0), -i, hp) for i, hp in enumerate(hps)]
    return max(scores, key=lambda t: t[:2])[2]


def run_all(root: Path, extra: list[str], seeds=SEEDS, lrs=LRS, betas=BETAS,
            pairs: tuple[int, int] = (2048, 4), records: Path = RECORDS) -> None:
    """Every stage; ``pairs``: the training prompts sampled from each SFT run and the answers per prompt."""
    restore(root, records)
    for seed in seeds:
        sft_run(root, seed, extra, records)
    pref_extra = [*extra, f"data.prompts={pairs[0]}", f"data.samples={pairs[1]}"]
    for method in METHODS:
        for hp in grid(method, lrs, betas):
            preference(root, method, hp, seeds[0], pref_extra, extra, records)
    choice = {method: selected(root, grid(method, lrs, betas), seeds[0], method) for method in METHODS}
    for path in (root, records):
        (path / "selected.json").write_text(json.dumps({"seeds": list(seeds), "methods": choice}, indent=1))
    for seed in seeds[1:]:
        for method, hp in choice.items():
            preference(root, method, hp, seed, pref_extra, extra, records)


def metrics(run_dir: Path) -> dict[str, float]:
    final = json.loads((run_dir / "metrics.json").read_text())["metrics"]["final"]
    return {"greedy": half(run_dir, 0, 1), "sampled": half(run_dir, 1, 1),
            "preference_accuracy": final.get("val/preference_accuracy", math.nan), "dpo_loss": final.get("val/loss",
                                                                                                         math.nan)}


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval over seeds."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half_width = T975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half_width, mean + half_width


def verdict(low: float, high: float) -> str:
    return "above" if low > 0 else "below" if high < 0 else "undetermined"


def _cell(values: list[float]) -> str:
    """mean ± sd over seeds of the finite values ("–" when there are none: SFT has no DPO loss)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "–"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}"


def table(root: Path) -> str:
    stored = json.loads((root / "selected.json").read_text())
    seeds, choice = stored["seeds"], stored["methods"]
    runs = {"sft": {s: root / "sft" / f"seed{s}" for s in seeds}}
    runs |= {m: {s: root / run_name(m, hp) / f"seed{s}" for s in seeds} for m, hp in choice.items()}
    done = {m: {s: metrics(d) for s, d in by_seed.items() if (d / "answers_T1.json").exists()}
            for m, by_seed in runs.items()}
    keys = ("greedy", "sampled", "preference_accuracy", "dpo_loss")
    lines = ["| method | settings | seeds | " + " | ".join(keys) + " |", "|---" * (3 + len(keys)) + "|"]
    for m, by_seed in done.items():
        cells = [_cell([by_seed[s][k] for s in by_seed]) for k in keys]
        lines.append(f"| {m} | {choice.get(m, '–')} | {len(by_seed)} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference (same seed) | metric | mean [95% t interval] | verdict |", "|---|---|---|---|"]
    for other in (m for m in done if m != "vrpo"):
        seeds = sorted(set(done["vrpo"]) & set(done[other]))
        for k in keys[:2]:
            mean, low, high = interval([done["vrpo"][s][k] - done[other][s][k] for s in seeds]) if seeds else (
                math.nan, math.nan, math.nan)
            lines.append(f"| vrpo − {other} (n={len(seeds)}) | {k} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] | "
                         f"{verdict(low, high) if len(seeds) > 1 else 'undetermined'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "vrpo_sorting_study")
    parser.add_argument("--records", type=Path, default=RECORDS, help="the committed copy of every finished run")
    parser.add_argument("--table", action="store_true", help="only write the table from finished runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="the first is the search seed")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    parser.add_argument("--betas", type=float, nargs="+", default=list(BETAS))
    parser.add_argument("--prompts", type=int, default=2048, help="training prompts sampled from each SFT run")
    parser.add_argument("--samples", type=int, default=4, help="answers per prompt")
    parser.add_argument("overrides", nargs="*", help="added to every run (e.g. a smaller model for a smoke test)")
    args = parser.parse_args(argv)
    if not args.table:
        run_all(args.root, args.overrides, tuple(args.seeds), tuple(args.lrs), tuple(args.betas),
                (args.prompts, args.samples), args.records)
    else:
        restore(args.root, args.records)
    text = table(args.root)
    (args.root / "sorting_study.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
