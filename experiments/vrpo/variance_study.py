"""The VRPO variance study (``python -m src.run experiment=vrpo_variance``, the thin job
``src/jobs/vrpo_variance.py``): measured against exact predictions at a fixed policy/reference pair
on the Markov-chain testbed (``src/data/markov.py``, docs/vrpo.md).

1. Reference: a small LLaDA trained by SFT (masked-diffusion loss) on chain sequences.
2. Policy: the reference after ``policy_steps`` VRPO steps on Bradley–Terry pairs of its own samples,
   so π_θ ≠ π_ref but the two stay correlated (ρ < 1).
3. ``pairs`` held-out pairs; for each response, the exact l-form ELBO decomposition of policy and
   reference by enumerating all 2^L − 1 masks (``elbo.exact``): exact s, loss, V_t, V_yt, ρ.
4. Per configuration (n_t, n_yt, antithetic, form, timesteps): ``repeats`` independent estimates of
   every pair at once: Var ŝ per pair (mean over pairs), Var of the loss, the loss bias, and the traces
   of the gradient covariances of the batch-mean loss and score over all parameters, with bootstrap
   95% intervals over repeats. Predictions (iid l): Var ŝ from ``vrpo.score_variance``; Var loss ≈
   σ(−s)²·Var ŝ (first order); bias ≤ √Var ŝ (Theorem 1) and ≈ ½σ(s)σ(−s)·Var ŝ (second order).
   The two gradient traces are the terms of Theorem 4's bound; the bound itself is not evaluated.
5. Distance curve: the same policy training continued to each of ``distance_steps``; at each, from the
   exact decomposition alone, ρ, the predicted antithetic gain at (4, 1) and an ELBO proxy of
   KL(π_ref ‖ π_θ), the mean of B_ref − B_θ over the held-out responses (samples of π_ref).

Writes ``variance.json`` (a ``configs`` list) and ``variance.md`` into the run dir.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from src.assemble import assemble, plain
from src.errors import ConfigError
from src.data.markov import MarkovChain, bradley_terry
from src.diffusion import masked
from src.estimators import elbo, masks, vrpo
from src.estimators.timesteps import generator
from src.mup.plan import build_model
from src.records import RunRecord, config_hash

log = logging.getLogger("src.vrpo_variance")


def _adam(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr)


def train_reference(model: torch.nn.Module, chain: MarkovChain, steps: int, batch: int, lr: float, seed: int) -> list[float]:
    """SFT on fresh chain sequences: the masked-diffusion loss (stratified t) on the response."""
    optimizer, losses = _adam(model, lr), []
    for step in range(steps):
        gen = generator(seed, "sft", step)
        tokens = chain.sequences(batch, gen)
        d = masks.draw(1, 1, batch, tokens.shape[1], gen, "stratified")
        loss = masked.loss(model, tokens, chain.maskable(batch), d, model.mask_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def preference_pairs(reference: torch.nn.Module, chain: MarkovChain, count: int, tau: float,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequences: two samples of the reference per prompt, labelled by Bradley–Terry."""
    prompts = chain.prompts(count, gen)
    both = [torch.cat([prompts, masked.sample(reference, prompts, chain.length, reference.mask_id,
                                              temperature=1.0, gen=gen)], 1) for _ in range(2)]
    return bradley_terry(both[0], both[1], chain.reward(both[0]), chain.reward(both[1]), tau, gen)


def estimate(policy, reference, chosen, rejected, maskable, setting: dict[str, Any], beta: float,
             gen: torch.Generator) -> torch.Tensor:
    """ŝ per pair for one Monte Carlo draw of ``setting`` (with gradient through the policy)."""
    size, length = chosen.shape
    draws = vrpo.pair_draws(setting["n_t"], setting["n_yt"], size, length, setting["antithetic"], gen,
                            setting["timesteps"])
    s, _ = vrpo.pair_scores(policy, reference, chosen, rejected, maskable, maskable, draws, beta, policy.mask_id,
                            form=setting["form"], eps=setting["eps"])
    return s


