"""Convergence at the target width: μP with the proxy's transferred learning rate against SP, the
DiT-μP paper's "2.9× faster convergence" at CPU scale.

    python experiments/dit_mup/convergence.py --sweep <width sweep dir> [--width 256] [--steps 1600]
        [--every 100] [--fd-every 200] [--seeds 0 1 2] [--study dit_mup_sweep] [--out outputs/dit_mup/convergence]

Three arms at ``--width``, each trained ``--steps`` steps per seed with the study's data, model and
AdamW (constant LR, as the paper trains):

* ``mup_transferred``: μP with ``mutransfer.from=<sweep>`` (the proxy's optimal base LR and HPs);
* ``sp_dit_recipe``: SP with the original DiT recipe, AdamW at a constant 1e-4, no weight decay;
* ``sp_best_grid``: SP at its own best grid LR at this width in the sweep (what SP needs a search at
  the target for; μP's transferred LR is the proxy's parabola-refined optimum, as μTransfer takes it).

``--study`` must be the sweep's own experiment (checked by name): the runs take its data, model and
objective.

Two metrics, each judged the same way: the held-out denoising loss, recorded every ``--every`` steps
(the record's ``metrics.history``), and the Fréchet distance of samples (src/eval/samples.py: every
class, fixed noise) of the weights kept every ``--fd-every`` steps (``snapshot_every``; 0: loss
only). Baseline M* = the seed-mean final value of ``sp_dit_recipe``; for each arm, the step where
its seed-mean curve first reaches M* (linear between the two recorded steps around the crossing);
speed-up = ``--steps`` / that step. The same in wall time: the seed-mean training time (validation
included, sampling not) at that step against the baseline's at its last step. 95% bootstrap
intervals over seeds, paired: each replicate draws one list of seeds for every arm, as the arms of
one seed share its data order and noise. Written to
``<out>/convergence.json`` and ``convergence.md``, with the curves in ``convergence.png``. Each run
lives in ``<out>/<arm>-s<seed>`` and its distances in ``fd.json`` there: a relaunch skips finished
runs and scored snapshots, and continues interrupted runs. Every run whose distances are all scored
is archived in ``--records`` (its record and ``fd.json``, never weights; commit it), and a relaunch
restores them first, so the same command on a fresh clone continues the study. (The sweep must be
there too: its own command restores it from its records without training.)
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
from src.sweeps import archive  # noqa: E402
from src.sweeps.collect import records  # noqa: E402
from src.sweeps.dashboard import log_study_report  # noqa: E402
from src.sweeps.transfer import percentile_interval  # noqa: E402
from train_once import train_once  # noqa: E402

DIT_RECIPE_LR = 1e-4
FD_FILE = "fd.json"  # a run's Fréchet distances, step -> value (archived with its record)
BOOTSTRAP = 1000


def check_study(sweep: Path, study: str) -> None:
    """The sweep must come from ``study``: its runs' ``name`` is the study's."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        name = compose("config", overrides=[f"experiment={study}"]).name
    found = {r["config"].get("name") for r in records(sweep)}
    if found != {name}:
        raise SystemExit(f"--sweep {sweep} holds runs of {', '.join(sorted(map(str, found))) or 'nothing'}, "
                         f"not of --study {study} ({name}); give the study the sweep ran")


def arms(sweep: Path, width: int) -> dict[str, list[str]]:
    """Each arm's overrides; SP's best grid LR at ``width`` read from the sweep's transfer.json."""
    transfer = json.loads((sweep / "transfer.json").read_text())
    sp = next((a for a in transfer["arms"] if a["arm"].startswith("sp/") and a["axis"] == "width"), None)
    best = sp and (sp.get("grid_log2_lr") or {}).get(str(width))
    if best is None or not math.isfinite(best):
        raise SystemExit(f"{sweep}/transfer.json has no SP optimum at width {width}")
    return {"mup_transferred": ["parametrization=mup", f"mutransfer.from={sweep}"],
            "sp_dit_recipe": ["parametrization=sp", f"optimizer.lr={DIT_RECIPE_LR}"],
            "sp_best_grid": ["parametrization=sp", f"optimizer.lr={2.0 ** best}"]}


def history_curve(record: dict, key: str) -> dict[int, float]:
    """step -> ``key`` (val/loss, elapsed_s) from the record's validation history."""
    return {h["step"]: h[key] for h in record["metrics"].get("history", []) if key in h}


