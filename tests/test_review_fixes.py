"""Review fixes of the μP core: U-ViT's long skips, μTransfer across head dims, Shampoo's decoupled
decay, Adafactor's ε units, and the plan table's constant inits."""

from __future__ import annotations

import functools
import json
from fractions import Fraction as F

import pytest
import torch

from src.models.gpt2 import GPT2
from src.models.pixart import PixArt
from src.models.uvit import UViT
from src.mup.optim import OptimizerSpec, build_optimizer
from src.mup.plan import Parametrization, build_model, make_plan
from src.mup.rules import Power, rule
from tests.conftest import make_config
from tests.test_mup_core import COMPLETEP, core_plan

COMPLETEP_K2 = Parametrization(name="completep", width_rule=True, depth_rule="k2", base_width=16, base_depth=1)


def test_uvit_long_skip_gets_plain_hidden_rules():
    """W_skip [h ; skip] replaces the stream, unscaled by the branch multiplier: under CompleteP + SGD at
    r_L = 4 it keeps forward ×1 and LR ×1 (a branch would get ×1/r_L and ×r_L), like the time MLP."""
    factory = functools.partial(UViT, image_size=8, in_channels=1, num_classes=3, head_dim=8, patch_size=2)
    plan = make_plan(factory, 64, 4, 8, COMPLETEP_K2, OptimizerSpec(torch.optim.SGD, 0.1))
    rows = {row.key: row for row in plan.rows}
    skip, plain_hidden = rows["out_blocks.*.skip.weight"], rows["time_embed.0.weight"]
    assert (skip.group, skip.in_branch) == ("hidden", False)
    assert (skip.forward_mult, skip.lr_mult, skip.init_mult) == (
        plain_hidden.forward_mult, plain_hidden.lr_mult, plain_hidden.init_mult)
    assert (skip.forward_mult, skip.lr_mult) == (1.0, 1.0)
    assert rows["out_blocks.*.skip.bias"].group == "vector"
    assert rows["out_blocks.*.block.mlp.up.weight"].lr_mult == 4.0  # the block itself stays a branch


