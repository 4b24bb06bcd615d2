"""Masked diffusion and the shared ELBO estimator core: masks, unbiasedness of the t- and l-form
against exact enumeration, the variance decomposition, antithetic ŝ ≡ 0, the DPO loss, the SFT loss
and the sampler."""

from __future__ import annotations

import math

import pytest
import torch

from src.diffusion import masked
from src.estimators import elbo, masks, vrpo
from src.estimators.timesteps import generator
from src.models.llada import LLaDA

VOCAB = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = LLaDA(VOCAB, width=32, depth=2, head_dim=8, init_std=0.3).eval()  # a peaked, context-dependent predictor
    return net


def _sequence(length=8, prompt=2):
    tokens = torch.tensor([[3, 5, 1, 2, 7, 7, 0, 4, 6, 2][:length]])
    maskable = torch.arange(length) >= prompt
    return tokens, maskable.unsqueeze(0)


def test_l_form_masks_exactly_l_response_tokens_and_t_form_masks_at_rate_t():
    gen = generator(0, "test")
    maskable = torch.tensor([[False, False, True, True, True, True, True, False]])  # prompt, response, padding
    d = masks.draw(4000, 1, 1, 8, gen)
    mask, weight = masks.masks(d, maskable, "l")
    counts = mask.sum(-1)
    assert not mask[..., ~maskable[0]].any()
    assert torch.allclose(weight, 5 / counts)  # L/l
    assert set(counts.flatten().tolist()) == {1, 2, 3, 4, 5}
    assert counts.float().mean() == pytest.approx(3.0, abs=0.1)  # l ~ U{1..5}
    mask, weight = masks.masks(d, maskable, "t", eps=0.0)
    assert not mask[..., ~maskable[0]].any() and torch.equal(weight, 1 / d.t)
    rate = mask[..., 2:7].float().mean(-1).flatten()
    assert (rate - d.t.flatten()).mean().abs() < 0.02  # marginal P(masked | t) = t


def test_a_draw_repeats_each_timestep_for_its_masked_copies():
    d = masks.draw(3, 4, 2, 6, generator(1))
    assert d.t.shape == (12, 2) and d.noise.shape == (12, 2, 6)
    assert torch.equal(d.t[0:4], d.t[0].expand(4, 2)) and not torch.equal(d.t[0], d.t[4])


def test_t_form_and_l_form_are_unbiased_against_exact_enumeration(model):
    tokens, maskable = _sequence()
    exact = elbo.exact(model, tokens[0], maskable[0], model.mask_id)
    assert len(exact.values) == 2**6 - 1
    for form, copies in (("l", 4000), ("t", 20000)):
        d = masks.draw(copies, 1, 1, tokens.shape[1], generator(2, form))
        with torch.no_grad():
            values = elbo.terms(model, tokens, maskable, d, model.mask_id, form=form, chunk=4096).flatten().double()
        se = values.std() / math.sqrt(copies)
        assert abs(values.mean() - exact.elbo) < 4 * se, (form, values.mean(), exact.elbo, se)
    assert exact.elbo < 0


def test_variance_of_the_estimate_follows_the_exact_decomposition(model):
    """Var B̂ = V_t/n_t + V_yt/(n_t n_yt), measured over 3000 repeats per allocation."""
    tokens, maskable = _sequence()
    exact = elbo.exact(model, tokens[0], maskable[0], model.mask_id)
    v_t, v_yt = exact.covariance(exact)
    assert v_t > 0.1 * v_yt  # the timestep part is not negligible here
    repeats = 3000
    for n_t, n_yt in ((1, 1), (2, 2), (4, 1)):
        d = masks.draw(n_t, n_yt, repeats, tokens.shape[1], generator(3, n_t, n_yt))
        with torch.no_grad():
            estimates = elbo.estimate(model, tokens.expand(repeats, -1), maskable.expand(repeats, -1), d,
                                      model.mask_id, chunk=4096).double()
        predicted = v_t / n_t + v_yt / (n_t * n_yt)
        rel_se = math.sqrt(2 / (repeats - 1))  # of a sample variance (Gaussian approximation)
        assert estimates.var().item() == pytest.approx(predicted, rel=4 * rel_se), (n_t, n_yt)


