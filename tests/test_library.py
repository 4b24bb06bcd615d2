"""The μP core as a library (docs/library.md): the documented example as written, the one-line refusals,
and coordinate checks through the public API on models nobody here wrote (transformers, timm)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from src import mup
from src.models import external

ROOT = Path(__file__).resolve().parents[1]
ADAMW = mup.OptimizerSpec(torch.optim.AdamW, lr=3e-3)
SMALL = {"base": (32, 2), "widths": [32, 64, 128], "depths": [2, 4, 8], "seeds": [0, 1], "steps": 5}


def test_the_api_imports_without_hydra_or_lightning():
    import subprocess

    code = "import sys, src.mup; print(sorted(m for m in ('hydra', 'lightning', 'omegaconf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_documented_example_runs_as_written_and_its_check_passes(capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), re.S)
    scope: dict = {}
    exec(blocks[0], scope)  # the training loop
    assert scope["losses"][-1] < 0.05 * scope["losses"][0]
    assert scope["plan"].model_kwargs == {"embed_mult": 1.0, "branch_mult": 0.25, "readout_mult": 0.25}
    exec(blocks[1], scope)  # the coordinate check on the same factory
    verdict = scope["result"]["verdict"]
    assert verdict["completep/width"] == verdict["completep/depth"] == "pass"
    assert verdict["sp/width"] == verdict["sp/depth"] == "fail"
    rules = scope["result"]["depth_rules"]
    assert rules["depth_mup"]["depth_rule_measured"] == "k1" and rules["completep"]["depth_rule_measured"] == "k2"


def test_a_factory_may_omit_only_the_multipliers_its_arm_leaves_neutral():
    def no_branch(width, depth, embed_mult=1.0, readout_mult=1.0):
        return nn.Sequential(nn.Linear(4, width), nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]),
                             nn.Linear(width, 2))

    width_only = mup.Parametrization.named("mup", base_width=8, base_depth=2)
    plan = mup.make_plan(no_branch, 32, 4, None, width_only, ADAMW)
    assert plan.model_kwargs == {"embed_mult": 1.0, "readout_mult": 0.25}
    completep = mup.Parametrization.named("completep", base_width=8, base_depth=2)
    assert mup.make_plan(no_branch, 32, 2, None, completep, ADAMW).model_kwargs["readout_mult"] == 0.25  # r_L = 1
    with pytest.raises(ValueError, match=r"^test_a_factory.*no_branch takes no branch_mult argument, but completep "
                                         r"at width 32, depth 4 needs the every residual branch × 0.5"):
        mup.make_plan(no_branch, 32, 4, None, completep, ADAMW)
    with pytest.raises(ValueError, match="plain_llama takes no readout_mult argument"):
        mup.setup(external.plain_llama, 64, 2, width_only, ADAMW)
    model, _, plan = mup.setup(external.plain_llama, 64, 2, mup.Parametrization.named("sp"), ADAMW)
    assert plan.model_kwargs == {} and isinstance(model, nn.Module)


def test_named_arms_are_the_config_options():
    from omegaconf import OmegaConf

    for name in ("sp", "mup", "depth_mup", "completep"):
        option = OmegaConf.merge(*(OmegaConf.load(ROOT / "conf" / "parametrization" / f"{n}.yaml")
                                   for n in {"sp": ["sp"], "mup": ["sp", "mup"], "depth_mup": ["sp", "mup", "depth_mup"],
                                             "completep": ["sp", "mup", "completep"]}[name]))
        arm = mup.Parametrization.named(name, 8, 2)
        assert (arm.width_rule, arm.depth_rule) == (option.width_rule, option.depth_rule), name


def test_a_preact_probe_ignores_the_factory_hooks_of_its_layer():
    """The inner layer's own update (W_t − W_0)·x is 0 before any step, also when a factory hook
    scales that layer's output."""
    from src.mup.coord_check import Probe

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.norm = nn.Linear(4, 8), nn.LayerNorm(8)
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8))])

        def forward(self, x):
            h = self.embed(x)
            for block in self.blocks:
                h = h + block(h)
            return self.norm(h)

    model = Tiny()
    mup.scale_output(model.blocks[0][0], 3.0)
    probe = Probe(model, {"embedding": "embed", "blocks": "blocks", "final": "norm", "branches": ["2"],
                          "preact": "0"}, 1.0)
    stats = probe.measure(lambda: model(torch.randn(3, 4)))
    assert stats["preact_update"] == 0.0 and stats["preact"] > 0


