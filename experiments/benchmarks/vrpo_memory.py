"""Peak memory and time of a VRPO step against the number n of Monte Carlo copies: batched, chunked,
chunked with checkpointing.

    .venv/bin/python experiments/benchmarks/vrpo_memory.py [--vocab 8192 --width 128 --depth 4 --length 128 --pairs 4]

Modes (``src/estimators/elbo.py``): "batched" runs all n copies of chosen and rejected as one forward
per model; "chunked" runs one copy's rows per forward (``chunk``), but autograd still keeps every
chunk's activations and logits for the backward; "checkpointed" adds ``checkpointing``, so each chunk
keeps only its inputs and log probabilities and the backward recomputes one chunk at a time: the
gradient accumulates over the copies. Each (mode, n) runs in a fresh process: peak memory is the
rise of its resident-set high-water mark (ru_maxrss) over the model and data set up, across one
warm-up and ``--repeats`` timed steps; the time is their median. The configurations run in one
interleaved sequence so machine noise hits them alike; printed are the ratios to n = 1 batched.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]
from vrpo_step import step  # noqa: E402

from src.models.llada import LLaDA  # noqa: E402

MODES = ("batched", "chunked", "checkpointed")


def measure(args: argparse.Namespace) -> dict[str, float]:
    """One (mode, n) in this process: the peak RSS rise in MiB and the median step time in ms."""
    torch.manual_seed(0)
    policy = LLaDA(args.vocab, width=args.width, depth=args.depth, head_dim=32)
    reference = LLaDA(args.vocab, width=args.width, depth=args.depth, head_dim=32).eval().requires_grad_(False)
    tokens = torch.randint(0, args.vocab, (2 * args.pairs, args.length))
    maskable = (torch.arange(args.length) >= args.length // 4).expand(args.pairs, -1)
    batch = (tokens[: args.pairs], tokens[args.pairs:], maskable)
    chunk = None if args.mode == "batched" else 2 * args.pairs  # the rows of one copy: chosen and rejected
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = [step(policy, reference, batch, args.n, chunk, r, checkpointing=args.mode == "checkpointed")
             for r in range(args.repeats + 1)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_mib": (peak - before) / 1024, "step_ms": statistics.median(times[1:]) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8192, help="vocab size (LLaDA-8B: 126464); the logits scale with it")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (prompt + response)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child process: one configuration
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return
    shared = [f"--{k}={getattr(args, k)}" for k in ("vocab", "width", "depth", "length", "pairs", "repeats")]
    results = {}
    for n in args.ns:
        for mode in MODES:
            done = subprocess.run([sys.executable, __file__, *shared, f"--mode={mode}", f"--n={n}"],
                                  capture_output=True, text=True, check=True)
            results[mode, n] = json.loads(done.stdout.splitlines()[-1])
    base = results["batched", args.ns[0]]
    print(f"VRPO step, {args.pairs} pairs, length {args.length}, vocab {args.vocab}, LLaDA {args.width}x{args.depth}, "
          f"{torch.get_num_threads()} threads; ratios to n={args.ns[0]} batched "
          f"({base['peak_mib']:.0f} MiB, {base['step_ms']:.0f} ms)")
    print("| n | mode | peak memory (MiB) | memory ratio | step (ms) | time ratio |")
    print("|---|---|---|---|---|---|")
    for (mode, n), r in results.items():
        print(f"| {n} | {mode} | {r['peak_mib']:.0f} | {r['peak_mib'] / base['peak_mib']:.2f} | {r['step_ms']:.0f} | "
              f"{r['step_ms'] / base['step_ms']:.2f} |")


if __name__ == "__main__":
    main()
