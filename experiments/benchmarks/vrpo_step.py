"""A VRPO training step with its n Monte Carlo copies batched vs looped, and the reference's share.

    .venv/bin/python experiments/benchmarks/vrpo_step.py [--width 128 --depth 4 --length 64 --pairs 8 --n 8]

One step = ELBOs of chosen and rejected under the policy (forward + backward) and the frozen
reference (forward, no grad) with n = n_t copies each, then the DPO loss (src/estimators/vrpo.py).
"batched" runs all n copies of the batch as one forward per model; "looped" runs one copy at a time
(``chunk`` = the rows of one copy), the Python-loop alternative. Timings alternate (A B A B …) so
machine noise hits both alike; printed are medians over repeats and their ratio, and the share of
the batched step spent in the reference's forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from src.estimators import vrpo  # noqa: E402
from src.estimators.timesteps import generator  # noqa: E402
from src.models.llada import LLaDA  # noqa: E402


def step(policy, reference, batch, n: int, chunk: int | None, seed: int, checkpointing: bool = False) -> float:
    """Seconds for one VRPO step (forward, backward) with n copies, ``chunk`` rows per forward."""
    chosen, rejected, maskable = batch
    start = time.perf_counter()
    draws = vrpo.pair_draws(n, 1, len(chosen), chosen.shape[1], True, generator(seed))
    s, _ = vrpo.pair_scores(policy, reference, chosen, rejected, maskable, maskable, draws, 0.2, policy.mask_id,
                            chunk=chunk, checkpointing=checkpointing)
    vrpo.dpo_loss(s).mean().backward()
    policy.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def reference_forward(reference, batch, n: int, seed: int) -> float:
    from src.estimators import elbo

    chosen, rejected, maskable = batch
    draws = vrpo.pair_draws(n, 1, len(chosen), chosen.shape[1], True, generator(seed))
    start = time.perf_counter()
    with torch.no_grad():
        elbo.estimate(reference, torch.cat([chosen, rejected]), torch.cat([maskable, maskable]), draws[1],
                      reference.mask_id)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--length", type=int, default=64, help="tokens per sequence (prompt + response)")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--n", type=int, default=8, help="Monte Carlo copies (n_t, with n_yt = 1)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    policy = LLaDA(257, width=args.width, depth=args.depth, head_dim=32)
    reference = LLaDA(257, width=args.width, depth=args.depth, head_dim=32).eval().requires_grad_(False)
    tokens = torch.randint(0, 257, (2 * args.pairs, args.length))
    maskable = (torch.arange(args.length) >= args.length // 4).expand(args.pairs, -1)
    batch = (tokens[: args.pairs], tokens[args.pairs:], maskable)
    one_copy = 2 * args.pairs  # rows of one copy: chosen and rejected
    batched, looped, ref = [], [], []
    for r in range(args.repeats + 1):  # the first round warms up
        times = (step(policy, reference, batch, args.n, None, r), step(policy, reference, batch, args.n, one_copy, r),
                 reference_forward(reference, batch, args.n, r))
        if r:
            batched.append(times[0]), looped.append(times[1]), ref.append(times[2])
    b, lo, rf = statistics.median(batched), statistics.median(looped), statistics.median(ref)
    print(f"VRPO step, {args.pairs} pairs x {args.n} copies, length {args.length}, LLaDA {args.width}x{args.depth}, "
          f"{torch.get_num_threads()} threads")
    print(f"  batched copies: {b * 1e3:8.1f} ms   looped copies: {lo * 1e3:8.1f} ms   looped/batched: {lo / b:.2f}x")
    print(f"  reference forward: {rf * 1e3:.1f} ms = {rf / b:.0%} of the batched step")


if __name__ == "__main__":
    main()
