"""The five-method preference comparison on the long-response sorting task (issue 16), resumable.

    .venv/bin/python experiments/vrpo/sorting_study.py            # every stage (hours on 2 cores)
    .venv/bin/python experiments/vrpo/sorting_study.py --table    # sorting_study.md from what has run
    .venv/bin/python experiments/vrpo/sorting_study.py --seeds 1 --lrs 1e-4 -- steps=20   # overrides after --

Stages, each run a ``python -m src.run`` into its own dir under ``--root`` (a dir that holds a record
is kept, so a relaunch continues). Every finished run's record and answers (a few KB, never weights)
are copied to ``--records`` (committed), and a relaunch restores them first, so the same command on a
fresh clone continues the study. A preference run still to train needs the SFT run's weights; where
only the SFT record was restored, the SFT run is trained again (a run is a pure function of its config
and seed on CPU) and must reproduce its recorded config hash and held-out loss.

1. One SFT run on ``data=sorting`` (the ``llada_sft`` recipe, 1200 steps, seed 0, 512 held-out
   lists). Every preference run starts from it and trains on one set of pairs sampled from it
   (``data.pairs_seed``), as the paper aligns one SFT model on one preference set; a run's seed
   varies its batch order and its Monte Carlo draws.
2. The search, on the search seed (0) only, the same for every method: the LR over ``--lrs`` at
   β = 0.2, then β over ``--betas`` at the best LR (the DPO methods); scored by exact match on the
   *even* held-out rows, greedy and T = 1 pooled (three answers per row).
3. The report seeds (1, 2, 3 by default: never the search seed, whose selected runs won a
   selection on it) at each method's selected settings. On the first report seed naive DPO and VRPO
   keep snapshots every 100 steps and ``score_noise.py`` measures Var ŝ against s² over training.
4. The table (``--table``): greedy and T = 1 exact match on the *odd* held-out rows (never used to
   select), held-out preference accuracy and DPO loss (at the method's own β), per method as mean ±
   sd over the report seeds, how many runs diverged, the paired differences (same seed) against
   VRPO with 95% t intervals and a verdict the interval decides, and the score-noise table.

Methods (``experiment=llada_vrpo``, which adds the SFT term of weight 1 to every DPO run):
``sft_chosen`` (the SFT term alone, ``task.dpo_weight=0``), ``naive_dpo`` (n_t = 1, independent
draws), ``naive_dpo_budget`` (naive DPO with n_t× the pairs per step: VRPO's forward passes per
step), ``vrpo`` (n_t = 4, n_yt = 1, antithetic). SFT itself is the fifth row. n_t = 4, not the
paper's 8, halves the two expensive arms (the variance study: Var ŝ at n = 4 is 1.9× that at n = 8,
against 7.4× at n = 1). Validation runs once, at the last step.
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
NOISE_FILE = "score_noise.json"  # kept too, where a run has it
SFT_SEED, SEARCH_SEED, SEEDS = 0, 0, (1, 2, 3)
SFT = ["experiment=llada_sft", "data=sorting", "steps=1200", "val_every=1200", "ckpt_every=1200",
       "data.val_size=512", f"seed={SFT_SEED}"]
STEPS, N_T = 300, 4
PREFERENCE = ["experiment=llada_vrpo", "data.max_length=72", f"steps={STEPS}", f"val_every={STEPS}",
              f"ckpt_every={STEPS}", "task.sample_accuracy=false", f"data.pairs_seed={SFT_SEED}"]
METHODS = {
    "sft_chosen": ["vrpo=naive_dpo", "task.dpo_weight=0"],
    "naive_dpo": ["vrpo=naive_dpo"],
    "naive_dpo_budget": ["vrpo=naive_dpo", f"data.batch_size={32 * N_T}"],
    "vrpo": ["vrpo=vrpo", f"vrpo.n_t={N_T}"],
}
NOISE_METHODS, NOISE_EVERY = ("naive_dpo", "vrpo"), 100
LRS = (3e-5, 1e-4, 3e-4)  # the llada_vrpo recipe's 1e-4, a third and three times it
BETA, BETAS = 0.2, (0.1, 0.5)  # the recipe's β, then one below and one above
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t quantiles


def run_name(method: str, hp: dict[str, float]) -> str:
    return "-".join([method, *(f"{k}{v:g}" for k, v in hp.items())])


def lr_stage(method: str, lrs=LRS) -> list[dict[str, float]]:
    """The first search stage: every LR, at the recipe's β for the methods with a DPO term."""
    return [{"lr": lr} if method == "sft_chosen" else {"lr": lr, "beta": BETA} for lr in lrs]


def beta_stage(method: str, lr: float, betas=BETAS) -> list[dict[str, float]]:
    """The second stage: the other β values at the selected LR (none for the SFT-only method)."""
    return [] if method == "sft_chosen" else [{"lr": lr, "beta": b} for b in betas if b != BETA]


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
            for name in (*KEPT, NOISE_FILE):
                if (record.parent / name).exists():
                    shutil.copy2(record.parent / name, run_dir / name)


