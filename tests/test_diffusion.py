"""Diffusion math against closed forms and exact oracles: DDPM schedule, q-sample and posterior,
respacing, the learned-Σ VLB, DDIM and rectified-flow sampling of Gaussian data with exact
ε / velocity oracles, classifier-free guidance, and the timestep samplers."""

from __future__ import annotations

import math

import pytest
import torch

from src.diffusion.flow import RectifiedFlow
from src.diffusion.gaussian import GaussianDiffusion, guided
from src.estimators.timesteps import Draw, TimestepSampler, discretize, generator

MU, SIGMA = 0.3, 0.5  # the Gaussian "data" x_0 ~ N(μ, σ²) per coordinate


def test_linear_schedule_and_q_sample_match_closed_forms():
    d = GaussianDiffusion()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    assert torch.allclose(d.alphas_cumprod, abar) and float(abar[-1]) == pytest.approx(4.0358e-5, rel=1e-3)
    x0, noise, t = torch.randn(5, 2, 4, 4), torch.randn(5, 2, 4, 4), torch.tensor([0, 10, 500, 998, 999])
    expected = abar[t].sqrt().float().view(-1, 1, 1, 1) * x0 + (1 - abar[t]).sqrt().float().view(-1, 1, 1, 1) * noise
    assert torch.allclose(d.q_sample(x0, t, noise), expected, atol=1e-5)
    assert torch.equal(discretize(torch.tensor([0.0, 0.0505, 0.9999]), 1000), torch.tensor([0, 50, 999]))


def test_posterior_is_the_gaussian_conditional():
    """q(x_{t−1} | x_t, x_0) ∝ q(x_t | x_{t−1}) q(x_{t−1} | x_0): precision α_t/β_t + 1/(1 − ᾱ_{t−1})."""
    d = GaussianDiffusion()
    x0, xt = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    t = torch.tensor([1, 20, 400, 999])
    beta, abar_prev = d.betas[t], d.alphas_cumprod_prev[t]
    precision = (1 - beta) / beta + 1 / (1 - abar_prev)
    view = lambda v: v.float().view(-1, 1, 1, 1)  # noqa: E731
    mean = view((1 - beta).sqrt() / beta / precision) * xt + view(abar_prev.sqrt() / (1 - abar_prev) / precision) * x0
    got_mean, got_log_var = d.q_posterior(x0, xt, t)
    assert torch.allclose(got_mean, mean, atol=1e-5)
    assert torch.allclose(got_log_var[:, 0, 0, 0], torch.log(1 / precision).float(), rtol=1e-5)


def test_respacing_keeps_the_cumulative_alphas():
    d = GaussianDiffusion()
    r = d.respace(50)
    assert r.num_timesteps == 50 and r.timestep_map[0] == 0 and r.timestep_map[-1] == 999
    assert torch.allclose(r.alphas_cumprod, d.alphas_cumprod[r.timestep_map], rtol=1e-12)
    with pytest.raises(ValueError, match="between 1 and 1000"):
        d.respace(0)


def test_learned_sigma_trains_sigma_only_through_the_vlb():
    d = GaussianDiffusion(learn_sigma=True)
    x0, noise = torch.rand(3, 2, 4, 4) * 2 - 1, torch.randn(3, 2, 4, 4)
    t = torch.tensor([0.0, 0.3, 0.9])
    out = torch.zeros(3, 4, 4, 4, requires_grad=True)
    d.loss(lambda x, s: out, x0, t, noise).sum().backward()
    eps_grad = out.grad[:, :2].clone()
    out.grad = None
    ((noise - out[:, :2]) ** 2).flatten(1).mean(1).sum().backward()
    assert torch.allclose(eps_grad, out.grad[:, :2])  # the VLB sends nothing to ε
    assert out.grad[:, 2:].abs().sum() == 0 and eps_grad.abs().sum() > 0


def _eps_oracle(d: GaussianDiffusion):
    """E[ε | x_t] for x_0 ~ N(μ, σ²): √(1 − ᾱ)(x_t − √ᾱ μ)/(ᾱσ² + 1 − ᾱ)."""
    def model_fn(x, t):
        a = d.alphas_cumprod[t].float().view(-1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * SIGMA**2 + 1 - a)
    return model_fn


def test_ddim_with_an_exact_oracle_reproduces_gaussian_data():
    d = GaussianDiffusion()
    noise = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    x = d.ddim_sample(_eps_oracle(d), noise, steps=100)
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(SIGMA, rel=0.03)


def test_ancestral_sampling_with_an_exact_oracle_reproduces_gaussian_data():
    d = GaussianDiffusion()
    noise = torch.randn(20000, 4, generator=torch.Generator().manual_seed(1))
    x = d.ancestral_sample(_eps_oracle(d), noise, torch.Generator().manual_seed(2), steps=250)
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(SIGMA, rel=0.03)