def policy_training(policy, reference, chosen, rejected, maskable, batch: int, lr: float, beta: float,
                    seed: int) -> Iterator[float]:
    """VRPO steps (n_t = 4, antithetic, l-form) on random batches of the pairs, for as long as asked;
    yields each step's loss (step k's batch and masks come from generator(seed, "policy", k))."""
    optimizer = _adam(policy, lr)
    setting = {"n_t": 4, "n_yt": 1, "antithetic": True, "form": "l", "eps": 0.0, "timesteps": "iid"}
    for step in itertools.count():
        gen = generator(seed, "policy", step)
        pick = torch.randint(0, len(chosen), (batch,), generator=gen)
        s = estimate(policy, reference, chosen[pick], rejected[pick], maskable[pick], setting, beta, gen)
        loss = vrpo.dpo_loss(s).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield loss.item()


def exact_pairs(policy, reference, chosen, rejected, maskable) -> list[tuple[vrpo.ResponseStats, vrpo.ResponseStats]]:
    """The exact decomposition of every pair's chosen and rejected ELBOs."""
    def stats(tokens, mask):
        return vrpo.ResponseStats.of(elbo.exact(policy, tokens, mask, policy.mask_id),
                                     elbo.exact(reference, tokens, mask, policy.mask_id))
    return [(stats(w, m), stats(l, m)) for w, l, m in zip(chosen, rejected, maskable)]


def distance_point(steps: int, pairs, beta: float) -> dict[str, float]:
    """How far the policy is from the reference after ``steps`` steps, and what antithetic sampling
    gains there: ρ (n = 1), the predicted Var ŝ ratio off/on at (4, 1), and the KL proxy."""
    responses = [x for p in pairs for x in p]
    gain = vrpo.score_variance(pairs, beta, 4, 1, False) / vrpo.score_variance(pairs, beta, 4, 1, True)
    return {"policy_steps": steps, "kl_proxy": float(np.mean([-x.elbo_gap for x in responses])),
            "rho": float(np.mean([x.correlation(1, 1) for x in responses])), "antithetic_gain_4_1": gain}


def _interval(samples: np.ndarray) -> list[float]:
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def bootstrap(values: np.ndarray, statistic, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``statistic`` of ``values`` (repeats first) over bootstrap resamples of the repeats."""
    n = len(values)
    return np.array([statistic(values[rng.integers(0, n, n)]) for _ in range(resamples)])


class TraceOfCovariance:
    """tr Var of a vector over repeats (Welford's running mean and squared deviations, per coordinate)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, vector: torch.Tensor) -> None:
        x = vector.double()
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.clone(), torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    @property
    def trace(self) -> float:
        return float(self.m2.sum() / (self.count - 1))


def _flat_grad(model: torch.nn.Module, value: torch.Tensor, retain: bool = False) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, params, retain_graph=retain)])


