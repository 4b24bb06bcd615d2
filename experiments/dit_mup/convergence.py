"""Convergence at the target width: μP with the proxy's transferred learning rate against SP, the
DiT-μP paper's "2.9× faster convergence" at CPU scale.

    python experiments/dit_mup/convergence.py --sweep <width sweep dir> [--width 256] [--steps 1600]
        [--every 100] [--fd-every 400] [--seeds 0 1 2] [--study dit_mup_sweep] [--out outputs/dit_mup/convergence]

Three arms at ``--width``, each trained ``--steps`` steps per seed with the study's data, model and
AdamW (constant LR, as the paper trains):

* ``mup_transferred``: μP with ``mutransfer.from=<sweep>`` (the proxy's optimal base LR and HPs);
* ``sp_dit_recipe``: SP with the original DiT recipe, AdamW at a constant 1e-4, no weight decay;
* ``sp_best_grid``: SP at its own best grid LR at this width in the sweep (what SP needs a search
  at the target for).

Two metrics, each judged the same way: the held-out denoising loss, recorded every ``--every`` steps
(the record's ``metrics.history``), and the Fréchet distance of samples (src/eval/samples.py: every
class, fixed noise) of the weights kept every ``--fd-every`` steps (``snapshot_every``; 0: loss
only). Baseline M* = the seed-mean final value of ``sp_dit_recipe``; for each arm, the first
recorded step where its seed-mean value is ≤ M*; speed-up = ``--steps`` / that step, with a 95%
bootstrap interval over seeds (each replicate resamples every arm's seeds). Written to
``<out>/convergence.json`` and ``convergence.md``, with the curves in ``convergence.png``. Each run
lives in ``<out>/<arm>-s<seed>`` and its distances in ``fd.json`` there: a relaunch skips finished
runs and scored snapshots, and continues interrupted runs.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from src.eval.samples import evaluate_run  # noqa: E402
from src.records import snapshots  # noqa: E402
from src.sweeps.transfer import percentile_interval  # noqa: E402
from train_once import train_once  # noqa: E402

DIT_RECIPE_LR = 1e-4
BOOTSTRAP = 1000


def arms(sweep: Path, width: int) -> dict[str, list[str]]:
    """Each arm's overrides; SP's best grid LR read from the sweep's transfer.json."""
    transfer = json.loads((sweep / "transfer.json").read_text())
    sp = next((a for a in transfer["arms"] if a["arm"].startswith("sp/") and a["axis"] == "width"), None)
    best = sp and (sp.get("grid_log2_lr") or {}).get(str(width))
    if best is None:
        raise SystemExit(f"{sweep}/transfer.json has no SP grid optimum at width {width}")
    return {"mup_transferred": ["parametrization=mup", f"mutransfer.from={sweep}"],
            "sp_dit_recipe": ["parametrization=sp", f"optimizer.lr={DIT_RECIPE_LR}"],
            "sp_best_grid": ["parametrization=sp", f"optimizer.lr={2.0 ** best}"]}


def val_curve(record: dict) -> dict[int, float]:
    """step -> held-out loss, from the record's validation history."""
    return {h["step"]: h["val/loss"] for h in record["metrics"].get("history", []) if "val/loss" in h}


def first_step_at(curves: list[dict[int, float]], target: float) -> int | None:
    """The first step where the seed-mean loss is ≤ ``target`` (None: never)."""
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return next((s for s in steps if sum(c[s] for c in curves) / len(curves) <= target), None)


def analyse(curves: dict[str, list[dict[int, float]]], steps: int, rng: random.Random) -> dict:
    """Baseline value, steps to reach it and speed-up per arm, with bootstrap intervals over seeds."""
    def once(draw: dict[str, list[dict[int, float]]]) -> dict[str, float]:
        base = draw["sp_dit_recipe"]
        target = sum(c[max(c)] for c in base) / len(base)
        reach = {arm: first_step_at(cs, target) for arm, cs in draw.items()}
        return {arm: (steps / s if s else 0.0) for arm, s in reach.items()} | {"_target": target}

    point = once(curves)
    reps = [once({a: [rng.choice(cs) for _ in cs] for a, cs in curves.items()}) for _ in range(BOOTSTRAP)]
    target = point.pop("_target")
    return {"baseline": target, "arms": {
        arm: {"steps_to_baseline": first_step_at(cs, target), "speedup": point[arm],
              "speedup_ci": percentile_interval([r[arm] for r in reps]),
              "final": sum(c[max(c)] for c in cs) / len(cs)} for arm, cs in curves.items()}}


