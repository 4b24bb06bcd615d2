"""Diffusion Transformers: DiT's published parameter counts, shapes, patchify round trip, adaLN-Zero
identity blocks, the μP role tables of docs/dit_mup.md for DiT, PixArt-α, U-ViT and MMDiT,
SP = μP at the base width, and a 2-step run of every model × objective."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from src.models.dit import DiT, dit_preset
from src.models.layers import patchify, sincos_2d, unpatchify
from src.models.mmdit import MMDiT
from src.models.pixart import PixArt
from src.models.uvit import UViT
from src.mup.optim import OptimizerSpec
from src.mup.plan import Parametrization, build_model, make_plan

TINY_DIT = dict(image_size=8, in_channels=1, num_classes=10, head_dim=16, patch_size=2, freq_dim=64)


@pytest.mark.parametrize("name, published", [("S", 33.0e6), ("B", 130.3e6), ("L", 458.1e6), ("XL", 675.1e6)])
def test_presets_have_the_published_parameter_counts(name, published):
    with torch.device("meta"):
        model = dit_preset(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / published - 1) < 0.01, count


def test_patchify_round_trip_and_output_shapes():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 24, 12) and torch.equal(unpatchify(tokens, 2, 3, 8, 12), x)
    assert torch.equal(tokens[0, 1], x[0, :, 0:2, 2:4].permute(1, 2, 0).reshape(-1))  # patch (0, 1), (p, q, c)
    model = DiT(**TINY_DIT, width=32, depth=2, learn_sigma=True)
    out = model(torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([0, 9, 10]))
    assert out.shape == (3, 2, 8, 8)
    assert sincos_2d(32, 4).shape == (16, 32)


def test_adaln_zero_blocks_are_the_identity_and_fan_in_is_not():
    torch.manual_seed(0)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    for ada_init, identity in (("zero", True), ("fan_in", False)):
        model = DiT(**TINY_DIT, width=32, depth=2, ada_init=ada_init)
        h = model.patch_embed(patchify(x, 2)) + model.pos_embed
        c = model.condition(t, y)
        assert torch.allclose(model.blocks[0](h, c), h) == identity
        assert float(model(x, t, y).detach().abs().max()) == 0.0  # the zero readout either way
    std = float(model.blocks[0].ada[1].weight.detach().std())
    assert std == pytest.approx(1 / math.sqrt(32), rel=0.05)


def _plan(width: int, name: str = "mup", model=DiT, **extra):
    kwargs = {k: v for k, v in {**TINY_DIT, **extra}.items() if v is not None}  # None: not this model's
    factory = functools.partial(model, **kwargs)
    param = Parametrization(name=name, width_rule=name != "sp", base_width=32, base_depth=2)
    return factory, param, make_plan(factory, width, 2, 16, param, OptimizerSpec(torch.optim.AdamW, 1e-3))


def test_roles_match_the_dit_mup_table():
    """docs/dit_mup.md, “DiT”: input = patch embed, timestep MLP layer 1, label table; hidden = every
    block matrix, the timestep MLP's layer 2 and both adaLN modulations; output = the final linear."""
    _, _, plan = _plan(128)
    roles = {row.key: row.label for row in plan.rows}
    expected = {"patch_embed.weight": "input", "t_embed.mlp.0.weight": "input", "y_embed.weight": "input",
                "t_embed.mlp.2.weight": "hidden", "ada_final.1.weight": "hidden", "head.weight": "output"}
    for part in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "ada.1"):
        expected[f"blocks.*.{part}.weight"] = "hidden"
    assert {k: roles[k] for k in expected} == expected
    assert {roles[k] for k in roles if k.endswith(".bias")} <= {"vector", "finite"}
    lrs = {row.key: row.lr_mult for row in plan.rows}
    assert lrs["blocks.*.attn.q.weight"] == pytest.approx(32 / 128) and lrs["patch_embed.weight"] == 1.0
    assert plan.model_kwargs["readout_mult"] == pytest.approx(32 / 128)
    assert plan.model_kwargs["attn_scale"] == pytest.approx(1 / 4)  # 1/√d_head: d_head is fixed