def measure(policy, reference, chosen, rejected, maskable, setting: dict[str, Any], beta: float, repeats: int,
            seed: int, gradients: bool) -> dict[str, Any]:
    """ŝ and loss per repeat and pair, (repeats, pairs); traces of Var ∇ loss̄ and Var ∇ ŝ̄ (batch means)."""
    scores, grad_loss, grad_score = [], TraceOfCovariance(), TraceOfCovariance()
    key = (setting["n_t"], setting["n_yt"], int(setting["antithetic"]), setting["form"], setting["timesteps"])
    for r in range(repeats):
        gen = generator(seed, "measure", *key, r)
        with torch.set_grad_enabled(gradients):
            s = estimate(policy, reference, chosen, rejected, maskable, setting, beta, gen)
        if gradients:
            grad_loss.add(_flat_grad(policy, vrpo.dpo_loss(s).mean(), retain=True))
            grad_score.add(_flat_grad(policy, s.mean()))
        scores.append(s.detach().double())
    s = torch.stack(scores).numpy()
    out = {"s": s, "loss": np.logaddexp(0.0, -s)}
    if gradients:
        out |= {"grad_loss_trace": grad_loss.trace, "grad_score_trace": grad_score.trace}
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def config_summary(setting: dict[str, Any], m: dict[str, Any], pairs, s_exact: np.ndarray, beta: float,
              resamples: int, rng: np.random.Generator) -> dict[str, Any]:
    """One configuration's entry of variance.json: measured values with 95% bootstrap intervals beside
    the predictions."""
    var_s = lambda v: float(v.var(0, ddof=1).mean())  # noqa: E731 — mean over pairs of Var ŝ
    measured = var_s(m["s"])
    exact_loss = np.logaddexp(0.0, -s_exact)
    iid_l = setting["form"] == "l" and setting["timesteps"] == "iid"
    predicted = [beta**2 * (w.difference_variance(setting["n_t"], setting["n_yt"], setting["antithetic"])
                            + l.difference_variance(setting["n_t"], setting["n_yt"], setting["antithetic"]))
                 for w, l in pairs]
    predicted_var = float(np.mean(predicted))
    per_pair_var = m["s"].var(0, ddof=1)
    entry = {
        **{k: setting[k] for k in ("n_t", "n_yt", "antithetic", "form", "timesteps")},
        "var_score": {"measured": measured, "ci95": _interval(bootstrap(m["s"], var_s, resamples, rng)),
                      "predicted": predicted_var if iid_l else None,
                      "predicted_note": None if iid_l else "no closed form (the prediction is for iid l)"},
        "var_loss": {"measured": var_s(m["loss"]),
                     "ci95": _interval(bootstrap(m["loss"], var_s, resamples, rng)),
                     "first_order": float(np.mean(_sigmoid(-s_exact) ** 2 * (predicted if iid_l else per_pair_var)))},
        "loss_bias": {"measured": float((m["loss"].mean(0) - exact_loss).mean()),
                      "ci95": _interval(bootstrap(m["loss"], lambda v: (v.mean(0) - exact_loss).mean(), resamples, rng)),
                      "bound_sqrt_var": float(np.mean(np.sqrt(per_pair_var))),
                      "second_order": float(np.mean(0.5 * _sigmoid(s_exact) * _sigmoid(-s_exact) * per_pair_var))},
        "mean_score": {"measured": float(m["s"].mean()), "exact": float(s_exact.mean())},
    }
    if "grad_loss_trace" in m:
        entry["grad_trace"] = {"loss": m["grad_loss_trace"], "score": m["grad_score_trace"]}
    return entry


SETTINGS = {  # the paper's Table 2, naive DPO, a stratified-l arm and the t-form at n = 1
    "(4,1,anti)": (4, 1, True, "l", "iid"), "(1,1,anti)": (1, 1, True, "l", "iid"),
    "(8,1,anti)": (8, 1, True, "l", "iid"), "(1,4,anti)": (1, 4, True, "l", "iid"),
    "(2,2,anti)": (2, 2, True, "l", "iid"), "(4,1,indep)": (4, 1, False, "l", "iid"),
    "(1,1,indep) naive": (1, 1, False, "l", "iid"), "(4,1,anti) stratified l": (4, 1, True, "l", "stratified"),
    "(1,1,anti) t-form": (1, 1, True, "t", "iid"),
}


def ratios(entries: dict[str, dict[str, Any]], resamples_s: dict[str, np.ndarray], pairs, beta: float) -> list[dict]:
    """The three predictions as ratios of Var ŝ: budget, allocation and antithetic sampling."""
    def predicted(name):
        n_t, n_yt, anti, _, _ = SETTINGS[name]
        return vrpo.score_variance(pairs, beta, n_t, n_yt, anti)

    out = []
    for label, top, bottom in (("budget n=1 / n=8", "(1,1,anti)", "(8,1,anti)"),
                               ("budget n=4 / n=8", "(4,1,anti)", "(8,1,anti)"),
                               ("allocation (1,4) / (4,1)", "(1,4,anti)", "(4,1,anti)"),
                               ("allocation (2,2) / (4,1)", "(2,2,anti)", "(4,1,anti)"),
                               ("antithetic off / on, (4,1)", "(4,1,indep)", "(4,1,anti)"),
                               ("stratified l / iid l, (4,1)", "(4,1,anti) stratified l", "(4,1,anti)"),
                               ("t-form / l-form, (1,1)", "(1,1,anti) t-form", "(1,1,anti)")):
        if top not in entries or bottom not in entries:
            continue
        boot = resamples_s[top] / resamples_s[bottom]
        pred = predicted(top) / predicted(bottom) if SETTINGS[top][3:] == SETTINGS[bottom][3:] else None
        out.append({"ratio": label, "measured": entries[top]["var_score"]["measured"] / entries[bottom]["var_score"]["measured"],
                    "ci95": _interval(boot), "predicted": pred,
                    "within_ci": None if pred is None else bool(_interval(boot)[0] <= pred <= _interval(boot)[1])})
    return out


