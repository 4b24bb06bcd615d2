"""VRPO: DPO on ELBO estimates, and the exact variance predictions of its score (docs/vrpo.md, “VRPO”).

    s = β [(B_θ − B_ref)(y_w) − (B_θ − B_ref)(y_l)],    loss = −log σ(s)

With estimates B̂ in place of B, ŝ is unbiased and everything else is controlled by Var ŝ. For one
response y with the exact decomposition of ``elbo.Enumeration`` (timestep part V_t, mask part V_yt)
and a budget of n = n_t·n_yt copies:

* independent draws for policy and reference: Var = Σ_{π∈{θ,ref}} V_t^π/n_t + V_yt^π/n;
* antithetic sampling (shared timesteps and masks): Var = V_t^D/n_t + V_yt^D/n, D = ℓ_θ − ℓ_ref;

and Var ŝ = β² Σ_{y∈{y_w,y_l}} Var(B̂_θ − B̂_ref)(y) (y_w and y_l draws independent). Its consequences:
budget Var ∝ 1/n at optimal allocation; allocation Var(n_t, n/n_t)/Var(n, 1) = 1 + a(n/n_t − 1),
a = V_t/(V_t + V_yt); antithetic ratio (V_θ + V_ref)/(V_θ + V_ref − 2ρ√(V_θ V_ref)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from src.estimators import elbo, masks
from src.estimators.elbo import Enumeration
from src.estimators.timesteps import Draw


def score(policy_w: torch.Tensor, ref_w: torch.Tensor, policy_l: torch.Tensor, ref_l: torch.Tensor,
          beta: float) -> torch.Tensor:
    """s = β[(B_θ − B_ref)(y_w) − (B_θ − B_ref)(y_l)] per pair."""
    return beta * ((policy_w - ref_w) - (policy_l - ref_l))


def dpo_loss(s: torch.Tensor) -> torch.Tensor:
    """−log σ(s) per pair (softplus(−s), exact for large |s|)."""
    return F.softplus(-s)


def pair_draws(n_t: int, n_yt: int, size: int, length: int, antithetic: bool, gen: torch.Generator,
               timesteps: str = "iid") -> tuple[Draw, Draw]:
    """(policy draw, reference draw) over [chosen; rejected] (batch 2·size). Chosen and rejected draws
    are independent; the reference's is the policy's (the same object) when ``antithetic``, else fresh."""
    def both() -> Draw:
        return masks.cat(*(masks.draw(n_t, n_yt, size, length, gen, timesteps) for _ in range(2)))

    policy = both()
    return policy, policy if antithetic else both()


def pair_scores(policy: torch.nn.Module, reference: torch.nn.Module, chosen: torch.Tensor, rejected: torch.Tensor,
                chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, draws: tuple[Draw, Draw], beta: float,
                mask_id: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(ŝ per pair, implicit rewards β(B̂_θ − B̂_ref) of [chosen; rejected]): chosen and rejected copies
    in one batched forward per model, the policy's with gradient, the reference's without. ``kwargs``
    go to ``elbo.estimate`` (form, eps, chunk, checkpointing)."""
    tokens, maskable = torch.cat([chosen, rejected]), torch.cat([chosen_mask, rejected_mask])
    d_policy, d_ref = (d.to(tokens.device) for d in draws)
    mine = elbo.estimate(policy, tokens, maskable, d_policy, mask_id, **kwargs)
    with torch.no_grad():
        ref = elbo.estimate(reference, tokens, maskable, d_ref, mask_id, **{**kwargs, "checkpointing": False})
    (w, l), (rw, rl) = mine.chunk(2), ref.chunk(2)
    return score(w, rw, l, rl, beta), beta * (mine - ref).detach()


@dataclass(frozen=True)
class ResponseStats:
    """The exact variance parts of one response's ELBO estimates under the policy and the reference."""

    policy: tuple[float, float]  # (V_t, V_yt) of ℓ_θ
    ref: tuple[float, float]  # (V_t, V_yt) of ℓ_ref
    cross: tuple[float, float]  # (C_t, C_yt): Cov(ℓ_θ, ℓ_ref) under shared masks
    elbo_gap: float  # B_θ − B_ref

    @classmethod
    def of(cls, policy: Enumeration, ref: Enumeration) -> ResponseStats:
        return cls(policy.covariance(policy), ref.covariance(ref), policy.covariance(ref), policy.elbo - ref.elbo)

    def difference_variance(self, n_t: int, n_yt: int, antithetic: bool) -> float:
        """Var(B̂_θ − B̂_ref) with n_t timesteps × n_yt masks."""
        n = n_t * n_yt
        var = (self.policy[0] + self.ref[0]) / n_t + (self.policy[1] + self.ref[1]) / n
        if antithetic:
            var -= 2 * (self.cross[0] / n_t + self.cross[1] / n)
        return max(var, 0.0)

    def correlation(self, n_t: int, n_yt: int) -> float:
        """ρ between B̂_θ and B̂_ref under shared draws."""
        n = n_t * n_yt
        vp = self.policy[0] / n_t + self.policy[1] / n
        vr = self.ref[0] / n_t + self.ref[1] / n
        return (self.cross[0] / n_t + self.cross[1] / n) / math.sqrt(vp * vr) if vp * vr > 0 else 1.0


def score_variance(pairs: list[tuple[ResponseStats, ResponseStats]], beta: float, n_t: int, n_yt: int,
                   antithetic: bool) -> float:
    """Predicted Var ŝ averaged over pairs (y_w stats, y_l stats)."""
    per_pair = [beta**2 * (w.difference_variance(n_t, n_yt, antithetic) + l.difference_variance(n_t, n_yt, antithetic))
                for w, l in pairs]
    return sum(per_pair) / len(per_pair)


def exact_score(pair: tuple[ResponseStats, ResponseStats], beta: float) -> float:
    """s from exact ELBOs."""
    w, l = pair
    return beta * (w.elbo_gap - l.elbo_gap)


def timestep_share(stats: ResponseStats, antithetic: bool = True) -> float:
    """a = V_t/(V_t + V_yt) of the estimated quantity (D = ℓ_θ − ℓ_ref when antithetic)."""
    if antithetic:
        v_t = stats.policy[0] + stats.ref[0] - 2 * stats.cross[0]
        v_yt = stats.policy[1] + stats.ref[1] - 2 * stats.cross[1]
    else:
        v_t, v_yt = stats.policy[0] + stats.ref[0], stats.policy[1] + stats.ref[1]
    return v_t / (v_t + v_yt) if v_t + v_yt > 0 else 0.0