def mean_curve(curves: list[dict[int, float]]) -> list[tuple[int, float]]:
    """The seed mean at every step all curves recorded."""
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return [(s, sum(c[s] for c in curves) / len(curves)) for s in steps]


def crossing(curves: list[dict[int, float]], target: float) -> float | None:
    """The step where the seed-mean curve first reaches ``target``, linear between the recorded steps
    around it (the first recorded step when it starts there; None: never)."""
    points = mean_curve(curves)
    for i, (step, value) in enumerate(points):
        if value <= target:
            if i == 0:
                return float(step)
            (s0, v0) = points[i - 1]
            return s0 + (v0 - target) / (v0 - value) * (step - s0)
    return None


def at_step(curves: list[dict[int, float]], step: float) -> float:
    """The seed-mean curve at a (fractional) step, linear between recorded steps."""
    points = mean_curve(curves)
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if s0 <= step <= s1:
            return v0 + (step - s0) / (s1 - s0) * (v1 - v0)
    return points[0][1] if step < points[0][0] else points[-1][1]


def analyse(curves: dict[str, list[dict[int, float]]], steps: int, rng: random.Random,
            times: dict[str, list[dict[int, float]]] | None = None) -> dict:
    """Baseline value, steps (and, given ``times`` that reach ``steps`` in every run, wall time) to
    reach it and the speed-ups per arm, with paired bootstrap intervals over seeds."""
    def once(idx: list[int]) -> dict[str, dict[str, float | None]]:
        draw = {arm: [cs[i] for i in idx] for arm, cs in curves.items()}
        base = draw["sp_dit_recipe"]
        target = sum(c[max(c)] for c in base) / len(base)
        out = {"_target": {"value": target}}
        base_time = times and at_step([times["sp_dit_recipe"][i] for i in idx], steps)
        for arm, cs in draw.items():
            step = crossing(cs, target)
            row = {"step": step, "speedup": steps / step if step else 0.0}
            if times:
                wall = None if step is None else at_step([times[arm][i] for i in idx], step)
                row |= {"wall_s": wall, "wall_speedup": base_time / wall if wall else 0.0}
            out[arm] = row
        return out

    if times and not all(steps in c for cs in times.values() for c in cs):
        times = None  # a run stopped early (diverged) or predates the clock: steps only
    n = len(curves["sp_dit_recipe"])
    point = once(list(range(n)))
    reps = [once([rng.randrange(n) for _ in range(n)]) for _ in range(BOOTSTRAP)]
    target = point.pop("_target")["value"]
    result = {}
    for arm, cs in curves.items():
        row = {"steps_to_baseline": point[arm]["step"], "speedup": point[arm]["speedup"],
               "speedup_ci": percentile_interval([r[arm]["speedup"] for r in reps]),
               "final": sum(c[max(c)] for c in cs) / len(cs)}
        if times:
            row |= {"wall_s_to_baseline": point[arm]["wall_s"], "wall_speedup": point[arm]["wall_speedup"],
                    "wall_speedup_ci": percentile_interval([r[arm]["wall_speedup"] for r in reps])}
        result[arm] = row
    return {"baseline": target, "arms": result}


METRICS = {"loss": "held-out loss", "frechet_distance": "Fréchet distance of samples"}