def fixed_pair(cfg: DictConfig) -> dict[str, Any]:
    """Steps 1–2 and 5: the reference (SFT), the policy after ``policy_steps`` VRPO steps, the held-out
    pairs, and the distance curve along the continued policy training."""
    spec = cfg.variance
    torch.manual_seed(cfg.seed)
    chain = MarkovChain(spec.chain.vocab, spec.chain.length, spec.chain.p_jump)
    reference = build_model(assemble(cfg, {"vocab_size": chain.vocab}))
    sft = train_reference(reference, chain, spec.sft_steps, spec.sft_batch, spec.sft_lr, cfg.seed)
    reference.eval().requires_grad_(False)
    log.info("reference: SFT loss %.3f → %.3f over %d steps", np.mean(sft[:20]), np.mean(sft[-20:]), len(sft))

    gen = generator(cfg.seed, "pairs")
    chosen, rejected = preference_pairs(reference, chain, spec.train_pairs, spec.tau, gen)
    maskable = chain.maskable(len(chosen))
    policy = copy.deepcopy(reference).requires_grad_(True)
    identical = estimate(policy, reference, chosen[:8], rejected[:8], maskable[:8],
                         {"n_t": 4, "n_yt": 1, "antithetic": True, "form": "l", "eps": 0.0, "timesteps": "iid"},
                         spec.beta, generator(cfg.seed, "identical"))
    s_zero = bool(torch.equal(identical.detach(), torch.zeros(8)))
    held_w, held_l = preference_pairs(reference, chain, spec.pairs, spec.tau, generator(cfg.seed, "held-out"))
    held_mask = chain.maskable(spec.pairs)
    training = policy_training(policy, reference, chosen, rejected, maskable, spec.policy_batch, spec.policy_lr,
                               spec.beta, cfg.seed)
    dpo, curve, measured = [], [], None
    for steps in sorted({spec.policy_steps, *spec.distance_steps}):
        dpo += [next(training) for _ in range(steps - len(dpo))]
        if steps == spec.policy_steps:
            measured, loss_at = copy.deepcopy(policy), [float(np.mean(dpo[:10])), float(np.mean(dpo[-10:]))]
        if steps in spec.distance_steps:
            curve.append(distance_point(steps, exact_pairs(policy, reference, held_w, held_l, held_mask), spec.beta))
            log.info("distance after %d steps: %s", steps, curve[-1])
    log.info("policy: VRPO loss %.3f → %.3f over %d steps", *loss_at, spec.policy_steps)
    return {"policy": measured, "reference": reference, "held": (held_w, held_l, held_mask), "sft": sft,
            "loss_at": loss_at, "curve": curve, "s_zero": s_zero}


