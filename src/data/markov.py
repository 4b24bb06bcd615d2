"""The VRPO variance testbed (docs/vrpo.md, “The variance testbed”): a prompt-conditioned Markov chain.

Vocabulary: K content tokens (the model adds the mask token). A prompt is two tokens (a, b); the
response y has L tokens:

    y_1 = a,   y_{i+1} = (y_i + b + J_i) mod K,   J_i ~ Bernoulli(p_jump)

A token next to a visible neighbour is nearly determined (two choices), one with no visible
neighbours is spread over many, so the log-probability of a masked token depends strongly on how
many tokens are masked: the timestep share a = V_t/(V_t + V_yt) of the ELBO variance is far from 0,
which is what makes allocation measurable. The ground-truth reward r*(y) = number of jumps is what the
SFT model does not maximise (it learns p_jump); preferences are Bradley–Terry, P(y_1 ≻ y_2) =
σ((r*_1 − r*_2)/τ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MarkovChain:
    vocab: int = 8  # K
    length: int = 8  # L
    p_jump: float = 0.3

    def prompts(self, count: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.vocab, (count, 2), generator=gen)

    def responses(self, prompts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One chain per prompt, (count, L)."""
        jumps = (torch.rand(len(prompts), self.length - 1, generator=gen) < self.p_jump).long()
        steps = prompts[:, 1:2] + jumps
        start = prompts[:, :1]
        return torch.cat([start, start + steps.cumsum(1)], 1) % self.vocab

    def sequences(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """SFT data: [a, b, y_1 … y_L], (count, 2 + L)."""
        prompts = self.prompts(count, gen)
        return torch.cat([prompts, self.responses(prompts, gen)], 1)

    def reward(self, sequences: torch.Tensor) -> torch.Tensor:
        """r*: the number of jumps, steps y_{i+1} − y_i ≠ b (mod K)."""
        b, y = sequences[:, 1:2], sequences[:, 2:]
        return (((y[:, 1:] - y[:, :-1] - b) % self.vocab) != 0).sum(1)

    def maskable(self, count: int) -> torch.Tensor:
        """The response positions of (count, 2 + L) sequences."""
        return (torch.arange(2 + self.length) >= 2).expand(count, -1)


def bradley_terry(first: torch.Tensor, second: torch.Tensor, reward: torch.Tensor, second_reward: torch.Tensor,
                  tau: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected): ``first`` wins with probability σ((r₁ − r₂)/τ)."""
    wins = torch.rand(len(first), generator=gen) < torch.sigmoid((reward - second_reward).double() / tau)
    chosen = torch.where(wins.unsqueeze(1), first, second)
    return chosen, torch.where(wins.unsqueeze(1), second, first)
