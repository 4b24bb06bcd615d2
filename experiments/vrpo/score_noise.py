"""Preference-score noise over training, by repeated draws: Var ŝ against s² for naive DPO and VRPO.

    .venv/bin/python experiments/vrpo/score_noise.py <preference run dir> [--draws 32] [--pairs 64]

For responses too long to enumerate (``task_variance.py`` does it exactly for short ones). At each
weights the run kept (its ``snapshot_every`` snapshots, then its last weights) the policy is those
weights and the reference its ``init_from`` run. On the first ``pairs`` held-out pairs, ŝ is drawn
``draws`` times under naive DPO (n_t = n_yt = 1, independent draws) and under VRPO (n_t = ``--n-t``,
default 8, n_yt = 1, antithetic), each draw fresh. Both estimators are unbiased for the same s; s per
pair is the mean of the VRPO draws (adding the naive ones, an order of magnitude noisier, would
inflate s² and blur the wrong-sign share). Printed per step: mean |s|, mean Var ŝ of each estimator, the
noise-to-signal ratio mean Var ŝ / mean s², and the share of draws whose sign differs from s's — how
often the estimated gradient pushes the pair the wrong way. The table is also written as JSON
(``--out``, default ``<run dir>/score_noise.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from src.checkpoints import load_model  # noqa: E402
from src.estimators import vrpo  # noqa: E402
from src.estimators.timesteps import generator  # noqa: E402
from src.records import last_checkpoint, read_record, snapshots  # noqa: E402

def estimators(n_t: int = 8) -> dict[str, tuple[int, bool]]:
    """name: (n_t, antithetic), n_yt = 1."""
    return {"naive": (1, False), "vrpo": (n_t, True)}


@torch.no_grad()
def draw_scores(policy, reference, pairs: dict[str, torch.Tensor], beta: float, draws: int, seed: int = 0,
                n_t: int = 8) -> dict[str, torch.Tensor]:
    """ŝ per estimator, (draws, pairs): every draw with fresh timesteps and masks."""
    size, length = pairs["chosen"].shape
    out = {}
    for name, (copies, antithetic) in estimators(n_t).items():
        rows = []
        for k in range(draws):
            d = vrpo.pair_draws(copies, 1, size, length, antithetic, generator(seed, "score_noise", name, k))
            s, _ = vrpo.pair_scores(policy, reference, pairs["chosen"], pairs["rejected"], pairs["chosen_response"],
                                    pairs["rejected_response"], d, beta, policy.mask_id)
            rows.append(s)
        out[name] = torch.stack(rows)
    return out


def noise_table(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean |s| (s: the mean of the VRPO draws), and per estimator mean Var ŝ, Var ŝ / mean s² and the
    wrong-sign share."""
    s = scores["vrpo"].mean(0)
    row = {"mean_abs_s": float(s.abs().mean()), "mean_s2": float((s**2).mean())}
    for name, values in scores.items():
        var = values.var(0).mean()
        row |= {f"var_{name}": float(var), f"noise_to_signal_{name}": float(var / (s**2).mean()),
                f"wrong_sign_{name}": float((torch.sign(values) != torch.sign(s)).float().mean())}
    return row


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--draws", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--n-t", type=int, default=8, help="VRPO's copies (n_yt = 1, antithetic)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    kept = snapshots(args.run_dir)
    steps = read_record(args.run_dir)["steps"]
    kept = dict(sorted(kept.items())) | ({} if steps in kept else {steps: last_checkpoint(args.run_dir)})
    table = []
    for step, checkpoint in kept.items():
        policy, cfg, data = load_model(args.run_dir, checkpoint)
        reference, _, _ = load_model(cfg.init_from)
        pairs = {k: v[: args.pairs] for k, v in data.val.tensors.items()}
        row = {"step": step, **noise_table(draw_scores(policy, reference, pairs, cfg.task.beta, args.draws, n_t=args.n_t))}
        table.append(row)
        print(" | ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    out = args.out or args.run_dir / "score_noise.json"
    out.write_text(json.dumps(table, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