def test_an_eps_the_spec_leaves_out_is_the_class_default_scaled_per_group():
    factory = lambda width, depth, **k: external.vit(width, depth, **k)  # noqa: E731
    _, optimizer, plan = mup.setup(factory, 64, 2, mup.Parametrization.named("mup", 32, 2), ADAMW)
    eps = {g["name"]: g["eps"] for g in optimizer.param_groups}
    assert eps["branch.hidden"] == pytest.approx(1e-8 / 2) and eps["input"] == pytest.approx(1e-8 / 2)


def test_llama_with_hooked_multipliers_is_granite():
    """Granite is Llama plus four multipliers; the hooks give a plain Llama the same logits."""
    kwargs = {"embed_mult": 1.5, "branch_mult": 0.3, "readout_mult": 0.25, "attn_scale": 0.2}
    granite, llama = external.granite(64, 2, **kwargs), external.llama(64, 2, **kwargs)
    llama.load_state_dict(granite.state_dict())
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    a, b = granite(input_ids=ids).logits, llama(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    plain = external.plain_llama(64, 2)
    plain.load_state_dict(granite.state_dict())
    assert (plain(input_ids=ids).logits - a).abs().max() > 0.1  # the multipliers do change the model


def _lm_check(factory, zero_q: str):
    ids = torch.randint(0, 16, (4, 32), generator=torch.Generator().manual_seed(0))  # 16 distinct tokens < width
    probes = {"embedding": "model.embed_tokens", "blocks": "model.layers", "final": "model.norm",
              "branches": ["self_attn.o_proj", "mlp.down_proj"], "preact": "mlp.up_proj"}
    return mup.coordinate_check(factory, ["sp", "completep"], ADAMW, lambda m: m(input_ids=ids, labels=ids).loss,
                                probes, settings={"zero_readout": True, "zero_init": [zero_q]},
                                head_dim=lambda width: 16, **SMALL)


@pytest.mark.parametrize("factory", [external.granite, external.llama], ids=["granite", "llama"])
def test_hugging_face_decoders_pass_their_coordinate_check_through_the_public_api(factory):
    result = _lm_check(factory, "model.layers.*.self_attn.q_proj.weight")
    assert result["verdict"] == {"sp/width": "fail", "sp/depth": "fail", "completep/width": "pass",
                                 "completep/depth": "pass"}, result["slopes"]
    assert result["slopes"]["sp"]["width"]["logits_delta"] > 0.5  # SP's logits blow up with width
    assert result["depth_rules"]["completep"]["depth_rule_measured"] == "k2"


def test_a_timm_vit_passes_its_coordinate_check_with_a_growing_head_dim():
    """Width grown at a fixed head count, so d_head grows and μP's 1/d_head attention scale is exercised."""
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 1, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    factory = lambda width, depth, **k: external.vit(width, depth, head_dim=width // 2, **k)  # noqa: E731
    probes = {"embedding": "pos_drop", "blocks": "blocks", "final": "fc_norm", "branches": ["attn.proj", "mlp.fc2"],
              "preact": "mlp.fc1"}
    result = mup.coordinate_check(factory, ["sp", "completep"], ADAMW,
                                  lambda m: nn.functional.cross_entropy(m(images), labels), probes,
                                  settings={"zero_readout": True}, head_dim=lambda width: width // 2, **SMALL)
    assert result["verdict"] == {"sp/width": "fail", "sp/depth": "fail", "completep/width": "pass",
                                 "completep/depth": "pass"}, result["slopes"]


def test_timm_fused_attention_ignores_its_scale_attribute():
    """Why the ViT factory turns the fused path off when it sets a μP attention scale."""
    attn = external.vit(32, 1).blocks[0].attn
    x = 10 * torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0))  # peaked attention
    before = attn(x)
    attn.scale = 0.01
    fused = attn(x)
    attn.fused_attn = False
    unfused = attn(x)
    torch.testing.assert_close(before, fused)
    assert (unfused - fused).abs().max() > 0.01 * before.abs().max()