def test_sp_and_mup_are_the_same_model_at_the_base_width():
    outs = []
    for name in ("sp", "mup"):
        factory, param, plan = _plan(32, name)
        torch.manual_seed(3)
        model = build_model(plan)
        for layer in model.modulation_layers() + [model.head]:  # make the output depend on everything
            torch.nn.init.normal_(layer.weight, std=0.1)
        outs.append(model(torch.ones(2, 1, 8, 8), torch.tensor([5, 900]), torch.tensor([1, 10])))
    assert torch.equal(outs[0], outs[1])


def test_mup_init_scales_hidden_weights_with_width():
    stds = {}
    for width in (32, 128):
        factory, param, plan = _plan(width)
        torch.manual_seed(0)
        build_model(plan)  # records each tensor's std in its plan row
        stds[width] = {row.key: row.init_std for row in plan.rows}
    assert stds[128]["blocks.*.mlp.up.weight"] == pytest.approx(stds[32]["blocks.*.mlp.up.weight"] / 2)
    assert stds[128]["patch_embed.weight"] == pytest.approx(stds[32]["patch_embed.weight"])  # input: width-free
    assert stds[128]["y_embed.weight"] == pytest.approx(0.02)


def _roles(model, **extra) -> dict[str, tuple[str, bool]]:
    _, _, plan = _plan(128, "mup", model, **extra)
    return {row.key: (row.label, row.in_branch) for row in plan.rows}


def test_pixart_roles_match_the_table():
    """§2.2: t_block, cross-attention and the caption projection's second layer hidden, its first layer
    input, the scale-shift tables vectors, the null-caption table finite, the final linear output."""
    roles = {k: v[0] for k, v in _roles(PixArt, cond_dim=16, cond_tokens=2).items()}
    expected = {"t_block.1.weight": "hidden", "context_proj.0.weight": "input", "context_proj.2.weight": "hidden",
                "blocks.*.table": "vector", "table_final": "vector", "y_embed.weight": "finite",
                "blocks.*.cross.q.weight": "hidden", "blocks.*.cross.k.weight": "hidden",
                "blocks.*.cross.o.weight": "hidden", "patch_embed.weight": "input", "head.weight": "output"}
    assert {k: roles[k] for k in expected} == expected


def test_uvit_roles_are_the_derived_ones():
    """§2.3: both layers of the time MLP on the width-n sinusoid are hidden, the long-skip Linear (2n → n)
    hidden and not a branch, the class table input, the learned positions a vector; the mid block is a
    residual branch."""
    roles = _roles(UViT, freq_dim=None)
    expected = {"time_embed.0.weight": ("hidden", False), "time_embed.2.weight": ("hidden", False),
                "out_blocks.*.skip.weight": ("hidden", False), "y_embed.weight": ("input", False),
                "pos_embed": ("vector", False), "mid_block.attn.q.weight": ("hidden", True),
                "head.weight": ("output", False)}
    assert {k: roles[k] for k in expected} == expected


def test_mmdit_roles_are_the_derived_ones():
    """§2.4: each stream's matrices hidden with its own group entry, the context embedder input, QK-norm
    gains finite; the last block (outside the list) is still a residual branch."""
    roles = _roles(MMDiT, cond_dim=16, cond_tokens=2)
    expected = {"blocks.*.x.attn.q.weight": ("hidden", True), "blocks.*.c.attn.q.weight": ("hidden", True),
                "blocks.*.c.mlp.up.weight": ("hidden", True), "blocks.*.x.attn.q_norm.weight": ("finite", True),
                "context_embed.weight": ("input", False), "last.c.attn.k.weight": ("hidden", True),
                "ada_final.1.weight": ("hidden", False), "head.weight": ("output", False)}
    assert {k: roles[k] for k in expected} == expected
    assert "last.c.attn.q.weight" not in roles and "last.c.mlp.up.weight" not in roles  # SD3's pre-only stream


