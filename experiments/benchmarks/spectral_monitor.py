"""Overhead of the spectral monitor (src/training/spectral_monitor.py) as a fraction of training-step time.

    .venv/bin/python experiments/benchmarks/spectral_monitor.py [--width 128 --depth 4 --every 50]

Measured side by side in one run: the median time of a training step (forward, backward, AdamW) of
the default GPT-2 on a default-sized batch, and the median time of one monitor evaluation (copying
the matrices before the step, plus warm-started power iteration on W and ΔW of every matrix). The
monitor runs once every ``--every`` steps, so its overhead is evaluation / (every × step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from src.models.gpt2 import GPT2  # noqa: E402
from src.mup.optim import OptimizerSpec
from src.mup.plan import Parametrization, make_plan  # noqa: E402
from src.training.spectral_monitor import SpectralMonitor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--every", type=int, default=50, help="monitor interval (the config default)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    def factory(**sizes):
        return GPT2(256, head_dim=args.head_dim, max_seq_len=args.seq, tie_head=False, **sizes)

    torch.manual_seed(0)
    model = factory(width=args.width, depth=args.depth)
    plan = make_plan(factory, args.width, args.depth, args.head_dim, Parametrization(),
                     OptimizerSpec(torch.optim.AdamW, 1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (args.batch, args.seq))
    y = torch.randint(0, 256, (args.batch, args.seq))
    monitor = SpectralMonitor(plan, every=1)
    module = SimpleNamespace(model=model)
    trainer = SimpleNamespace(global_step=0, loggers=[])

    def step() -> None:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def evaluate() -> None:
        monitor.on_train_batch_start(trainer, module)
        trainer.global_step += 1
        monitor.on_train_batch_end(trainer, module)

    step()
    evaluate()  # the cold power iterations; later calls are warm
    steps, evals = [], []
    for _ in range(args.repeats):  # alternate, so machine noise hits both alike
        start = time.perf_counter()
        step()
        steps.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluate()
        evals.append(time.perf_counter() - start)
    t_step, t_eval = statistics.median(steps), statistics.median(evals)
    matrices = sum(1 for row in plan.rows if row.label in ("input", "hidden", "output"))
    print(f"GPT-2 width {args.width}, depth {args.depth}, batch {args.batch}x{args.seq}; {matrices} matrices; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training step {t_step * 1e3:.1f} ms, one monitor evaluation {t_eval * 1e3:.2f} ms "
          f"({t_eval / t_step:.1%} of a step)")
    print(f"overhead at every={args.every}: {t_eval / (args.every * t_step):.3%} of training time")


if __name__ == "__main__":
    main()