def markdown(results: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [f"# Convergence at width {args.width}: {args.steps} steps, seeds {args.seeds}", "",
             f"Baseline: SP with the DiT recipe (constant {DIT_RECIPE_LR}), its seed-mean final value. Speed-up = "
             f"{args.steps} / the step where an arm's seed-mean curve first reaches the baseline (linear between "
             "recorded steps); in wall time, the baseline's training time over the arm's time to that step. 95% "
             "bootstrap intervals over seeds, paired by seed. The DiT-μP paper reports 2.9× (DiT-XL-2-μP "
             "against DiT-XL-2, FID).", ""]
    for metric, result in results.items():
        lines += [f"## {METRICS[metric]} (baseline {result['baseline']:.4g})", "",
                  "| arm | final | steps to baseline | speed-up (steps) | wall time to baseline | speed-up (wall) |",
                  "|---|---|---|---|---|---|"]
        for arm, r in result["arms"].items():
            step, wall = r["steps_to_baseline"], r.get("wall_s_to_baseline")
            lines.append(f"| {arm} | {r['final']:.4g} | {'never' if step is None else f'{step:.0f}'} | "
                         f"{interval(r['speedup'], r['speedup_ci'])} | {'never' if wall is None else f'{wall:.0f} s'} | "
                         f"{interval(r['wall_speedup'], r['wall_speedup_ci']) if 'wall_speedup' in r else '–'} |")
        lines.append("")
    return "\n".join(lines + ["![held-out loss and Fréchet distance over training](convergence.png)", ""])


def wandb_tables(results: dict[str, dict]) -> dict[str, tuple[list[str], list]]:
    """One table per metric for the study's W&B report run: each arm's final value, steps and wall
    time to the baseline, and both speed-ups with their intervals."""
    columns = ["arm", "final", "steps_to_baseline", "speedup", "speedup_lo", "speedup_hi", "wall_s_to_baseline",
               "wall_speedup", "wall_speedup_lo", "wall_speedup_hi"]
    return {f"convergence/{metric}": (columns, [
        [arm, r["final"], r["steps_to_baseline"], r["speedup"], *r["speedup_ci"], r.get("wall_s_to_baseline"),
         r.get("wall_speedup"), *(r.get("wall_speedup_ci") or (None, None))] for arm, r in result["arms"].items()])
        for metric, result in results.items()}


def interval(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.2f}× [{ci[0]:.2f}, {ci[1]:.2f}]"


def plot(curves: dict[str, dict[str, list[dict[int, float]]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (metric, by_arm) in zip(axes[0], curves.items()):
        for arm, cs in by_arm.items():
            steps, means = zip(*mean_curve(cs))
            ax.plot(steps, means, marker="o", label=arm)
        ax.set(xlabel="step", ylabel=f"{METRICS[metric]} (seed mean)", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fd_curve(run_dir: Path, per_class: int, sample_steps: int) -> dict[int, float]:
    """step -> Fréchet distance of the snapshot's samples, scored once and kept in ``fd.json``."""
    path = run_dir / FD_FILE
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
    parser.add_argument("--fd-every", type=int, default=200, help="0: no Fréchet distance")
    parser.add_argument("--per-class", type=int, default=10, help="samples per class for the Fréchet distance")
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "dit_mup" / "convergence")
    parser.add_argument("--records", type=Path, default=ROOT / "experiments" / "dit_mup" / "records" / "convergence.jsonl.gz",
                        help="the committed copy of every finished run")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run (e.g. data=digits)")
    args = parser.parse_args(argv)
    sweep = args.sweep.resolve()
    check_study(sweep, args.study)
    archive.restore(args.records, args.out.resolve())
    common = [f"model.width={args.width}", f"steps={args.steps}", f"val_every={args.every}",
              f"ckpt_every={args.every}", f"snapshot_every={args.fd_every}", *args.extra]
    curves: dict[str, dict[str, list[dict[int, float]]]] = {m: {} for m in METRICS if m == "loss" or args.fd_every}
    times: dict[str, list[dict[int, float]]] = {}
    study_records = []
    for arm, overrides in arms(sweep, args.width).items():
        for seed in args.seeds:
            run_dir = args.out.resolve() / f"{arm}-s{seed}"
            record = train_once(run_dir, args.study, [*overrides, *common, f"seed={seed}"])
            study_records.append(record)
            times.setdefault(arm, []).append(history_curve(record, "elapsed_s"))
            runs = {"loss": (history_curve(record, "val/loss"), args.every)}
            if args.fd_every:
                runs["frechet_distance"] = (fd_curve(run_dir, args.per_class, args.sample_steps), args.fd_every)
            archive.export(args.out.resolve(), args.records, sidecars=(FD_FILE,))
            for metric, (curve, every) in runs.items():
                if record["status"] == "diverged" or not curve:
                    curve = {s: math.inf for s in range(every, args.steps + 1, every)}
                curves[metric].setdefault(arm, []).append(curve)
    results = {metric: analyse(by_arm, args.steps, random.Random(0), times) for metric, by_arm in curves.items()}
    (args.out / "convergence.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                            **results}, indent=2, allow_nan=True))
    (args.out / "convergence.md").write_text(markdown(results, args))
    plot(curves, args.out / "convergence.png")
    log_study_report(study_records, args.out, wandb_tables(results), [args.out / "convergence.png"])
    print(f"convergence: {args.out / 'convergence.md'}")


if __name__ == "__main__":
    main()
