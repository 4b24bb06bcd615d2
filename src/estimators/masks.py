"""Masks of the masked-diffusion forward process, from replayable draws (``timesteps.Draw``).

A masked-diffusion ELBO estimate uses n = n_t × n_yt Monte Carlo copies: n_t timesteps, each with
n_yt masked copies of the response. ``draw`` returns them as one ``Draw``: t of shape (n, batch),
timestep j repeated for copies j·n_yt … (j+1)·n_yt − 1, and uniform noise u of shape (n, batch,
length), one number per position. ``masks`` turns a draw into masks and weights, for the two forms
of the estimator (docs/vrpo.md, “The ELBO estimator”); only ``maskable`` positions (the response, never the
prompt, and padding only where the caller says so) can be masked:

* t-form: position i is masked when u_i < p, p = (1 − ε)·t + ε (Bernoulli(p) masks; ε = 0 is the
  unbiased estimator, LLaDA's training code uses ε = 1e-3), weight 1/p;
* l-form: exactly l = ⌊t·L⌋ + 1 of the L maskable positions are masked (l ~ U{1..L} for uniform t;
  stratified t gives stratified l), the l with the smallest u (a uniform random subset), weight L/l.

Replaying a draw on a second model (the frozen reference of VRPO) replays the masks exactly: that is
antithetic sampling.
"""

from __future__ import annotations

import torch

from src.estimators.timesteps import Draw, TimestepSampler

FORMS = ("t", "l")


def draw(n_t: int, n_yt: int, batch: int, length: int, gen: torch.Generator, timesteps: str = "iid") -> Draw:
    """n_t timesteps per item (``timesteps``: iid | stratified), each repeated for n_yt masked copies,
    and one uniform number per copy and position, all from ``gen``."""
    if n_t < 1 or n_yt < 1:
        raise ValueError(f"n_t={n_t} and n_yt={n_yt} must be positive")
    t = TimestepSampler(timesteps).sample(n_t, batch, gen).repeat_interleave(n_yt, dim=0)
    return Draw(t, torch.rand(n_t * n_yt, batch, length, generator=gen))


def cat(a: Draw, b: Draw) -> Draw:
    """Two draws side by side along the batch (e.g. chosen, then rejected)."""
    return Draw(torch.cat([a.t, b.t], 1), torch.cat([a.noise, b.noise], 1))


def masks(d: Draw, maskable: torch.Tensor, form: str = "l", eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask of shape (n, batch, length), weight of shape (n, batch)) for ``maskable`` (batch, length)."""
    if form not in FORMS:
        raise ValueError(f"form={form!r}; choose t or l")
    maskable = maskable.to(d.noise.device).bool().expand_as(d.noise)
    if form == "t":
        p = (1 - eps) * d.t + eps
        return (d.noise < p.unsqueeze(-1)) & maskable, 1.0 / p
    size = maskable.sum(-1)  # L per item
    if (size == 0).any():
        raise ValueError("an item has no maskable position (an empty response?)")
    l = (d.t.double() * size).long().clamp(max=size - 1) + 1  # noqa: E741 — the paper's symbol
    rank = torch.where(maskable, d.noise, 2.0).argsort(-1).argsort(-1)  # non-maskable positions rank last
    return (rank < l.unsqueeze(-1)) & maskable, (size / l).float()


def apply(tokens: torch.Tensor, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The noisy sequences: ``tokens`` (batch, length) with masked positions set to ``mask_id``,
    one per copy: (n, batch, length)."""
    return torch.where(mask, mask_id, tokens.expand_as(mask))
