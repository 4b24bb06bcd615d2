"""Masked diffusion (LLaDA; docs/vrpo.md, “Masked diffusion”): the training loss and the reverse-process sampler.

Forward process: each maskable token of y becomes the mask token M independently with probability t
(``estimators.masks``, t-form). The loss is the negative t-form ELBO term with LLaDA's floor
p = (1 − ε)t + ε, normalised per item by its number of maskable tokens L_b:

    loss = mean_b [ (1/L_b) Σ_i 1[y_t^i = M] (−log p_θ(y^i | y_t)) / p ]

Pretraining makes every token maskable (so L_b is the sequence length: LLaDA's division by b·L);
SFT never masks the prompt and counts EOS padding as response (masked and learned, L_b includes it).

The sampler starts from a fully masked answer and, in ``steps`` steps split over semi-autoregressive
blocks, predicts every masked token (argmax of the logits plus Gumbel noise at ``temperature``) and
commits the most confident ones (``low_confidence`` remasking: the rest stay masked) or random ones
(``random``); positions right of the current block have confidence −∞, and ``suppress`` tokens (EOS,
EoT) get confidence −1, below every other masked position of the block, so they are committed last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from src.estimators import elbo
from src.estimators.timesteps import Draw

REMASKING = ("low_confidence", "random")


def loss(model: torch.nn.Module, tokens: torch.Tensor, maskable: torch.Tensor, d: Draw, mask_id: int,
         eps: float = 1e-3) -> torch.Tensor:
    """The masked-diffusion loss of a batch (scalar), for one or more copies of ``d``."""
    ell = elbo.terms(model, tokens, maskable, d, mask_id, form="t", eps=eps)  # (n, batch), ≤ 0
    return -(ell / maskable.sum(-1).clamp(min=1)).mean()


def transfer_counts(masked: torch.Tensor, steps: int) -> torch.Tensor:
    """(batch, steps): how many tokens each step commits, the masked count split as evenly as possible
    (the remainder goes to the first steps)."""
    count = masked.sum(-1, keepdim=True)
    base, rest = count // steps, count % steps
    return base + (torch.arange(steps, device=masked.device) < rest).long()


def gumbel_argmax(logits: torch.Tensor, temperature: float, gen: torch.Generator | None) -> torch.Tensor:
    """argmax of logits/τ + Gumbel noise (in float64, as LLaDA), i.e. a sample at temperature τ; τ = 0 is
    greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).clamp_(min=1e-20)
    return (logits.double() / temperature - torch.log(-torch.log(u))).argmax(-1)


@torch.no_grad()
def sample(model: torch.nn.Module, prompt: torch.Tensor, gen_length: int, mask_id: int, *, steps: int | None = None,
           block_length: int | None = None, remasking: str = "low_confidence", temperature: float = 0.0,
           suppress: Sequence[int] = (), gen: torch.Generator | None = None) -> torch.Tensor:
    """Answers (batch, gen_length) for ``prompt`` (batch, P); ``steps`` defaults to gen_length and
    ``block_length`` to one block."""
    steps, block_length = steps or gen_length, block_length or gen_length
    if remasking not in REMASKING:
        raise ValueError(f"remasking={remasking!r}; choose one of {', '.join(REMASKING)}")
    if gen_length % block_length or steps % (gen_length // block_length):
        raise ValueError(f"gen_length={gen_length} must be a multiple of block_length={block_length}, and "
                         f"steps={steps} a multiple of the number of blocks")
    blocks = gen_length // block_length
    x = torch.cat([prompt, torch.full((len(prompt), gen_length), mask_id, dtype=prompt.dtype)], dim=1)
    start = prompt.shape[1]
    for b in range(blocks):
        lo, hi = start + b * block_length, start + (b + 1) * block_length
        counts = transfer_counts(x[:, lo:hi] == mask_id, steps // blocks)
        for step in range(steps // blocks):
            masked = x == mask_id
            logits = model(x)
            guess = gumbel_argmax(logits, temperature, gen)
            if remasking == "low_confidence":
                confidence = logits.float().softmax(-1).gather(-1, guess.unsqueeze(-1)).squeeze(-1)
            else:
                confidence = torch.rand(guess.shape, generator=gen)
            for token in suppress:
                confidence = confidence.masked_fill(guess == token, -1.0)  # below any probability
            confidence[:, hi:] = -torch.inf
            confidence = confidence.masked_fill(~masked, -torch.inf)
            order = confidence.argsort(-1, descending=True)
            commit = torch.zeros_like(masked)
            for row in range(len(x)):
                commit[row, order[row, : counts[row, step]]] = True
            x = torch.where(commit, guess, x)
    return x[:, start:]


def sampled_answers(model: nn.Module, tokens: torch.Tensor, prompt_mask: torch.Tensor, mask_id: int,
                    gen: torch.Generator | None = None, **sampler: Any) -> list[torch.Tensor]:
    """Answers for each row's prompt (the first prompt_mask.sum() tokens), sampled over the rest of the
    row's length; rows are grouped by prompt length so each group is one batched sampler run."""
    lengths = prompt_mask.sum(-1)
    answers: list[torch.Tensor | None] = [None] * len(tokens)
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero().squeeze(-1)
        out = sample(model, tokens[rows, :length], tokens.shape[1] - length, mask_id, gen=gen, **sampler)
        for i, row in enumerate(rows.tolist()):
            answers[row] = out[i]
    return answers


def answer_hits(model: nn.Module, tokens: torch.Tensor, response: torch.Tensor, padding: torch.Tensor, layout: Any,
                mask_id: int, **sampler: Any) -> int:
    """How many rows' sampled answers (from their prompts) decode to the same text as their responses."""
    answers = sampled_answers(model, tokens, ~(response | padding), mask_id, **sampler)
    return sum(layout.decode(a.tolist()) == layout.decode(t[r].tolist()) for a, t, r in zip(answers, tokens, response))
