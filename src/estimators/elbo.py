"""Monte Carlo ELBO estimates of a masked-diffusion model, and the exact ELBO by enumeration.

The ELBO of a response y (given its prompt x) is a sum over response tokens (docs/vrpo.md, “The ELBO estimator”):

    B(y) = E_{t, y_t} ℓ(y_t, t, y),   ℓ = w · Σ_i 1[y_t^i = M] log p_θ(y^i | y_t, x)

with w = 1/t (t-form) or L/l (l-form). ``terms`` returns ℓ for every Monte Carlo copy of a draw, all
copies of a batch in batched forward passes (``chunk`` rows at a time); the estimate B̂ is their
mean over copies. With ``checkpointing`` each chunk keeps only its inputs and its per-token log
probabilities: the backward pass recomputes one chunk's forward (model and softmax over the vocab) at
a time and back-propagates it, so the gradient accumulates chunk by chunk over the copies, exactly,
for one extra forward. Peak memory is then one chunk's activations and logits (rows × T × V) plus
n · batch · T log probabilities, whatever n is: with ``chunk`` = one copy's rows, n_t = 8 needs
about the memory of n_t = 1 (experiments/benchmarks/vrpo_memory.py).

``exact`` enumerates all 2^L − 1 non-empty masks of a response of L ≤ 12 tokens: g(S) = Σ_{i∈S}
log p(y_i | y with S masked) for every subset S. Under the l-form with l ~ U{1..L}, P(S) =
1/(L·C(L,|S|)) and ℓ(S) = (L/|S|)·g(S); the t-form gives every S the same total weight
(|S|−1)!(L−|S|)!/L!, so both forms have the mean B = Σ_S P(S)ℓ(S). Law of total variance over l:
V_t = Var_l E[ℓ | l] and V_yt = E_l Var[ℓ | l], so that Var B̂ = V_t/n_t + V_yt/(n_t·n_yt) for n_t iid
timesteps with n_yt masks each (Lemma 5).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from src.estimators import masks as mask_ops
from src.estimators.timesteps import Draw

MAX_EXACT_LENGTH = 12


def token_logp(model: torch.nn.Module, noisy: torch.Tensor, targets: torch.Tensor, chunk: int | None = None,
               checkpointing: bool = False) -> torch.Tensor:
    """log p(targets_i | noisy) at every position, (rows, length), in forward passes of ``chunk`` rows;
    ``checkpointing``: each chunk's forward is recomputed in the backward pass (the module docstring)."""

    def logp(rows: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(model(rows).transpose(1, 2).float(), goal, reduction="none")

    out = []
    for rows, goal in zip(noisy.split(chunk or len(noisy)), targets.split(chunk or len(noisy))):
        if checkpointing and torch.is_grad_enabled():
            out.append(checkpoint(logp, rows, goal, use_reentrant=False))
        else:
            out.append(logp(rows, goal))
    return torch.cat(out)


def terms(model: torch.nn.Module, tokens: torch.Tensor, maskable: torch.Tensor, d: Draw, mask_id: int,
          form: str = "l", eps: float = 0.0, chunk: int | None = None, checkpointing: bool = False) -> torch.Tensor:
    """ℓ of every copy, (n, batch): the copies of all items run as one batch of n·batch sequences."""
    mask, weight = mask_ops.masks(d, maskable, form, eps)
    noisy = mask_ops.apply(tokens, mask, mask_id)
    n, batch, length = noisy.shape
    logp = token_logp(model, noisy.reshape(n * batch, length), tokens.repeat(n, 1), chunk, checkpointing)
    return weight * (logp.view(n, batch, length) * mask).sum(-1)


def estimate(model: torch.nn.Module, tokens: torch.Tensor, maskable: torch.Tensor, d: Draw, mask_id: int,
             **kwargs) -> torch.Tensor:
    """B̂ per item, (batch,): the mean of ``terms`` over the copies."""
    return terms(model, tokens, maskable, d, mask_id, **kwargs).mean(0)


def subsets(length: int) -> torch.Tensor:
    """Every non-empty subset of range(length) as a bool matrix (2^length − 1, length)."""
    if not 1 <= length <= MAX_EXACT_LENGTH:
        raise ValueError(f"exact enumeration takes 1..{MAX_EXACT_LENGTH} maskable tokens, not {length}")
    bits = torch.tensor(list(itertools.product([False, True], repeat=length))[1:])
    return bits


@dataclass(frozen=True)
class Enumeration:
    """The l-form terms ℓ(S) of every mask S of one response, with |S| and P(S)."""

    values: torch.Tensor  # ℓ(S), float64
    sizes: torch.Tensor  # |S|
    length: int  # L

    @property
    def probs(self) -> torch.Tensor:
        counts = torch.bincount(self.sizes, minlength=self.length + 1).double()
        return 1.0 / (self.length * counts[self.sizes])

    @property
    def elbo(self) -> float:
        return float((self.probs * self.values).sum())

    def level_means(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """E[v | l] for l = 1..L."""
        v = self.values if values is None else values
        return torch.stack([v[self.sizes == l].mean() for l in range(1, self.length + 1)])

    def covariance(self, other: Enumeration) -> tuple[float, float]:
        """(C_t, C_yt): the timestep and mask parts of Cov(ℓ_a, ℓ_b) under shared masks; with
        ``other`` = self these are (V_t, V_yt)."""
        ma, mb = self.level_means(), other.level_means()
        c_t = float(((ma - ma.mean()) * (mb - mb.mean())).mean())
        within = [((self.values[self.sizes == l] - ma[l - 1]) * (other.values[self.sizes == l] - mb[l - 1])).mean()
                  for l in range(1, self.length + 1)]
        return c_t, float(torch.stack(within).mean())


@torch.no_grad()
def exact(model: torch.nn.Module, tokens: torch.Tensor, maskable: torch.Tensor, mask_id: int,
          chunk: int | None = 1024) -> Enumeration:
    """Enumerate every mask of one sequence ``tokens`` (length,) over its ``maskable`` positions."""
    positions = maskable.nonzero().squeeze(-1)
    sets = subsets(len(positions))
    mask = torch.zeros(len(sets), len(tokens), dtype=torch.bool)
    mask[:, positions] = sets
    noisy = torch.where(mask, mask_id, tokens)
    logp = token_logp(model, noisy, tokens.expand_as(noisy), chunk).double()
    sizes = sets.sum(-1)
    return Enumeration((len(positions) / sizes) * (logp * mask).sum(-1), sizes, len(positions))
