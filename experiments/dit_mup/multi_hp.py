"""Multi-hyperparameter μTransfer with its tuning cost: search several base HPs on the proxy, carry
the best to the target, and compare with the same search run on the target itself (the DiT-μP
paper's PixArt-α and MMDiT experiments, at CPU scale).

    python experiments/dit_mup/multi_hp.py [--study dit_mup_sweep] [--trials 16] [--proxy-width 32]
        [--target-width 128] [--seeds 1 2 3] [--out outputs/dit_mup/multi_hp]

1. proxy search: ``sweep=optuna`` (TPE, sampler seed 0: LR, init gain σ, α_in, α_out, α_attn, weight
   decay), μP with base width = the proxy width, ``--trials`` trials, seed 0, one trial at a time
   in-process on every core (as the target runs train);
2. direct search: the same search at the target width;
3. at the target, one run per seed and arm: ``transferred`` (``mutransfer.from`` the proxy search),
   ``tuned`` (``mutransfer.from`` the direct search: the target's own best trial) and ``defaults``
   (the study's HPs as configured).

Reported: each arm's seed-mean held-out loss; regret = transferred − tuned and defaults − tuned,
paired by seed (each seed sees the same data and noise in every arm), with 95% bootstrap intervals
over seeds; and the cost, in FLOPs and in wall time, of the proxy search as a percentage of one
target run (the median of the target runs) and of the direct search. The target runs use seeds the
searches did not (``--seeds`` may not hold the search seed 0): on seed 0 the tuned arm would be the
direct search's best trial itself, whose loss won a selection on that seed. Written to
``<out>/multi_hp.json`` and ``multi_hp.md``; every search and run lives under ``<out>`` and a
relaunch continues them (the searches replay their finished trials). Every finished search and run
is archived in ``--records`` (records, never weights; commit it), and a relaunch restores them
first, so the same command on a fresh clone continues the study.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from src.sweeps import archive  # noqa: E402
from src.sweeps.dashboard import log_study_report  # noqa: E402
from src.sweeps.report import report  # noqa: E402
from src.sweeps.transfer import percentile_interval  # noqa: E402
from train_once import train_once  # noqa: E402

ARMS = ("transferred", "tuned", "defaults")
SEARCH_SEED = 0
BOOTSTRAP = 1000


def search(study: str, width: int, proxy_width: int, trials: int, sweep_dir: Path, extra: list[str]) -> dict:
    """Run (or continue) the Optuna search at ``width``; its report's cost total."""
    args = [sys.executable, "-m", "src.run", f"experiment={study}", "sweep=optuna", "sweep.arm_keys=[]",
            "parametrization=mup", f"parametrization.base_width={proxy_width}",
            "parametrization.base_depth=${model.depth}", f"model.width={width}",
            f"hydra.sweeper.n_trials={trials}", f"hydra.sweep.dir={sweep_dir}", f"seed={SEARCH_SEED}",
            "hydra/launcher=basic", *extra]  # trials run one at a time: in-process, every core each
    print("+", " ".join(args[2:]), flush=True)
    if subprocess.run(args, cwd=ROOT).returncode != 0:
        raise SystemExit(f"the search at width {width} failed")
    return report(sweep_dir)["cost"]["total"]


def regret(losses: dict[str, list[float]], arm: str, rng: random.Random) -> dict:
    """mean over seeds of loss(arm) − loss(tuned), paired by seed, with its bootstrap interval."""
    diffs = [a - b for a, b in zip(losses[arm], losses["tuned"])]
    reps = [statistics.fmean(rng.choice(diffs) for _ in diffs) for _ in range(BOOTSTRAP)]
    return {"mean": statistics.fmean(diffs), "ci": percentile_interval(reps)}


def percent(part: dict, whole: dict) -> dict:
    return {u: (100 * part[u] / whole[u] if part.get(u) is not None and whole.get(u) else None)
            for u in ("flops", "wall_time_s")}


def analyse(losses: dict[str, list[float]], costs: dict[str, dict], runs: list[dict], rng: random.Random) -> dict:
    """``runs``: the records of the target runs (for the cost of one target run)."""
    flops = [(r.get("cost") or {}).get("flops") for r in runs]
    one_run = {"flops": None if None in flops else statistics.median(flops),
               "wall_time_s": statistics.median(r["wall_time_s"] for r in runs)}
    return {"mean_loss": {a: statistics.fmean(v) for a, v in losses.items()}, "per_seed": losses,
            "regret": {a: regret(losses, a, rng) for a in ("transferred", "defaults")},
            "cost": {"proxy_search": costs["proxy"], "direct_search": costs["direct"], "one_target_run": one_run,
                     "proxy_vs_target_run_pct": percent(costs["proxy"], one_run),
                     "proxy_vs_direct_search_pct": percent(costs["proxy"], costs["direct"])}}