def archive(run_dir: Path, root: Path, records: Path) -> None:
    """Copy a finished run's ``KEPT`` files (and its score-noise table) to ``records`` under its path in
    ``root``; an archived file is never replaced."""
    target = records / run_dir.relative_to(root)
    if not finished(run_dir):
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in (*KEPT, NOISE_FILE):
        if (run_dir / name).exists() and not (target / name).exists():
            shutil.copy2(run_dir / name, target / name)


def _identity(record: dict) -> tuple[str, float]:
    """What a retrained run must reproduce: its config hash (the preference runs' hashes hold it,
    through ``init_from``) and its final held-out loss."""
    return record["config_hash"], record["metrics"]["final"]["val/loss"]


def sft_run(root: Path, extra: list[str], records: Path, weights: bool = False) -> Path:
    """The SFT run: trained unless it has finished here. With ``weights`` (a preference run is about
    to start from it), a restored record without its checkpoint is trained again and must reproduce
    ``_identity``; if it does not, the new run is moved aside, the archived record put back, and the
    driver stops."""
    run_dir = root / "sft"
    if not (weights and finished(run_dir) and resumable_checkpoint(run_dir) is None):
        launch(run_dir, SFT, extra)
        archive(run_dir, root, records)
        return run_dir
    recorded = _identity(read_record(run_dir))
    for name in ("config.yaml", "metrics.json"):  # copies of the archive's; its answers are kept
        (run_dir / name).unlink()
    launch(run_dir, SFT, extra)
    if (again := _identity(read_record(run_dir))) != recorded:
        aside = run_dir.with_name(f"{run_dir.name}.not-reproduced")
        shutil.rmtree(aside, ignore_errors=True)
        run_dir.rename(aside)
        restore(root, records)
        raise SystemExit(f"{run_dir}: trained again, (config hash, val/loss) {again} against the recorded "
                         f"{recorded}: the run does not reproduce on this machine (new run in {aside}; remove "
                         f"{records} to run the study afresh)")
    return run_dir


def preference(root: Path, method: str, hp: dict[str, float], seed: int, extra: list[str], sft_extra: list[str],
               records: Path, noise: bool = False) -> Path:
    """One preference run from the SFT run, on ``extra``'s data.prompts × data.samples; ``noise``: keep
    snapshots and measure the score noise over training (``score_noise.json``)."""
    run_dir = root / run_name(method, hp) / f"seed{seed}"
    sft = root / "sft"
    if not finished(run_dir):
        sft_run(root, sft_extra, records, weights=True)
    args = [*PREFERENCE, *METHODS[method], f"seed={seed}", f"init_from={sft}", f"optimizer.lr={hp['lr']}",
            *([f"task.beta={hp['beta']}"] if "beta" in hp else []), *([f"snapshot_every={NOISE_EVERY}"] if noise else [])]
    launch(run_dir, args, extra)
    if noise and not (run_dir / NOISE_FILE).exists():
        subprocess.run([sys.executable, str(ROOT / "experiments" / "vrpo" / "score_noise.py"), str(run_dir),
                        "--n-t", str(N_T)], cwd=ROOT, check=True)
    archive(run_dir, root, records)
    return run_dir


def half(run_dir: Path, temperature: float, parity: int) -> float:
    """Exact match over the held-out rows of one parity (0: selection, 1: report), over the draws."""
    result = json.loads((run_dir / f"answers_T{temperature:g}.json").read_text())
    rows = result["row_hits"][parity::2]
    return sum(rows) / (len(rows) * result["draws"])


def selection_score(run_dir: Path) -> float:
    """Exact match on the even rows over the greedy answer and the two T = 1 draws (three per row)."""
    hits = [json.loads((run_dir / f"answers_T{t}.json").read_text()) for t in (0, 1)]
    return sum(sum(h["row_hits"][0::2]) for h in hits) / sum(len(h["row_hits"][0::2]) * h["draws"] for h in hits)


def selected(root: Path, hps: list[dict[str, float]], seed: int, method: str) -> dict[str, float]:
    """The grid point of ``method`` with the best selection score on the search seed (the first on a tie)."""
    scores = [(selection_score(root / run_name(method, hp) / f"seed{seed}"), -i, hp) for i, hp in enumerate(hps)]
    return max(scores, key=lambda t: t[:2])[2]


def search(root: Path, method: str, run, lrs=LRS, betas=BETAS) -> dict[str, float]:
    """Both stages of one method's search (``run(hp)`` trains a grid point on the search seed)."""
    first = lr_stage(method, lrs)
    for hp in first:
        run(hp)
    best = selected(root, first, SEARCH_SEED, method)
    second = beta_stage(method, best["lr"], betas)
    for hp in second:
        run(hp)
    return selected(root, [best, *second], SEARCH_SEED, method)


