"""Exact Var ŝ of the VRPO estimators on a preference run's own held-out pairs (e.g. the addition task).

    .venv/bin/python experiments/vrpo/task_variance.py outputs/llada_vrpo_sft1/seed0-vrpo [...]

For each run: the policy is its last weights, the reference its ``init_from`` run. Every held-out
response is short enough to enumerate all masks of its maskable tokens (the answer and its EOS), so
the score s, the variance parts V_t, V_yt and ρ are exact (``src.estimators.elbo.exact``), and
Var ŝ of any (n_t, n_yt, antithetic) is a prediction, not a measurement. Prints, per run, the mean
|s|, the mean Var ŝ of naive DPO and of VRPO (8, 1, antithetic), their ratio, ρ and the timestep share
a, i.e. how much estimator noise there is on this task for VRPO to remove.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from src.checkpoints import load_model
from src.estimators import elbo, vrpo


@torch.no_grad()
def exact_stats(run_dir: str) -> dict[str, float]:
    policy, cfg, data = load_model(run_dir)
    reference, _, _ = load_model(cfg.init_from)
    beta, val = cfg.task.beta, data.val.tensors

    def stats(field: str, i: int) -> vrpo.ResponseStats:
        tokens, mask = val[field][i], val[f"{field}_response"][i]
        return vrpo.ResponseStats.of(elbo.exact(policy, tokens, mask, policy.mask_id),
                                     elbo.exact(reference, tokens, mask, policy.mask_id))

    pairs = [(stats("chosen", i), stats("rejected", i)) for i in range(len(val["chosen"]))]
    naive = vrpo.score_variance(pairs, beta, 1, 1, False)
    reduced = vrpo.score_variance(pairs, beta, 8, 1, True)
    responses = [x for p in pairs for x in p]
    return {"pairs": len(pairs), "mean_abs_s": float(np.mean([abs(vrpo.exact_score(p, beta)) for p in pairs])),
            "var_naive": naive, "var_vrpo": reduced, "ratio": naive / reduced,
            "rho": float(np.mean([x.correlation(1, 1) for x in responses])),
            "a": float(np.mean([vrpo.timestep_share(x) for x in responses]))}


def main(runs: list[str]) -> None:
    print("| run | pairs | mean abs s | Var ŝ naive DPO | Var ŝ VRPO (8,1,✓) | ratio | ρ | a |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        r = exact_stats(run)
        print(f"| {run} | {r['pairs']} | {r['mean_abs_s']:.3f} | {r['var_naive']:.4f} | {r['var_vrpo']:.5f} | "
              f"{r['ratio']:.1f} | {r['rho']:.3f} | {r['a']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