METRICS = {"loss": "held-out loss", "frechet_distance": "Fréchet distance of samples"}


def markdown(results: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [f"# Convergence at width {args.width}: {args.steps} steps, seeds {args.seeds}", "",
             f"Baseline: SP with the DiT recipe (constant {DIT_RECIPE_LR}), its seed-mean final value. Speed-up = "
             f"{args.steps} / the first step where an arm's seed-mean value is at or below the baseline; 95% "
             "bootstrap interval over seeds.", ""]
    for metric, result in results.items():
        lines += [f"## {METRICS[metric]} (baseline {result['baseline']:.4g})", "",
                  "| arm | final | steps to baseline | speed-up |", "|---|---|---|---|"]
        for arm, r in result["arms"].items():
            lo, hi = r["speedup_ci"]
            lines.append(f"| {arm} | {r['final']:.4g} | {r['steps_to_baseline'] or 'never'} | "
                         f"{r['speedup']:.2f}× [{lo:.2f}, {hi:.2f}] |")
        lines.append("")
    return "\n".join(lines + ["![held-out loss and Fréchet distance over training](convergence.png)", ""])


def plot(curves: dict[str, dict[str, list[dict[int, float]]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (metric, by_arm) in zip(axes[0], curves.items()):
        for arm, cs in by_arm.items():
            steps = sorted(set.intersection(*(set(c) for c in cs)))
            ax.plot(steps, [sum(c[s] for c in cs) / len(cs) for s in steps], marker="o", label=arm)
        ax.set(xlabel="step", ylabel=f"{METRICS[metric]} (seed mean)", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fd_curve(run_dir: Path, per_class: int, sample_steps: int) -> dict[int, float]:
    """step -> Fréchet distance of the snapshot's samples, scored once and kept in ``fd.json``."""
    path = run_dir / "fd.json"
    scored = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}
    for step, checkpoint in sorted(snapshots(run_dir).items()):
        if step not in scored:
            row = evaluate_run(run_dir, run_dir / f"samples_step{step}.png", per_class=per_class,
                               steps=sample_steps, checkpoint=checkpoint)
            scored[step] = row["frechet_distance"]
            path.write_text(json.dumps(scored, indent=2))
    return scored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True, help="the width sweep's dir (its transfer.json)")
    parser.add_argument("--study", default="dit_mup_sweep")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--fd-every", type=int, default=400, help="0: no Fréchet distance")
    parser.add_argument("--per-class", type=int, default=10, help="samples per class for the Fréchet distance")
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "dit_mup" / "convergence")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run (e.g. data=digits)")
    args = parser.parse_args(argv)
    common = [f"model.width={args.width}", f"steps={args.steps}", f"val_every={args.every}",
              f"ckpt_every={args.steps}", f"snapshot_every={args.fd_every}", *args.extra]
    curves: dict[str, dict[str, list[dict[int, float]]]] = {m: {} for m in METRICS if m == "loss" or args.fd_every}
    for arm, overrides in arms(args.sweep.resolve(), args.width).items():
        for seed in args.seeds:
            run_dir = args.out.resolve() / f"{arm}-s{seed}"
            record = train_once(run_dir, args.study, [*overrides, *common, f"seed={seed}"])
            runs = {"loss": (val_curve(record), args.every)}
            if args.fd_every:
                runs["frechet_distance"] = (fd_curve(run_dir, args.per_class, args.sample_steps), args.fd_every)
            for metric, (curve, every) in runs.items():
                if record["status"] == "diverged" or not curve:
                    curve = {s: math.inf for s in range(every, args.steps + 1, every)}
                curves[metric].setdefault(arm, []).append(curve)
    results = {metric: analyse(by_arm, args.steps, random.Random(0)) for metric, by_arm in curves.items()}
    (args.out / "convergence.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                            **results}, indent=2, allow_nan=True))
    (args.out / "convergence.md").write_text(markdown(results, args))
    plot(curves, args.out / "convergence.png")
    print(f"convergence: {args.out / 'convergence.md'}")


if __name__ == "__main__":
    main()