def test_antithetic_score_is_exactly_zero_when_policy_is_reference(model):
    reference = LLaDA(VOCAB, width=32, depth=2, head_dim=8, init_std=0.3).eval()
    reference.load_state_dict(model.state_dict())
    tokens, maskable = _sequence()
    batch = (tokens.expand(5, -1), maskable.expand(5, -1))
    with torch.no_grad():
        dw, dl = masks.draw(4, 1, 5, 8, generator(4, "w")), masks.draw(4, 1, 5, 8, generator(4, "l"))
        s = vrpo.score(elbo.estimate(model, *batch, dw, model.mask_id), elbo.estimate(reference, *batch, dw, model.mask_id),
                       elbo.estimate(model, *batch, dl, model.mask_id), elbo.estimate(reference, *batch, dl, model.mask_id),
                       beta=0.2)
        assert torch.equal(s, torch.zeros(5))
        independent = elbo.estimate(reference, *batch, masks.draw(4, 1, 5, 8, generator(5)), model.mask_id)
        assert not torch.equal(elbo.estimate(model, *batch, dw, model.mask_id), independent)
    assert torch.allclose(vrpo.dpo_loss(s), torch.full((5,), math.log(2)))


def test_chunked_checkpointed_copies_give_the_batched_loss_and_gradient():
    """Accumulating the gradient chunk by chunk over the copies (recomputed in backward) is exact."""
    torch.manual_seed(1)
    policy = LLaDA(VOCAB, width=32, depth=2, head_dim=8, init_std=0.3).eval()
    reference = LLaDA(VOCAB, width=32, depth=2, head_dim=8, init_std=0.3).eval().requires_grad_(False)
    tokens, maskable = _sequence()
    chosen, rejected = tokens.expand(3, -1), tokens.flip(1).expand(3, -1)
    draws = vrpo.pair_draws(4, 1, 3, 8, True, generator(6))
    results = []
    for chunk, checkpointing in ((None, False), (6, False), (6, True)):  # 6 rows: one copy of chosen + rejected
        policy.zero_grad()
        s, _ = vrpo.pair_scores(policy, reference, chosen, rejected, maskable.expand(3, -1), maskable.expand(3, -1),
                                draws, 0.2, policy.mask_id, chunk=chunk, checkpointing=checkpointing)
        vrpo.dpo_loss(s).mean().backward()
        results.append((s.detach(), [p.grad.clone() for p in policy.parameters()]))
    (s0, g0), *others = results
    for s, g in others:
        assert torch.allclose(s, s0, atol=1e-6) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g, g0))
    assert any(g.abs().sum() > 0 for g in g0)


def test_dpo_loss_is_the_direct_formula():
    bw, rw, bl, rl = (torch.tensor(v) for v in ([-3.0, -1.0], [-3.5, -1.2], [-4.0, -2.0], [-3.8, -2.5]))
    s = vrpo.score(bw, rw, bl, rl, beta=0.5)
    direct = 0.5 * ((bw - rw) - (bl - rl))
    assert torch.equal(s, direct)
    assert torch.allclose(vrpo.dpo_loss(s), -torch.log(torch.sigmoid(direct)))
    assert vrpo.dpo_loss(torch.tensor(-200.0)).item() == pytest.approx(200.0)  # no overflow


def test_predicted_score_variance_rules():
    """Budget 1/n, allocation 1 + a(n/n_t − 1), antithetic (V_θ + V_ref)/(V_θ + V_ref − 2ρ√(V_θ V_ref))."""
    stats = vrpo.ResponseStats(policy=(3.0, 1.0), ref=(2.0, 1.5), cross=(2.2, 0.9), elbo_gap=0.1)
    pair = [(stats, stats)]
    var = lambda n_t, n_yt, anti=True: vrpo.score_variance(pair, 1.0, n_t, n_yt, anti)  # noqa: E731
    assert var(1, 1) / var(8, 1) == pytest.approx(8.0)
    a = vrpo.timestep_share(stats)
    assert var(1, 4) / var(4, 1) == pytest.approx(1 + a * 3) and var(2, 2) / var(4, 1) == pytest.approx(1 + a)
    v_p, v_r, rho = sum(stats.policy), sum(stats.ref), stats.correlation(1, 1)
    assert var(1, 1, False) / var(1, 1) == pytest.approx((v_p + v_r) / (v_p + v_r - 2 * rho * math.sqrt(v_p * v_r)))


def test_sft_loss_never_touches_the_prompt_and_is_the_direct_formula(model):
    """SFT: prompt never masked; loss = (1/L_b) Σ_masked CE/p with p = (1 − ε)t + ε, L_b counting padding."""
    tokens, maskable = _sequence()
    tokens, maskable = tokens.expand(64, -1), maskable.expand(64, -1)
    d = masks.draw(1, 1, 64, 8, generator(6))
    mask, _ = masks.masks(d, maskable, "t", eps=1e-3)
    assert not mask[..., :2].any() and mask[..., 2:].any()
    with torch.no_grad():
        loss = masked.loss(model, tokens, maskable, d, model.mask_id, eps=1e-3)
        logits = model(masks.apply(tokens, mask, model.mask_id)[0])
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
    p = 0.999 * d.t[0] + 1e-3
    direct = ((ce * mask[0]).sum(-1) / p / 6).mean()
    assert loss.item() == pytest.approx(direct.item(), rel=1e-5)