def markdown(result: dict, args: argparse.Namespace) -> str:
    def ci(r: dict) -> str:
        return f"{r['mean']:+.4f} [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]"

    def pct(p: dict) -> str:
        return " / ".join("–" if p[u] is None else f"{p[u]:.1f}%" for u in ("flops", "wall_time_s"))

    cost = result["cost"]
    lines = [f"# Multi-HP μTransfer: {args.study}, width {args.proxy_width} → {args.target_width}, "
             f"{args.trials} trials, seeds {args.seeds}", "",
             "| arm | held-out loss (seed mean) | per seed | regret vs tuned [95% interval] |", "|---|---|---|---|"]
    for arm in ARMS:
        per_seed = ", ".join(f"{v:.4f}" for v in result["per_seed"][arm])
        reg = ci(result["regret"][arm]) if arm in result["regret"] else "–"
        lines.append(f"| {arm} | {result['mean_loss'][arm]:.4f} | {per_seed} | {reg} |")
    lines += ["", "| cost | FLOPs | wall time |", "|---|---|---|"]
    for key in ("proxy_search", "direct_search", "one_target_run"):
        flops = "–" if cost[key]["flops"] is None else f"{cost[key]['flops']:.3g}"
        lines.append(f"| {key.replace('_', ' ')} | {flops} | {cost[key]['wall_time_s']:.0f} s |")
    lines += ["", f"Proxy search / one target run: {pct(cost['proxy_vs_target_run_pct'])} (FLOPs / wall); "
              f"proxy search / direct search: {pct(cost['proxy_vs_direct_search_pct'])}.", ""]
    return "\n".join(lines)


def wandb_tables(result: dict) -> dict[str, tuple[list[str], list]]:
    """The study's W&B report run: per arm the seed-mean loss and regret against the tuned arm with its
    interval; the cost of each search and of one target run, and the proxy search's percentages."""
    regret = result["regret"]
    arms = [[arm, result["mean_loss"][arm], *((regret[arm]["mean"], *regret[arm]["ci"]) if arm in regret else
                                             (None, None, None))] for arm in ARMS]
    cost = result["cost"]
    rows = [[key, cost[key]["flops"], cost[key]["wall_time_s"]] for key in ("proxy_search", "direct_search", "one_target_run")]
    rows += [[key, cost[key]["flops"], cost[key]["wall_time_s"]] for key in ("proxy_vs_target_run_pct",
                                                                            "proxy_vs_direct_search_pct")]
    return {"multi_hp/arms": (["arm", "mean_loss", "regret", "regret_lo", "regret_hi"], arms),
            "multi_hp/cost": (["what", "flops", "wall_time_s"], rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="dit_mup_sweep")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--proxy-width", type=int, default=32)
    parser.add_argument("--target-width", type=int, default=128)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="target runs' seeds (not 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "dit_mup" / "multi_hp")
    parser.add_argument("--records", type=Path, default=ROOT / "experiments" / "dit_mup" / "records" / "multi_hp.jsonl.gz",
                        help="the committed copy of every finished search trial and run")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every job (e.g. steps=100)")
    args = parser.parse_args(argv)
    if SEARCH_SEED in args.seeds:
        raise SystemExit(f"--seeds {args.seeds}: seed {SEARCH_SEED} is the searches' own; the tuned arm won its "
                         "selection on it, so compare the arms on other seeds")
    out = args.out.resolve()
    archive.restore(args.records, out)
    costs = {}
    for name, width in (("proxy", args.proxy_width), ("direct", args.target_width)):
        costs[name] = search(args.study, width, args.proxy_width, args.trials, out / f"{name}_search", args.extra)
        archive.export(out, args.records)
    sources = {"transferred": [f"mutransfer.from={out / 'proxy_search'}"],
               "tuned": [f"mutransfer.from={out / 'direct_search'}"], "defaults": []}
    common = ["parametrization=mup", f"parametrization.base_width={args.proxy_width}",
              "parametrization.base_depth=${model.depth}", f"model.width={args.target_width}", *args.extra]
    losses: dict[str, list[float]] = {}
    runs = []
    for arm in ARMS:
        for seed in args.seeds:
            record = train_once(out / f"{arm}-s{seed}", args.study, [*common, *sources[arm], f"seed={seed}"])
            archive.export(out, args.records)
            losses.setdefault(arm, []).append(record["sweep_metric"])
            runs.append(record)
    result = analyse(losses, costs, runs, random.Random(0))
    (out / "multi_hp.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **result},
                                                  indent=2, allow_nan=True))
    (out / "multi_hp.md").write_text(markdown(result, args))
    log_study_report(runs, out, wandb_tables(result))
    print(f"multi-HP μTransfer: {out / 'multi_hp.md'}")


if __name__ == "__main__":
    main()
