"""Seconds per training step of the families study's testbed, per optimizer family and size, to size
its budget before running it (the issue's "time 20 steps per size first"). One process, one torch
thread, the model, plan and optimizer built exactly as a run builds them; random byte tokens (speed
does not depend on the data); forward, backward and optimizer step, no Lightning.

    python experiments/optimizer_families/step_times.py [--batch 16] [--seq 64] [--steps 20]

Prints, per family and size, the median seconds per step and the step time relative to AdamW at
the same size; absolute times drift with the machine's load, ratios measured side by side less so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from src import resolvers  # noqa: E402, F401 — conf/'s resolvers
from src.assemble import CONF_DIR, assemble  # noqa: E402
from src.mup.optim import build_optimizer  # noqa: E402
from src.mup.plan import build_model  # noqa: E402

FAMILIES = ["adamw", "lion", "sgd", "muon", "muon_kimi", "adafactor", "soap", "shampoo_grafted"]
SIZES = ["w32-d2", "w64-d2", "w128-d2", "w256-d2", "w32-d4", "w32-d8", "w32-d16"]


def step_time(family: str, size: str, batch: int, seq: int, steps: int) -> float:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=gpt2_optimizer_families", "hydra.mode=RUN",
                                           f"optimizer={family}", "parametrization=completep", f"sweep.size={size}",
                                           f"data.batch_size={batch}", f"data.seq_len={seq}"])
    plan = assemble(cfg, {"vocab_size": 256})
    model = build_model(plan)
    optimizer = build_optimizer(model, plan)
    tokens = torch.randint(0, 256, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(steps + 2):  # two warmup steps
        start = time.perf_counter()
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"batch {args.batch} x seq {args.seq}, median of {args.steps} steps, one thread")
    print("family".ljust(16) + "".join(s.rjust(16) for s in SIZES))
    base = {}
    for family in args.families:
        row = {s: step_time(family, s, args.batch, args.seq, args.steps) for s in SIZES}
        base = base or row
        print(family.ljust(16) + "".join(f"{row[s]:8.3f}s ×{row[s] / base[s]:4.1f}".rjust(16) for s in SIZES), flush=True)


if __name__ == "__main__":
    main()
