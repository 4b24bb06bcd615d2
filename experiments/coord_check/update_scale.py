"""Which μP row does an optimizer's update follow? Measure its raw direction's scale over width.

The plan picks each optimizer's LR rule from the scale of its raw update direction A on a hidden
n × n matrix, in the RMS→RMS norm ‖A‖_R = √(n_in/n_out)·‖A‖_op (docs/mup.md, "Families"): Θ(n)
for a sign-like update (AdamW, Lion, Adafactor), Θ(1) for an orthogonalized one (Muon, Shampoo:
UVᵀ), Θ(√n) for Muon-Kimi. This script trains GPT-2 (depth 2, untied readout, SP: one LR for every tensor, so
nothing rescales A) for a few steps at widths 64, 128, 256 with each optimizer exactly as
``conf/optimizer/<name>.yaml`` ships it, and prints ‖W_t − W_0‖_R / η averaged over the hidden
matrices, its slope in log n (1: sign-like, ½: Kimi, 0: orthogonal) and the family the rule in
src/mup/optim.py assigns.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python experiments/coord_check/update_scale.py \
        [adamw soap shampoo muon ...]        # conf/optimizer names; default: every normalized family
        [--arm mup --text --per-step --window 10 --steps 10 100 300 --lr 0.004]

By default the movement since initialisation on one fixed batch of random tokens (the first steps of
training). ``--text`` trains on fresh windows of the standard library's source (bytes) instead, and
``--per-step`` measures the step itself, ‖W_t − W_(t−1)‖_R / η, which is what the spectral condition
constrains, so that a long run shows whether the exponent of the early steps lasts. ``--arm mup``
trains under μP (base width 64) and divides each matrix's movement by its own LR, so that a family
can run at its optimum at every width and the ratio still has the raw update's exponent.
"""

from __future__ import annotations

import argparse
import functools
import math
import sysconfig
from pathlib import Path

import torch

from src import mup
from src.assemble import compose_option, optimizer_spec
from src.models.gpt2 import GPT2
from src.mup.optim import optimizer_rule

WIDTHS, STEPS, LR, SEQ = (64, 128, 256), (3, 10), 1e-3, 32
SLOPES = {"sign": 1.0, "kimi": 0.5, "orthogonal": 0.0}
DEFAULT = ["adamw", "lion", "adafactor", "muon", "muon_kimi", "shampoo", "shampoo_grafted", "soap"]


def text_bytes(limit: int = 4_000_000) -> torch.Tensor:
    """The first ``limit`` bytes of the standard library's source, in file order."""
    root, chunks, size = Path(sysconfig.get_paths()["stdlib"]), [], 0
    for path in sorted(root.glob("*.py")):
        chunks.append(path.read_bytes())
        size += len(chunks[-1])
        if size >= limit:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)[:limit]), dtype=torch.uint8).long()


def batches(text: torch.Tensor | None, steps: int):
    """One fixed batch of random tokens (vocab 64) every step, or fresh windows of ``text`` (vocab 256)."""
    gen = torch.Generator().manual_seed(1)
    if text is None:
        fixed = torch.randint(0, 64, (16, SEQ + 1), generator=gen)
        yield from (fixed for _ in range(steps))
        return
    for _ in range(steps):
        starts = torch.randint(0, len(text) - SEQ - 1, (16,), generator=gen)
        yield torch.stack([text[i:i + SEQ + 1] for i in starts.tolist()])


def _scale(params: dict[str, torch.Tensor], start: dict[str, torch.Tensor], lrs: dict[str, float]) -> float:
    """Mean over the matrices in ``start`` of ‖W − W_start‖_R / η_W (each matrix's own LR)."""
    norms = [torch.linalg.matrix_norm(params[n].detach() - w, 2).item() * math.sqrt(w.shape[1] / w.shape[0]) / lrs[n]
             for n, w in start.items()]
    return sum(norms) / len(norms)


def movement(name: str, width: int, steps=STEPS, lr: float = LR, text: torch.Tensor | None = None,
             per_step: bool = False, window: int = 1, arm: str = "sp", seed: int = 0) -> dict[int, float]:
    """Mean over hidden matrices of ‖W_t − W_0‖_R / η_W at ``steps``; ``per_step``: of
    ‖W_t − W_(t−1)‖_R / η_W, averaged over the ``window`` steps ending at t. η_W is the matrix's own LR
    (``arm`` ``mup``: η/r_n or the family's row, base width the smallest of WIDTHS), so the ratio has the
    raw update's exponent under either arm; μP keeps a near-optimal LR stable at every width."""
    torch.manual_seed(seed)
    vocab = 64 if text is None else 256
    factory = functools.partial(GPT2, vocab_size=vocab, head_dim=16, max_seq_len=SEQ, tie_head=False)  # μP unties it
    spec = optimizer_spec(compose_option("optimizer", name), lr=lr)
    parametrization = mup.Parametrization.named(arm, base_width=WIDTHS[0], base_depth=2)
    model, optimizer, plan = mup.setup(factory, width, 2, parametrization, spec)
    params = dict(model.named_parameters())
    rows = {row.name: row for row in plan.rows if row.group.endswith("hidden") and params[row.name].ndim == 2}
    hidden, lrs = list(rows), {n: lr * row.lr_mult for n, row in rows.items()}
    start = {n: params[n].detach().clone() for n in hidden}
    measured = {t - k for t in steps for k in range(window)} if per_step else set(steps)
    out, scales = {}, {}
    for step, tokens in enumerate(batches(text, max(steps)), start=1):
        if per_step and step in measured:
            start = {n: params[n].detach().clone() for n in hidden}
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in measured:
            scales[step] = _scale(params, start, lrs)
        if step in steps:
            out[step] = sum(scales[step - k] for k in range(window if per_step else 1)) / (window if per_step else 1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=DEFAULT, help="conf/optimizer options")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--text", action="store_true", help="fresh windows of stdlib source, not one random batch")
    parser.add_argument("--per-step", action="store_true", help="the step's own update, not the movement since init")
    parser.add_argument("--window", type=int, default=1, help="--per-step: averaged over this many steps ending at t")
    parser.add_argument("--arm", choices=("sp", "mup"), default="sp", help="the parametrization trained")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = text_bytes() if args.text else None
    what = (f"‖W_t − W_(t−1)‖_R / η (mean of the {args.window} steps ending at t)" if args.per_step
            else "‖W_t − W_0‖_R / η")
    data = "fresh stdlib-source windows" if args.text else "one fixed random batch"
    print(f"{what} of the hidden matrices at widths {', '.join(map(str, WIDTHS))} "
          f"(GPT-2 depth 2, {args.arm}, η = {args.lr:g}, {data})")
    print("| optimizer | rule's family (slope) | step | " + " | ".join(f"w{w}" for w in WIDTHS) + " | slope |")
    print("|---|---|---|" + "---|" * len(WIDTHS) + "---|")
    for name in args.names:
        family = optimizer_rule(optimizer_spec(compose_option("optimizer", name), lr=args.lr)).family
        by_width = {w: movement(name, w, args.steps, args.lr, text, args.per_step, args.window, args.arm) for w in WIDTHS}
        for step in args.steps:
            v = [by_width[w][step] for w in WIDTHS]
            slope = math.log(v[-1] / v[0]) / math.log(WIDTHS[-1] / WIDTHS[0])
            print(f"| {name} | {family} ({SLOPES.get(family, '?')}) | {step} | "
                  + " | ".join(f"{x:.3g}" for x in v) + f" | {slope:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