def _proxy_sweep(root, head_dim: int):
    """A finished one-run 'sweep' (no LR axis) whose proxy has ``head_dim`` and no base_head_dim."""
    job = root / "job0"
    job.mkdir(parents=True)
    config = {"model": {"head_dim": head_dim, "init_std": 0.02},
              "parametrization": {"name": "completep", "base_width": 32, "base_depth": 2, "base_head_dim": None},
              "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3}}
    (job / "metrics.json").write_text(json.dumps({"status": "ok", "config": config, "sweep_metric": 1.0}))
    (root / "transfer.json").write_text(json.dumps({"arms": []}))
    return root


def test_mutransfer_refuses_a_head_dim_change_without_base_head_dim(tmp_path, capsys):
    """Proxy head_dim 8, target 16, base_head_dim unset: the μP scale would silently be 1/√16."""
    from src.run import run

    sweep = _proxy_sweep(tmp_path / "sweep", head_dim=8)
    args = [*COMPLETEP, "model.head_dim=16", "print_plan=true", f"mutransfer.from={sweep}"]
    (tmp_path / "a").mkdir()
    with pytest.raises(SystemExit) as stop:
        run(make_config(*args), tmp_path / "a")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model.head_dim=16 differs from the μTransfer proxy's 8" in err
    assert "parametrization.base_head_dim=8" in err
    (tmp_path / "b").mkdir()  # naming the proxy's head dim makes it the exact √8/16
    run(make_config(*args, "parametrization.base_head_dim=8"), tmp_path / "b")
    assert "attn_scale=0.176777" in capsys.readouterr().out


# (r_n, r_L) = (4, 2): the width-depth paper's k ≥ 2 WD row for input / hidden / output weights
@pytest.mark.parametrize("name, row", [
    ("shampoo", (1 / 2, 1, 1 / 2)),  # Muon/Shampoo: λ/√r_n, λ, λ/√r_n
    ("shampoo_grafted", (1, 4, 1)),  # an RMSprop graft follows the sign-like row: λ, λ·r_n, λ
])
def test_shampoo_decays_decoupled_on_the_papers_row(name, row):
    cfg = make_config(*COMPLETEP, f"optimizer={name}")
    key = {"shampoo": "weight_decouple", "shampoo_grafted": "decoupled_weight_decay"}[name]
    assert cfg.optimizer[key] is True
    plan = core_plan(128, 4, optimizer=name)
    wd = {row.group: row.wd_mult for row in plan.rows}
    assert (wd["input"], wd["branch.hidden"], wd["output"]) == pytest.approx(row)


def test_l2_decay_is_kept_only_where_the_optimizer_applies_it_to_the_gradient():
    """Shampoo's coupled decay joins G before the preconditioner (L2 rule: λ ∝ gradient entries/init =
    r_n^-½·r_L^-1); ScalableShampoo's coupled decay joins the preconditioned step, the paper's row."""
    coupled = core_plan(128, 4, optimizer="shampoo", weight_decouple=False)
    assert {r.group: r.wd_mult for r in coupled.rows}["branch.hidden"] == pytest.approx(1 / 4)
    grafted = core_plan(128, 4, optimizer="shampoo_grafted", decoupled_weight_decay=False)
    assert {r.group: r.wd_mult for r in grafted.rows}["branch.hidden"] == pytest.approx(4)


def _adafactor_step(weight: torch.Tensor, grad: torch.Tensor, eps: tuple[float, float]) -> torch.Tensor:
    """One step of torch's Adafactor; d (the update-RMS clip) is set high so that it does not hide ε₁."""
    param = torch.nn.Parameter(weight.clone())
    param.grad = grad.clone()
    torch.optim.Adafactor([param], lr=1e-2, eps=eps, d=1e3).step()
    return param.detach()


def test_adafactor_eps_units_in_the_rule():
    """ε₁ in G² units where torch factors the second moment (mean(G²) ≥ ε₁), in gradient units where it
    does not (G² ≥ ε₁²); ε₂ floors RMS(W), so it follows the init multiplier."""
    hidden = rule("hidden", True, "sign", "k2", "adafactor", relative_step=True)
    vector = rule("vector", True, "sign", "k2", "adafactor", relative_step=True, factored=False)
    assert hidden.eps == (Power(F(-2), F(-2)), Power(F(-1, 2)))
    assert vector.eps == (Power(F(-1), F(-1)), Power())


@pytest.mark.parametrize("group, shape, size", [
    ("branch.hidden", (32, 48), 1e-4),  # factored: mean(G²) < ε₁ (the G² clamp binds)
    ("branch.vector", (48,), 1e-7),  # not factored: |G| < ε₁ (the gradient-unit clamp binds)
])
def test_adafactor_eps_follow_their_units(group, shape, size):
    """At (r_n, r_L) = (4, 2) a branch's gradient entries shrink by 1/(r_n·r_L) and RMS(W) by the init
    multiplier; with the plan's (ε₁, ε₂) torch's Adafactor then takes exactly the base step × init,
    with both ε's binding (RMS(W) < ε₂)."""
    plan = core_plan(128, 4, optimizer="adafactor")
    row = next(r for r in plan.rows if r.group == group)
    torch.manual_seed(0)
    weight, grad = 1e-4 * torch.randn(shape), size * torch.randn(shape)
    base_eps = (1e-6, 1e-3)
    base = _adafactor_step(weight, grad, base_eps)
    scaled_eps = tuple(e * m for e, m in zip(base_eps, row.eps_mult))
    scaled = _adafactor_step(row.init_mult * weight, grad / 8, scaled_eps)
    torch.testing.assert_close(scaled, row.init_mult * base, rtol=1e-4, atol=0)


def test_adafactor_groups_get_both_eps():
    plan = core_plan(128, 4, optimizer="adafactor")
    opt = build_optimizer(build_model(plan), plan)
    eps = {g["name"]: g["eps"] for g in opt.param_groups}
    eps1 = torch.finfo(torch.float32).eps
    assert eps["branch.hidden"] == pytest.approx((eps1 / 64, 1e-3 / 2))  # G² units; RMS(W) ∝ r_n^-½
    assert eps["branch.vector"] == pytest.approx((eps1 / 8, 1e-3))  # gradient units; RMS(W) ×1


def test_plan_table_shows_constant_inits():
    param = Parametrization(name="mup", width_rule=True, base_width=32, base_depth=2, zero_readout=True)
    factory = functools.partial(GPT2, vocab_size=64, max_seq_len=16, head_dim=8, tie_head=False)
    plan = make_plan(factory, 64, 2, 8, param, OptimizerSpec(torch.optim.AdamW, 1e-3, kwargs={"eps": 1e-8}))
    build_model(plan)
    lines = {line.split()[0]: line.split() for line in plan.table().splitlines()[2:]}
    init_col = lines["name"].index("init")
    cell = lambda name: " ".join(lines[name][init_col:init_col + 2])  # noqa: E731
    assert cell("norm_f.weight") == "1 (ones)"
    assert cell("blocks.0.attn.q.bias") == "0 (zeros)"
    assert cell("head.weight") == "0 (zeros)"  # zero_readout
    assert lines["blocks.0.attn.q.weight"][init_col] == f"{0.02 / 2 ** 0.5:.4g}"




@pytest.mark.parametrize("model, extra", [(PixArt, dict(cond_dim=16, cond_tokens=2)), (UViT, {})])
def test_adafactor_groups_share_one_set_of_multipliers(model, extra):
    """≥ 2-D vectors (PixArt's tables, U-ViT's positions) take ε₁ in G² units, so they get their own
    ``.factored`` group instead of sharing one (and its ε) with the 1-D vectors."""
    factory = functools.partial(model, image_size=8, in_channels=1, num_classes=10, head_dim=16, patch_size=2,
                                **extra)
    param = Parametrization(name="completep", width_rule=True, depth_rule="k2", base_width=32, base_depth=2)
    plan = make_plan(factory, 128, 4, 16, param, OptimizerSpec(torch.optim.Adafactor, 1e-2, kwargs={"eps": [None, 1e-3]}))
    groups: dict[str, set] = {}
    for r in plan.rows:
        groups.setdefault(r.group, set()).add((r.lr_mult, r.wd_mult, r.eps_mult))
    assert all(len(v) == 1 for v in groups.values()), groups
    assert "vector.factored" in groups
