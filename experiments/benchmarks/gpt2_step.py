"""Training-step speed of src.models.gpt2.GPT2 against transformers' GPT2LMHeadModel, side by side.

    .venv/bin/python experiments/benchmarks/gpt2_step.py [--width 256 --depth 4 --head-dim 64 --seq 256 --batch 8]

Both models get the same config, batch, loss and optimizer (AdamW); a step is forward + backward +
optimizer step. Timings alternate between the two models (A B A B ...), so machine noise hits both
alike; the printed ratio is the median over repeats. FLOP/s counts 6 FLOPs per parameter of every
matrix multiply per token plus causal attention (6·L·T·n per token), and is divided by the peak of a
large fp32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from src.models.gpt2 import GPT2  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n×n fp32 matmul, best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def flops_per_step(width: int, depth: int, seq: int, batch: int, vocab: int) -> float:
    matmul_params = depth * 12 * width**2 + width * vocab  # q, k, v, o, MLP 4n, head
    per_token = 6 * matmul_params + 6 * depth * seq * width  # causal attention: half of 12·L·T·n
    return per_token * seq * batch


def make_step(model: torch.nn.Module, logits_of, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = F.cross_entropy(logits_of(model, x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_steps(step, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        step()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    ours = GPT2(args.vocab, args.width, args.depth, args.head_dim, args.seq)
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=args.vocab, n_positions=args.seq, n_embd=args.width, n_layer=args.depth,
        n_head=args.width // args.head_dim, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
    ))
    x = torch.randint(0, args.vocab, (args.batch, args.seq))
    y = torch.randint(0, args.vocab, (args.batch, args.seq))
    steps = {
        "scaling-lab GPT2": make_step(ours, lambda m, i: m(i), x, y),
        "transformers GPT2LMHeadModel": make_step(hf, lambda m, i: m(i).logits, x, y),
    }
    for step in steps.values():  # warm-up
        time_steps(step, 2)
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(time_steps(step, args.steps))
    peak = matmul_peak()
    flops = flops_per_step(args.width, args.depth, args.seq, args.batch, args.vocab)
    tokens = args.batch * args.seq
    print(f"config: width {args.width}, depth {args.depth}, head_dim {args.head_dim}, seq {args.seq}, "
          f"batch {args.batch}, vocab {args.vocab}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"measured fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:30s} {tokens / t:9.0f} tokens/s  {flops / t / 1e9:6.1f} GFLOP/s  "
              f"({flops / t / peak:.0%} of peak)")
    ratios = [a / b for a, b in zip(times["transformers GPT2LMHeadModel"], times["scaling-lab GPT2"])]
    print(f"tokens/s ratio scaling-lab / transformers: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f} over {args.repeats} alternating repeats)")


if __name__ == "__main__":
    main()