def run_all(root: Path, extra: list[str], seeds=SEEDS, lrs=LRS, betas=BETAS,
            pairs: tuple[int, int] = (2048, 4), records: Path = RECORDS) -> None:
    """Every stage; ``pairs``: the training prompts sampled from the SFT run and the answers per prompt."""
    if SEARCH_SEED in seeds:
        raise SystemExit(f"--seeds {list(seeds)}: seed {SEARCH_SEED} is the search's; report on other seeds")
    restore(root, records)
    sft_run(root, extra, records)
    pref_extra = [*extra, f"data.prompts={pairs[0]}", f"data.samples={pairs[1]}"]
    choice = {method: search(root, method, lambda hp, m=method: preference(
        root, m, hp, SEARCH_SEED, pref_extra, extra, records), lrs, betas) for method in METHODS}
    for path in (root, records):
        (path / "selected.json").write_text(json.dumps({"search_seed": SEARCH_SEED, "seeds": list(seeds),
                                                        "methods": choice}, indent=1))
    for seed in seeds:
        for method, hp in choice.items():
            preference(root, method, hp, seed, pref_extra, extra, records,
                       noise=seed == seeds[0] and method in NOISE_METHODS)


def metrics(run_dir: Path, sft: bool = False) -> dict[str, float]:
    record = json.loads((run_dir / "metrics.json").read_text())
    final = record["metrics"]["final"]
    return {"greedy": half(run_dir, 0, 1), "sampled": half(run_dir, 1, 1),
            "preference_accuracy": final.get("val/preference_accuracy", math.nan),
            "dpo_loss": math.nan if sft else final.get("val/loss", math.nan),  # SFT's val/loss is the masked-LM loss
            "diverged": float(record["status"] == "diverged")}


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
    """mean ± sd over seeds of the finite values (the value alone for one run; "–" when there are none:
    SFT has no DPO loss)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "–"
    return f"{values[0]:.3f}" if len(values) == 1 else f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


KEYS = ("greedy", "sampled", "preference_accuracy", "dpo_loss")


def table(root: Path) -> str:
    stored = json.loads((root / "selected.json").read_text())
    seeds, choice = stored["seeds"], stored["methods"]
    sft = root / "sft"
    done = {"sft": {s: metrics(sft, sft=True) for s in seeds} if (sft / "answers_T1.json").exists() else {}}
    shared = {"sft"}  # one run, the start of every seed's: its row has no seed spread
    for m, hp in choice.items():
        runs = {s: root / run_name(m, hp) / f"seed{s}" for s in seeds}
        done[m] = {s: metrics(d) for s, d in runs.items() if (d / "answers_T1.json").exists()}
    lines = [f"Report seeds {seeds} (the search ran on seed {stored.get('search_seed', '?')}); SFT is one run, "
             "the start of every other.", "",
             "| method | settings | seeds | diverged | " + " | ".join(KEYS) + " |", "|---" * (4 + len(KEYS)) + "|"]
    for m, by_seed in done.items():
        values = [by_seed[s] for s in by_seed][:1] if m in shared else list(by_seed.values())
        cells = [_cell([v[k] for v in values]) for k in KEYS]
        diverged = int(sum(v["diverged"] for v in values))
        runs = "1 (shared)" if m in shared and values else len(values)
        lines.append(f"| {m} | {choice.get(m, '–')} | {runs} | {diverged} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference (same seed) | metric | mean [95% t interval] | verdict |", "|---|---|---|---|"]
    for other in (m for m in done if m != "vrpo"):
        common = sorted(set(done.get("vrpo", {})) & set(done[other]))
        for k in KEYS[:2]:
            mean, low, high = interval([done["vrpo"][s][k] - done[other][s][k] for s in common]) if common else (
                math.nan, math.nan, math.nan)
            lines.append(f"| vrpo − {other} (n={len(common)}) | {k} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] | "
                         f"{verdict(low, high) if len(common) > 1 else 'undetermined'} |")
    return "\n".join(lines + noise_lines(root, choice, seeds)) + "\n"


def noise_lines(root: Path, choice: dict[str, dict], seeds: list[int]) -> list[str]:
    """The score-noise tables of the first report seed's naive DPO and VRPO runs, where measured."""
    lines = []
    for m in (m for m in NOISE_METHODS if m in choice):
        path = root / run_name(m, choice[m]) / f"seed{seeds[0]}" / NOISE_FILE
        if not path.exists():
            continue
        lines += ["", f"Score noise along the {m} run (seed {seeds[0]}): s from the VRPO draws; Var ŝ and the "
                  "wrong-sign share per estimator", "",
                  "| step | mean \\|s\\| | Var ŝ naive / s² | wrong sign naive | Var ŝ VRPO / s² | wrong sign VRPO |",
                  "|---|---|---|---|---|---|"]
        for row in json.loads(path.read_text()):
            lines.append(f"| {row['step']} | {row['mean_abs_s']:.3f} | {row['noise_to_signal_naive']:.2f} | "
                         f"{row['wrong_sign_naive']:.2f} | {row['noise_to_signal_vrpo']:.2f} | {row['wrong_sign_vrpo']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "vrpo_sorting_study")
    parser.add_argument("--records", type=Path, default=RECORDS, help="the committed copy of every finished run")
    parser.add_argument("--table", action="store_true", help="only write the table from finished runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="the report seeds (not 0)")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    parser.add_argument("--betas", type=float, nargs="+", default=list(BETAS), help="besides 0.2")
    parser.add_argument("--prompts", type=int, default=2048, help="training prompts sampled from the SFT run")
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