def test_sampler_fills_every_mask_in_block_order_and_never_emits_the_mask_token(model):
    prompt = torch.tensor([[3, 5], [1, 2]])
    seen = []

    def spy(x):
        seen.append((x == model.mask_id).clone())
        return model(x)

    out = masked.sample(spy, prompt, gen_length=8, mask_id=model.mask_id, steps=8, block_length=4,
                        suppress=[0], temperature=1.0, gen=generator(7))
    assert out.shape == (2, 8) and (out < VOCAB).all()
    for m in seen[:4]:  # while the first block is filled, the second stays fully masked
        assert m[:, 6:].all()
    assert [int(m[:, 2:].sum()) for m in seen] == [16, 14, 12, 10, 8, 6, 4, 2]  # one token per row per step
    for remasking in ("low_confidence", "random"):
        again = masked.sample(model, prompt, 8, model.mask_id, remasking=remasking, gen=generator(8))
        assert torch.equal(again, masked.sample(model, prompt, 8, model.mask_id, remasking=remasking, gen=generator(8)))
    with pytest.raises(ValueError, match="multiple of block_length"):
        masked.sample(model, prompt, 8, model.mask_id, block_length=3)


def test_llada_is_bidirectional_and_its_mup_roles_come_from_shapes():
    import functools

    from src.mup.optim import OptimizerSpec

    from src.mup.plan import Parametrization, build_model, make_plan

    factory = functools.partial(LLaDA, VOCAB, head_dim=8)
    param = Parametrization(name="mup", width_rule=True, base_width=32, base_depth=2)
    plan = make_plan(factory, 128, 2, 8, param, OptimizerSpec(torch.optim.AdamW, 1e-3))
    roles = {row.key: row.label for row in plan.rows}
    expected = {"tok_emb.weight": "input", "head.weight": "output", "norm_final.weight": "vector",
                "blocks.*.norm1.weight": "vector"}
    expected |= {f"blocks.*.{part}.weight": "hidden" for part in ("attn.q", "attn.k", "attn.v", "attn.o",
                                                                  "mlp.gate", "mlp.up", "mlp.down")}
    assert {k: roles[k] for k in expected} == expected and set(roles) == set(expected) | {"blocks.*.norm2.weight"}
    net = build_model(plan)
    tokens = torch.randint(0, VOCAB, (2, 6))
    later = tokens.clone()
    later[:, -1] = (later[:, -1] + 1) % VOCAB
    assert net(tokens).shape == (2, 6, VOCAB)
    assert not torch.allclose(net(tokens)[:, 0], net(later)[:, 0])  # the first position sees the last


def test_score_noise_by_repeated_draws_matches_theory_at_the_reference(model):
    """At policy = reference VRPO's antithetic ŝ is exactly 0 in every draw; naive DPO's is pure noise
    (s = 0), so its noise-to-signal is large and half its signs are "wrong". Away from the reference
    both estimators agree on s within the noise."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "score_noise", Path(__file__).resolve().parents[1] / "experiments" / "vrpo" / "score_noise.py")
    score_noise = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score_noise)
    tokens, maskable = _sequence()
    pairs = {"chosen": tokens.expand(4, -1), "rejected": tokens.flip(1).expand(4, -1),
             "chosen_response": maskable.expand(4, -1), "rejected_response": maskable.expand(4, -1)}
    same = score_noise.draw_scores(model, model, pairs, 0.2, draws=16)
    assert same["vrpo"].shape == (16, 4) and torch.equal(same["vrpo"], torch.zeros(16, 4))
    assert same["naive"].var(0).min() > 0
    torch.manual_seed(3)
    other = LLaDA(VOCAB, width=32, depth=2, head_dim=8, init_std=0.3).eval()
    apart = score_noise.draw_scores(model, other, pairs, 0.2, draws=32)
    table = score_noise.noise_table(apart)
    assert table["var_naive"] > 4 * table["var_vrpo"] > 0  # budget 8 and antithetic both cut it
    naive, reduced = apart["naive"].mean(0), apart["vrpo"].mean(0)
    assert torch.all((naive - reduced).abs() < 4 * (apart["naive"].var(0) / 32).sqrt() + 1e-6)
    assert table["mean_abs_s"] == pytest.approx(float(reduced.abs().mean()))  # s from the VRPO draws alone
    four = score_noise.noise_table(score_noise.draw_scores(model, other, pairs, 0.2, draws=32, n_t=4))
    assert table["var_vrpo"] < four["var_vrpo"] < table["var_naive"]  # n_t = 4: between naive and n_t = 8
