"""DDPM (Ho et al. 2020) as DiT trains it: linear β, ε-prediction, optional learned Σ, DDIM and
ancestral sampling on a respaced subsequence, classifier-free guidance.

With β_t linear from 1e-4 to 0.02 (× 1000/T), α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s:

    q(x_t | x_0)      = N(√ᾱ_t x_0, (1 − ᾱ_t) I)
    q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I),  μ̃_t = c₀ x_0 + c_t x_t,  β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t)
    x̂_0 = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t
    L_simple = mean ‖ε − ε_θ(x_t, t, y)‖²

Learned Σ (the model outputs 2C channels, the second half v): log Σ = f log β_t + (1 − f) log β̃_t with
f = (v + 1)/2, trained by the VLB term KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) in bits per dim with the
mean detached (−log p(x_0|x_1) at t = 0), added to L_simple. Schedules are float64, as in ADM/DiT.
A model function is ``model_fn(x_t, t) -> output`` with t the original integer steps (a respaced
process maps its own steps back through ``timestep_map``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from src.estimators.timesteps import discretize

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float32, shaped to broadcast over an item of ``like``."""
    out = values.to(like.device)[t].float()
    return out.view(-1, *([1] * (like.ndim - 1)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(μ₁, e^{v₁}) ‖ N(μ₂, e^{v₂})) per coordinate, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per coordinate for data in [−1, 1] quantised to 256 bins, under N(mean, e^{2 log_scale})."""
    cdf = lambda v: 0.5 * (1.0 + torch.erf(v / math.sqrt(2.0)))  # noqa: E731
    inv = torch.exp(-log_scale)
    upper, lower = cdf(inv * (x - mean + 1 / 255)), cdf(inv * (x - mean - 1 / 255))
    log_upper = torch.log(upper.clamp(min=1e-12))
    log_one_minus_lower = torch.log((1.0 - lower).clamp(min=1e-12))
    mid = torch.log((upper - lower).clamp(min=1e-12))
    return torch.where(x < -0.999, log_upper, torch.where(x > 0.999, log_one_minus_lower, mid))


class GaussianDiffusion:
    """A DDPM process over ``num_timesteps`` steps (or a respaced subsequence of one)."""

    can_learn_sigma = True  # with learn_sigma, the model's second half of channels interpolates Σ

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 learn_sigma: bool = False, *, betas: torch.Tensor | None = None,
                 timestep_map: torch.Tensor | None = None) -> None:
        if betas is None:
            scale = 1000 / num_timesteps
            betas = torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)
        self.betas = betas.double()
        self.num_timesteps = len(self.betas)
        self.learn_sigma = learn_sigma
        self.timestep_map = torch.arange(self.num_timesteps) if timestep_map is None else timestep_map
        a = torch.cumprod(1.0 - self.betas, dim=0)
        a_prev = torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
        self.alphas_cumprod, self.alphas_cumprod_prev = a, a_prev
        self.posterior_variance = self.betas * (1.0 - a_prev) / (1.0 - a)
        # β̃_0 = 0: its log is clipped to β̃_1's, as in ADM
        self.posterior_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_coef_x0 = self.betas * torch.sqrt(a_prev) / (1.0 - a)
        self.posterior_coef_xt = (1.0 - a_prev) * torch.sqrt(1.0 - self.betas) / (1.0 - a)
        # DiT's fixed variance without learned Σ ("fixed large"): β_t, with β̃_1 at t = 0
        self.fixed_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.betas[1:]]))

    # -- the forward process
    def steps(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t ∈ [0, 1) → this process's integer steps."""
        return discretize(t, self.num_timesteps)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, t integer steps."""
        a = _gather(self.alphas_cumprod, t, x0)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ̃_t(x_t, x_0), log β̃_t clipped) of q(x_{t−1} | x_t, x_0)."""
        mean = _gather(self.posterior_coef_x0, t, xt) * x0 + _gather(self.posterior_coef_xt, t, xt) * xt
        return mean, _gather(self.posterior_log_variance, t, xt).expand_as(xt)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = _gather(self.alphas_cumprod, t, xt)
        return (xt - (1.0 - a).sqrt() * eps) / a.sqrt()

    # -- the model's reverse step
    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ε̂, v) from the model output; v is None without learned Σ."""
        if not self.learn_sigma:
            return out, None
        return out.chunk(2, dim=1)

    def p_mean_log_variance(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                            clip: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, log variance, x̂_0) of p_θ(x_{t−1} | x_t) from the model output."""
        eps, v = self.split(out)
        if v is None:
            log_var = _gather(self.fixed_log_variance, t, xt).expand_as(xt)
        else:
            frac = (v + 1) / 2
            log_var = frac * _gather(torch.log(self.betas), t, xt) + (1 - frac) * _gather(self.posterior_log_variance, t, xt)
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, log_var, x0

    # -- training
    def loss(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-item loss (B,): mean ε-MSE, plus the VLB term with learned Σ. ``t`` is continuous in [0, 1)."""
        steps = self.steps(t)
        xt = self.q_sample(x0, steps, noise)
        out = model_fn(xt, self.timestep_map.to(steps.device)[steps])
        eps, v = self.split(out)
        mse = ((noise - eps) ** 2).flatten(1).mean(1)
        if v is None:
            return mse
        frozen = torch.cat([eps.detach(), v], dim=1)  # the VLB trains Σ only
        return mse + self.vlb(frozen, x0, xt, steps)

    def vlb(self, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The VLB term per item in bits per dim: KL(q ‖ p_θ) for t > 0, −log p_θ(x_0 | x_1) at t = 0."""
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        mean, log_var, _ = self.p_mean_log_variance(out, xt, t)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).flatten(1).mean(1) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def heldout_loss(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-item ε-MSE alone (the held-out denoising loss; the VLB's Σ term is left out)."""
        steps = self.steps(t)
        eps, _ = self.split(model_fn(self.q_sample(x0, steps, noise), self.timestep_map.to(steps.device)[steps]))
        return ((noise - eps) ** 2).flatten(1).mean(1)

    @staticmethod
    def eval_timesteps(count: int) -> torch.Tensor:
        """The fixed grid t_k = (k − ½)/count, k = 1..count (t = 50, 150, …, 950 of 1000 for 10)."""
        return (torch.arange(count, dtype=torch.float64) + 0.5) / count

    # -- sampling
    def respace(self, steps: int) -> GaussianDiffusion:
        """The process restricted to ``steps`` evenly spaced original steps: β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}},
        so the respaced ᾱ equal the original ones at the kept steps (DiT's ``space_timesteps``)."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"sampling steps={steps} must be between 1 and {self.num_timesteps}")
        keep = torch.linspace(0, self.num_timesteps - 1, steps).round().long().unique()
        a = self.alphas_cumprod[keep]
        betas = 1.0 - a / torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
        return GaussianDiffusion(betas=betas, learn_sigma=self.learn_sigma, timestep_map=self.timestep_map[keep])

    def sample(self, model_fn: ModelFn, noise: torch.Tensor, gen: torch.Generator, steps: int = 50,
               method: str = "ddim", clip: bool = False) -> torch.Tensor:
        """Samples from x_T = ``noise`` by ``method``: "ddim" (deterministic) or "ancestral"."""
        if method == "ddim":
            return self.ddim_sample(model_fn, noise, steps, clip)
        if method == "ancestral":
            return self.ancestral_sample(model_fn, noise, gen, steps, clip)
        raise ValueError(f"sampler={method!r}; choose ddim or ancestral")

    @torch.no_grad()
    def ddim_sample(self, model_fn: ModelFn, noise: torch.Tensor, steps: int = 50, clip: bool = False) -> torch.Tensor:
        """Deterministic DDIM (η = 0) from x_T = ``noise``: x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'}) ε̂."""
        process = self.respace(steps)
        x = noise
        for i in reversed(range(process.num_timesteps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            eps, _ = process.split(model_fn(x, process.timestep_map.to(x.device)[t]))
            x0 = process.predict_x0(x, t, eps)
            if clip:
                x0 = x0.clamp(-1, 1)
                eps = (x - _gather(process.alphas_cumprod, t, x).sqrt() * x0) / (1 - _gather(process.alphas_cumprod, t, x)).sqrt()
            a_prev = _gather(process.alphas_cumprod_prev, t, x)
            x = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
        return x

    @torch.no_grad()
    def ancestral_sample(self, model_fn: ModelFn, noise: torch.Tensor, gen: torch.Generator,
                         steps: int = 250, clip: bool = False) -> torch.Tensor:
        """Ancestral DDPM sampling x_{t−1} ~ p_θ(x_{t−1} | x_t) from x_T = ``noise``; per-step noise from ``gen``."""
        if steps < 2:
            raise ValueError(f"ancestral sampling needs at least 2 steps (got {steps})")
        process = self.respace(steps)
        x = noise
        for i in reversed(range(process.num_timesteps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            mean, log_var, _ = process.p_mean_log_variance(model_fn(x, process.timestep_map.to(x.device)[t]), x, t, clip)
            z = torch.randn(x.shape, generator=gen).to(x.device) if i > 0 else torch.zeros_like(x)
            x = mean + torch.exp(0.5 * log_var) * z
        return x


def guided(model: Callable[..., torch.Tensor], y: torch.Tensor, null_label: int, scale: float,
           guided_channels: int | None = None) -> ModelFn:
    """Classifier-free guidance: ε̃ = ε_u + s (ε_c − ε_u), with the conditional and unconditional
    (null-label) predictions from one doubled batch. s = 1 is the conditional prediction, s = 0 the
    unconditional one. Only the first ``guided_channels`` output channels are guided: with learned Σ
    pass the ε channels (C), so Σ comes from the conditional prediction and stays in [β̃_t, β_t]."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        cond, uncond = out.chunk(2)
        c = cond.shape[1] if guided_channels is None else guided_channels
        mixed = uncond[:, :c] + scale * (cond[:, :c] - uncond[:, :c])
        return torch.cat([mixed, cond[:, c:]], dim=1)

    return model_fn