def test_every_mmdit_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = MMDiT(**TINY_DIT, width=32, depth=2, cond_dim=16, cond_tokens=2)
    for layer in [model.head] + [s.ada[1] for b in [*model.blocks, model.last] for s in (b.x, b.c)]:
        torch.nn.init.normal_(layer.weight, std=0.1)  # leave adaLN-Zero so every path carries signal
    model(torch.randn(2, 1, 8, 8), torch.tensor([1, 500]), torch.tensor([0, 10])).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


@pytest.mark.parametrize("model", ["dit", "uvit", "pixart", "mmdit"])
@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_two_step_run_per_model_and_objective(train, model, objective):
    extra = ["task.timesteps=logit_normal"] if objective == "flow" else []
    metric, run_dir = train("task=image_diffusion", f"model={model}", "data=digits", f"task/objective={objective}",
                            "model.width=32", "model.depth=2", "steps=2", "val_every=2", "logger=csv",
                            "data.val_size=20", "spectral_every=0", *extra)
    assert math.isfinite(metric)
    from src.records import read_record

    record = read_record(run_dir)
    assert record["status"] == "ok" and record["config"]["task"]["objective"]["_target_"].endswith(
        "GaussianDiffusion" if objective == "ddpm" else "RectifiedFlow")


@pytest.mark.parametrize("overrides, message", [
    (["model.learn_sigma=true", "task/objective=flow"], "model.learn_sigma=true needs task/objective=ddpm"),
    pytest.param(["model.class_dropout=false"], "task.label_dropout=0.1 needs a null label",
                 marks=pytest.mark.slow),  # the same CLI path as the first case
])
def test_diffusion_config_errors_are_one_line(overrides, message):
    from tests.conftest import run_cli

    result = run_cli("task=image_diffusion", "model=dit", "data=digits", *overrides)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith(f"error: {message}"), result.stderr[-500:]


FAST_CHECK = ["experiment=coord_check_dit", "data=digits", "model.depth=2", "model.patch_size=2",
              "coord_check.widths=[32,64,128]", "coord_check.seeds=[0,1]", "coord_check.steps=3",
              "coord_check.judge_step=3", "coord_check.plot_steps=[0,3]", "coord_check.base_depth=2",
              "data.batch_size=8", "data.val_size=8", "optimizer.lr=4e-3"]


@pytest.mark.parametrize("model", ["dit", "uvit", "pixart", "mmdit"])
def test_fast_coordinate_check_slopes_per_model(train, model):
    """Widths 32-128 on 8x8 digits, 3 Adam steps: μP's judged slopes stay within 0.1, SP's last block
    grows with width."""
    import json

    _, run_dir = train(*FAST_CHECK, f"model={model}")
    result = json.loads((run_dir / "coord_check.json").read_text())
    mup, sp = result["slopes"]["mup"]["width"], result["slopes"]["sp"]["width"]
    assert result["verdict"]["mup/width"] == "pass", mup
    assert result["verdict"]["sp/width"] == "fail" and sp["block_last_delta"] >= 0.3, sp


@pytest.mark.parametrize("arm", ["sp", "mup"])
def test_init_gain_scales_every_random_init_and_keeps_zero_and_constant_ones(arm):
    """σ as a base HP for a model with no σ argument (xavier Linears, N(0, 0.02²) tables, adaLN-Zero):
    ``init_gain`` g multiplies each random tensor of the same draw by exactly g, at the base width and
    off it; zero-initialised tensors (the modulations, the readout) stay zero."""
    built = {}
    for gain in (1.0, 2.0):
        factory = functools.partial(DiT, **TINY_DIT)
        param = Parametrization(name=arm, width_rule=arm != "sp", base_width=32, base_depth=2, init_gain=gain)
        plan = make_plan(factory, 128, 2, 16, param, OptimizerSpec(torch.optim.AdamW, 1e-3))
        torch.manual_seed(0)
        built[gain] = dict(build_model(plan).named_parameters())
    scaled = zero = 0
    for name, p in built[1.0].items():
        q = built[2.0][name]
        if p.abs().max() == 0:
            zero += bool(q.abs().max() == 0)
        else:
            assert torch.allclose(q, 2 * p, rtol=1e-6, atol=0), name
            scaled += 1
    assert zero > 0 and scaled > 10 and zero + scaled == len(built[1.0])