def test_rectified_flow_euler_with_an_exact_velocity_reproduces_gaussian_data():
    """E[ε − x_0 | x_t] = −μ + (t − (1 − t)σ²)/((1 − t)²σ² + t²) · (x_t − (1 − t)μ)."""
    flow = RectifiedFlow()

    def velocity(x, t_scaled):
        t = (t_scaled / flow.time_scale).view(-1, 1)
        return -MU + (t - (1 - t) * SIGMA**2) / ((1 - t) ** 2 * SIGMA**2 + t**2) * (x - (1 - t) * MU)

    noise = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    for shift in (1.0, 3.0):
        x = flow.sample(velocity, noise, steps=200, shift=shift)
        assert float(x.mean()) == pytest.approx(MU, abs=0.01)
        assert float(x.std()) == pytest.approx(SIGMA, rel=0.03)
    sig = flow.sigmas(4, shift=3.0)
    assert float(sig[0]) == 1.0 and float(sig[-1]) == 0.0 and float(sig[2]) == pytest.approx(1.5 / 2.0)


def test_flow_loss_is_zero_for_the_true_velocity():
    flow = RectifiedFlow()
    x0, eps, t = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
    assert torch.allclose(flow.q_sample(x0, t, eps), (1 - t[:, None]) * x0 + t[:, None] * eps)
    assert float(flow.loss(lambda x, s: eps - x0, x0, t, eps).max()) == 0.0


def test_guidance_scale_one_is_conditional_and_zero_unconditional():
    def model(x, t, y):  # the output depends on the label; the last label (3) is the null one
        return x * (1 + y.float().view(-1, 1)) + t.float().view(-1, 1)

    x, t, y = torch.randn(5, 2), torch.arange(5), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(guided(model, y, 3, 1.0)(x, t), model(x, t, y))
    assert torch.allclose(guided(model, y, 3, 0.0)(x, t), model(x, t, torch.full_like(y, 3)))
    mixed = guided(model, y, 3, 4.0)(x, t)
    assert torch.allclose(mixed, model(x, t, torch.full_like(y, 3)) + 4.0 * (model(x, t, y) - model(x, t, torch.full_like(y, 3))))
    half = guided(lambda x, t, y: torch.cat([model(x, t, y), model(x, t, y) * 0 + y.float().view(-1, 1)], 1),
                  y, 3, 0.0, guided_channels=2)(x, t)
    assert torch.equal(half[:, 2:], y.float().view(-1, 1).expand(5, 2))  # the Σ channels stay conditional


def test_stratified_timesteps_cover_every_stratum():
    sampler = TimestepSampler("stratified")
    t = sampler.sample(8, 5, generator(0, "t"))
    assert t.shape == (8, 5)
    for column in t.T:  # the 8 copies of an item: one per stratum [i/8, (i+1)/8)
        assert sorted((column * 8).floor().long().tolist()) == list(range(8))
    across = sampler.sample(1, 16, generator(1, "t"))  # one copy: strata across the batch
    assert sorted((across[0] * 16).floor().long().tolist()) == list(range(16))


def test_logit_normal_and_iid_timesteps():
    t = TimestepSampler("logit_normal", mean=0.5, std=2.0).sample(1, 200000, generator(0))
    logit = torch.log(t / (1 - t)).double()
    assert float(logit.mean()) == pytest.approx(0.5, abs=0.02) and float(logit.std()) == pytest.approx(2.0, rel=0.02)
    u = TimestepSampler("iid").sample(4, 50000, generator(0)).double()
    assert float(u.mean()) == pytest.approx(0.5, abs=0.005) and 0 <= float(u.min()) and float(u.max()) < 1
    with pytest.raises(ValueError, match="iid, stratified, logit_normal"):
        TimestepSampler("uniform")


def test_draws_replay_and_streams_are_independent():
    sampler = TimestepSampler("iid")
    a = sampler.draw(3, 4, generator(7, 10, 0, "diffusion"), (1, 2, 2))
    b = sampler.draw(3, 4, generator(7, 10, 0, "diffusion"), (1, 2, 2))
    assert torch.equal(a.t, b.t) and torch.equal(a.noise, b.noise)  # same keys: the same draw
    other = sampler.draw(3, 4, generator(7, 11, 0, "diffusion"), (1, 2, 2))
    assert not torch.equal(a.t, other.t)
    one = a.copy(1)
    assert isinstance(one, Draw) and one.t.shape == (4,) and one.noise.shape == (4, 1, 2, 2)
    assert a.copies == 3 and sampler.draw(2, 3, generator(0), (5,), noise="uniform").noise.min() >= 0
    assert math.isclose(float(GaussianDiffusion.eval_timesteps(10)[0] * 1000), 50.0)
