"""Which μP row does an optimizer's update follow? Measure its raw direction's scale over width.

The plan picks each optimizer's LR rule from the scale of its raw update direction A on a hidden
n × n matrix, in the RMS→RMS norm ‖A‖_R = √(n_in/n_out)·‖A‖_op (docs/mup.md, "Families"): Θ(n)
for a sign-like update (AdamW, Lion, Adafactor), Θ(1) for an orthogonalized one (Muon, Shampoo:
UVᵀ), Θ(√n) for Muon-Kimi. This script trains GPT-2 (depth 2, SP: one LR for every tensor, so
nothing rescales A) for a few steps at widths 64, 128, 256 with each optimizer exactly as
``conf/optimizer/<name>.yaml`` ships it, and prints ‖W_t − W_0‖_R / η averaged over the hidden
matrices, its slope in log n (1: sign-like, ½: Kimi, 0: orthogonal) and the family the rule in
src/mup/optim.py assigns.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python experiments/coord_check/update_scale.py \
        [adamw soap shampoo muon ...]        # conf/optimizer names; default: every normalized family
"""

from __future__ import annotations

import functools
import math
import sys

import torch

from src import mup
from src.assemble import compose_option, optimizer_spec
from src.models.gpt2 import GPT2
from src.mup.optim import optimizer_rule

WIDTHS, STEPS, LR, VOCAB, SEQ = (64, 128, 256), (3, 10), 1e-3, 64, 32
SLOPES = {"sign": 1.0, "kimi": 0.5, "orthogonal": 0.0}
DEFAULT = ["adamw", "lion", "adafactor", "muon", "muon_kimi", "shampoo", "shampoo_grafted", "soap"]


def movement(name: str, width: int, seed: int = 0) -> dict[int, float]:
    """Mean over hidden matrices of ‖W_t − W_0‖_R / η after each of STEPS."""
    torch.manual_seed(seed)
    factory = functools.partial(GPT2, vocab_size=VOCAB, head_dim=16, max_seq_len=SEQ)
    spec = optimizer_spec(compose_option("optimizer", name), lr=LR)
    model, optimizer, plan = mup.setup(factory, width, 2, mup.Parametrization.named("sp"), spec)
    params = dict(model.named_parameters())
    hidden = [row.name for row in plan.rows if row.group.endswith("hidden") and params[row.name].ndim == 2]
    start = {n: params[n].detach().clone() for n in hidden}
    tokens = torch.randint(0, VOCAB, (16, SEQ + 1), generator=torch.Generator().manual_seed(1))
    out = {}
    for step in range(1, max(STEPS) + 1):
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in STEPS:
            norms = [torch.linalg.matrix_norm(params[n].detach() - start[n], 2).item()
                     * math.sqrt(start[n].shape[1] / start[n].shape[0]) for n in hidden]
            out[step] = sum(norms) / len(norms) / LR
    return out


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    print(f"‖ΔW‖_R / η of the hidden matrices at widths {', '.join(map(str, WIDTHS))} (GPT-2 depth 2, SP, η = {LR})")
    print("| optimizer | rule's family (slope) | step | " + " | ".join(f"w{w}" for w in WIDTHS) + " | slope |")
    print("|---|---|---|" + "---|" * len(WIDTHS) + "---|")
    for name in names:
        family = optimizer_rule(optimizer_spec(compose_option("optimizer", name), lr=LR)).family
        by_width = {w: movement(name, w) for w in WIDTHS}
        for step in STEPS:
            v = [by_width[w][step] for w in WIDTHS]
            slope = math.log(v[-1] / v[0]) / math.log(WIDTHS[-1] / WIDTHS[0])
            print(f"| {name} | {family} ({SLOPES.get(family, '?')}) | {step} | "
                  + " | ".join(f"{x:.3g}" for x in v) + f" | {slope:+.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