def study(cfg: DictConfig, run_dir: Path, started: float) -> RunRecord:
    """The whole study: writes variance.json and variance.md into ``run_dir``."""
    spec = cfg.variance
    if unknown := [name for name in spec.settings if name not in SETTINGS]:
        raise ConfigError(f"variance.settings: unknown {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    fixed = fixed_pair(cfg)
    policy, reference, (held_w, held_l, held_mask) = fixed["policy"], fixed["reference"], fixed["held"]
    sft, loss_at, curve, s_zero = fixed["sft"], fixed["loss_at"], fixed["curve"], fixed["s_zero"]
    pairs = exact_pairs(policy, reference, held_w, held_l, held_mask)
    s_exact = np.array([vrpo.exact_score(p, spec.beta) for p in pairs])
    rng = np.random.default_rng([cfg.seed, 23])
    entries, boot_s = {}, {}
    for name in spec.settings:
        n_t, n_yt, anti, form, timesteps = SETTINGS[name]
        setting = {"n_t": n_t, "n_yt": n_yt, "antithetic": anti, "form": form, "timesteps": timesteps,
                   "eps": 0.0}
        m = measure(policy, reference, held_w, held_l, held_mask, setting, spec.beta, spec.repeats, cfg.seed,
                    spec.gradients)
        entries[name] = {"name": name, **config_summary(setting, m, pairs, s_exact, spec.beta, spec.bootstrap, rng)}
        boot_s[name] = bootstrap(m["s"], lambda v: float(v.var(0, ddof=1).mean()), spec.bootstrap,
                                 np.random.default_rng([cfg.seed, 29]))  # the same resamples for every config
        log.info("%-26s Var ŝ %.4g (predicted %s)", name, entries[name]["var_score"]["measured"],
                 entries[name]["var_score"]["predicted"])
    result = {
        "testbed": {"chain": dict(spec.chain), "beta": spec.beta, "pairs": spec.pairs, "repeats": spec.repeats,
                    "sft_loss": [float(np.mean(sft[:20])), float(np.mean(sft[-20:]))],
                    "policy_dpo_loss": loss_at,
                    "exact_score_mean": float(s_exact.mean()), "exact_score_abs_mean": float(np.abs(s_exact).mean()),
                    "timestep_share_antithetic": float(np.mean([vrpo.timestep_share(x) for p in pairs for x in p])),
                    "timestep_share_independent": float(np.mean([vrpo.timestep_share(x, False) for p in pairs for x in p])),
                    "rho": float(np.mean([x.correlation(1, 1) for p in pairs for x in p])),
                    "score_identically_zero_at_reference": s_zero},
        "configs": list(entries.values()),
        "ratios": ratios(entries, boot_s, pairs, spec.beta),
        "distance": curve,
    }
    (run_dir / "variance.json").write_text(json.dumps(result, indent=2))
    (run_dir / "variance.md").write_text(markdown(result))
    log.info("%s", markdown(result))
    resolved = plain(cfg)
    final = {f"var_score/{e['name']}": e["var_score"]["measured"] for e in entries.values()}
    return RunRecord(status="ok", config=resolved, config_hash=config_hash(resolved),
                     metrics={"final": final, "best": {}}, sweep_metric=math.inf, steps=spec.sft_steps,
                     wall_time_s=time.time() - started)


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.3g}"


def markdown(result: dict[str, Any]) -> str:
    t = result["testbed"]
    lines = [f"Testbed: K={t['chain']['vocab']}, L={t['chain']['length']}, β={t['beta']}, {t['pairs']} pairs × "
             f"{t['repeats']} repeats; timestep share a = {t['timestep_share_antithetic']:.2f} (shared), "
             f"{t['timestep_share_independent']:.2f} (independent); ρ = {t['rho']:.3f}; ŝ ≡ 0 at π_θ = π_ref: "
             f"{t['score_identically_zero_at_reference']}", "",
             "| config | Var ŝ measured [95% CI] | predicted | Var loss [95% CI] | σ(−s)²·Var ŝ | loss bias [95% CI] | "
             "√Var ŝ | ½σσ·Var ŝ | tr Var ∇loss | tr Var ∇ŝ |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in result["configs"]:
        v, lo, b, g = e["var_score"], e["var_loss"], e["loss_bias"], e.get("grad_trace", {})
        lines.append(f"| {e['name']} | {_num(v['measured'])} [{_num(v['ci95'][0])}, {_num(v['ci95'][1])}] | "
                     f"{_num(v['predicted'])} | {_num(lo['measured'])} [{_num(lo['ci95'][0])}, {_num(lo['ci95'][1])}] | "
                     f"{_num(lo['first_order'])} | {_num(b['measured'])} [{_num(b['ci95'][0])}, {_num(b['ci95'][1])}] | "
                     f"{_num(b['bound_sqrt_var'])} | {_num(b['second_order'])} | {_num(g.get('loss'))} | {_num(g.get('score'))} |")
    lines += ["", "| ratio of Var ŝ | measured [95% CI] | predicted | within CI |", "|---|---|---|---|"]
    lines += [f"| {r['ratio']} | {_num(r['measured'])} [{_num(r['ci95'][0])}, {_num(r['ci95'][1])}] | "
              f"{_num(r['predicted'])} | {r['within_ci']} |" for r in result["ratios"]]
    if result["distance"]:
        lines += ["", "| policy steps | KL proxy E[B_ref − B_θ] | ρ | predicted antithetic gain at (4,1) |",
                  "|---|---|---|---|"]
        lines += [f"| {d['policy_steps']} | {_num(d['kl_proxy'])} | {d['rho']:.4f} | {_num(d['antithetic_gain_4_1'])} |"
                  for d in result["distance"]]
    return "\n".join(lines) + "\n"
