"""The μP core on GPT-2: roles, the plan, init, parameter groups, wrappers, checkpoints, bad input."""

from __future__ import annotations

import functools
import math
import os

import pytest
import torch
from torch import nn

from omegaconf import OmegaConf

from src.assemble import compose_option, optimizer_spec
from src.config_checks import check
from src.errors import ConfigError
from src.mup.optim import HybridOptimizer, OptimizerSpec, build_optimizer, optimizer_rule
from src.preflight import preflight
from src.mup.plan import Parametrization, build_model, make_plan
from src.mup.shapes import Role, RoleError, infer_roles
from src.models.gpt2 import GPT2
from tests.conftest import TINY, make_config

UNTIED = [*TINY, "model.tie_head=false"]
COMPLETEP = [*UNTIED, "parametrization=completep", "parametrization.base_width=32", "parametrization.base_depth=2"]


def gpt2_factory(**sizes):
    return GPT2(vocab_size=64, max_seq_len=16, head_dim=8, tie_head=False, **sizes)


# The arms at base size (32, 2) and conf/experiment/gpt2_smoke's GPT-2, through the core's own API.
ARMS = {"sp": Parametrization(name="sp"),
        "mup": Parametrization(name="mup", width_rule=True, base_width=32, base_depth=2),
        "depth_mup": Parametrization(name="depth_mup", width_rule=True, depth_rule="k1", base_width=32, base_depth=2),
        "completep": Parametrization(name="completep", width_rule=True, depth_rule="k2", base_width=32, base_depth=2)}
SMOKE_GPT2 = functools.partial(GPT2, vocab_size=256, max_seq_len=32, head_dim=16, tie_head=False)


def preset(name: str, **changes) -> OptimizerSpec:
    """A conf/optimizer preset as an OptimizerSpec (its numbers are what the table rows check)."""
    return optimizer_spec({**OmegaConf.to_container(compose_option("optimizer", name)), **changes})


def core_plan(width: int = 32, depth: int = 2, arm: str = "completep", optimizer: str = "adamw", **changes):
    return make_plan(SMOKE_GPT2, width, depth, 16, ARMS[arm], preset(optimizer, **changes))


def test_gpt2_roles_at_any_depth():
    for width, depth in ((32, 2), (64, 5)):  # the base size, and a depth the base model does not have
        model = gpt2_factory(width=width, depth=depth)
        roles, _ = infer_roles(gpt2_factory, (32, 2), model)
        labels = {n: (r.label, r.in_branch) for n, r in roles.items()}
        assert labels["tok_emb.weight"] == ("input", False)
        assert labels["pos_emb.weight"] == ("input", False)
        assert labels["head.weight"] == ("output", False)
        assert labels["norm_f.weight"] == ("vector", False)
        last = depth - 1
        for name in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"):
            assert labels[f"blocks.{last}.{name}.weight"] == ("hidden", True)
            assert labels[f"blocks.{last}.{name}.bias"] == ("vector", True)
        assert labels[f"blocks.{last}.norm1.weight"] == ("vector", True)


class _Raw(nn.Module):
    """A model with a raw square parameter whose fan-in the shapes cannot tell."""

    def __init__(self, width: int, depth: int, roles: dict | None = None):
        super().__init__()
        self.mix = nn.Parameter(torch.zeros(width, width))
        self.table = nn.Parameter(torch.zeros(6, width))
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        if roles is not None:
            self.mup_roles = roles


def test_undecidable_parameter_is_an_error_unless_the_model_names_it():
    with pytest.raises(RoleError, match="mix: 2 dimensions grow with width"):
        infer_roles(lambda **s: _Raw(**s), (8, 1), _Raw(8, 1))
    roles, containers = infer_roles(lambda **s: _Raw(**s, roles={"mix": "hidden"}), (8, 1), _Raw(16, 3, {"mix": "hidden"}))
    assert containers == {"blocks"}
    assert roles["mix"].label == "hidden" and roles["table"].label == "vector"
    assert roles["blocks.2.weight"].in_branch and not roles["mix"].in_branch


class _Layouts(nn.Module):
    """Layouts that must not fool role inference: a fixed list whose name ends like the depth list, a
    nested depth list, a gate sized by depth, and a block outside the lists marked as a branch."""

    mup_roles = {"mid.weight": ("hidden", True)}

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.embed = nn.Embedding(7, width)
        self.cond = nn.Module()
        self.cond.blocks = nn.Sequential(nn.Linear(5, width), nn.Linear(width, width))
        self.blocks = nn.ModuleList(nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
                                    for _ in range(depth))
        self.gate = nn.Parameter(torch.zeros(depth))
        self.mid = nn.Linear(width, width, bias=False)
        self.head = nn.Linear(width, 7, bias=False)


def test_role_inference_handles_tricky_layouts():
    roles, containers = infer_roles(lambda **s: _Layouts(**s), (8, 2), _Layouts(16, 3))
    assert containers == {"blocks", "blocks.*"}
    assert roles["cond.blocks.0.weight"] == Role("input", False)
    assert roles["cond.blocks.1.weight"] == Role("hidden", False)
    assert roles["blocks.2.1.weight"] == Role("hidden", True)
    assert roles["gate"] == Role("finite", False)
    assert roles["mid.weight"] == Role("hidden", True)


class _Heads(nn.Module):
    """A list whose length grows with width (one module per head)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, 4) for _ in range(width // 4))


class _FirstDiffers(nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(3 if i == 0 else width, width) for i in range(depth))


def test_layouts_the_shapes_cannot_decide_are_errors_that_name_the_parameter():
    with pytest.raises(RoleError, match="heads.2.bias, heads.2.weight, heads.3.bias, heads.3.weight exist at one width"):
        infer_roles(lambda **s: _Heads(**s), (8, 1), _Heads(8, 1))
    with pytest.raises(RoleError, match=r"blocks.1.weight: its shape \(8, 8\) differs from \(8, 3\)"):
        infer_roles(lambda **s: _FirstDiffers(**s), (8, 2), _FirstDiffers(8, 2))


class _MethodInit(nn.Module):
    """Initialises its blocks with a tensor method, behind the back of the nn.init recorder."""

    def __init__(self, width: int, depth: int, **multipliers):
        super().__init__()
        self.embed = nn.Embedding(11, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))
        self.head = nn.Linear(width, 11, bias=False)
        for block in self.blocks:
            block.weight.data.normal_(0, 0.02)


def test_mup_init_rescales_tensors_initialised_without_nn_init():
    param = Parametrization(name="mup", width_rule=True, base_width=64, base_depth=2)
    factory = lambda **s: _MethodInit(**s)  # noqa: E731
    spec = OptimizerSpec(torch.optim.AdamW, 1e-3, kwargs={"eps": 1e-8})
    torch.manual_seed(0)
    model = build_model(make_plan(factory, 256, 2, None, param, spec))
    assert model.blocks[0].weight.std().item() == pytest.approx(0.02 / 2, rel=0.03)


def test_hybrid_optimizer_keeps_its_schedule_after_loading_a_state():
    a, b = nn.Parameter(torch.ones(4, 4)), nn.Parameter(torch.ones(4))
    make = lambda: HybridOptimizer([torch.optim.Muon([{"params": [a], "lr": 0.02}]),  # noqa: E731
                                    torch.optim.AdamW([{"params": [b], "lr": 0.002}])])
    opt = make()
    a.grad, b.grad = torch.ones(4, 4), torch.ones(4)
    opt.step()
    restored = make()
    restored.load_state_dict(opt.state_dict())
    sched = torch.optim.lr_scheduler.LambdaLR(restored, lambda step: 0.5 ** step)
    restored.step()
    sched.step()
    assert [o.param_groups[0]["lr"] for o in restored.optimizers] == pytest.approx([0.01, 0.001])


def test_completep_adamw_plan_at_rn4_rl2_by_hand():
    """Hidden LR η/4, WD λ·4, ε/8, branch 1/2, readout 1/4 at (r_n, r_L) = (4, 2)."""
    plan = core_plan(128, 4, weight_decay=0.1)
    assert (plan.r_n, plan.r_L) == (4.0, 2.0)
    assert plan.model_kwargs["branch_mult"] == 0.5 and plan.model_kwargs["readout_mult"] == 0.25
    opt = build_optimizer(build_model(plan), plan)
    groups = {g["name"]: g for g in opt.param_groups}
    eta, lam, eps = 3e-3, 0.1, 1e-8
    assert groups["branch.hidden"]["lr"] == pytest.approx(eta / 4)
    assert groups["branch.hidden"]["weight_decay"] == pytest.approx(lam * 4)
    assert groups["branch.hidden"]["eps"] == pytest.approx(eps / 8)
    assert groups["input"]["lr"] == pytest.approx(eta) and groups["input"]["eps"] == pytest.approx(eps / 4)
    assert groups["output"]["lr"] == pytest.approx(eta) and groups["output"]["weight_decay"] == pytest.approx(lam)
    assert groups["branch.vector"]["weight_decay"] == 0.0 and groups["branch.vector"]["lr"] == pytest.approx(eta)
    assert set(groups) == {"input", "branch.vector", "branch.hidden", "vector", "output"}


def test_mup_init_rescales_from_the_base_size_sp_init():
    torch.manual_seed(0)
    model = build_model(core_plan(256, 8))
    std = {n: p.std().item() for n, p in model.named_parameters()}
    r_n = 8
    assert std["blocks.0.attn.q.weight"] == pytest.approx(0.02 / math.sqrt(r_n), rel=0.03)
    # residual projections keep the base depth's 1/√(2·L_base), no depth factor for L = 8
    assert std["blocks.7.mlp.down.weight"] == pytest.approx(0.02 / math.sqrt(2 * 2) / math.sqrt(r_n), rel=0.03)
    assert std["tok_emb.weight"] == pytest.approx(0.02, rel=0.03)
    assert std["head.weight"] == pytest.approx(0.02, rel=0.03)
    assert torch.equal(model.blocks[3].norm1.weight, torch.ones(256))


@pytest.mark.parametrize("arm", ["mup", "depth_mup", "completep"])
def test_every_parametrization_is_sp_at_the_base_size(arm):
    models, groups = {}, {}
    for name in ("sp", arm):
        plan = core_plan(arm=name)
        torch.manual_seed(0)
        models[name] = build_model(plan)
        opt = build_optimizer(models[name], plan)
        groups[name] = [(g["name"], g["param_names"], g["lr"], g["weight_decay"], g["eps"]) for g in opt.param_groups]
        assert plan.model_kwargs == {"embed_mult": 1.0, "branch_mult": 1.0, "readout_mult": 1.0, "attn_scale": 0.25}
    assert groups["sp"] == groups[arm]
    for (n, a), (_, b) in zip(models["sp"].named_parameters(), models[arm].named_parameters()):
        assert torch.equal(a, b), n


def test_base_size_runs_give_the_same_loss(train):
    args = [*UNTIED, "steps=3", "val_every=3", "parametrization.base_width=32", "parametrization.base_depth=2"]
    losses = {arm: train(*args, f"parametrization={arm}")[0] for arm in ("sp", "completep")}
    assert losses["sp"] == losses["completep"]


def test_groups_survive_compile_and_ddp():
    import torch.distributed as dist

    plan = core_plan(64, 3)
    model = build_model(plan)

    def summary(module):
        opt = build_optimizer(module, plan)
        return [(g["name"], [p.data_ptr() for p in g["params"]], g["lr"]) for g in opt.param_groups]

    reference = summary(model)
    assert summary(torch.compile(model)) == reference
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        assert summary(nn.parallel.DistributedDataParallel(model)) == reference
    finally:
        dist.destroy_process_group()


def test_checkpoint_round_trip_keeps_weights_and_plan(train):
    _, run_dir = train(*COMPLETEP, "model.width=64", "steps=2", "val_every=2")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    plan = ckpt["scaling_lab"]["plan"]
    assert plan["parametrization"] == "completep" and plan["r_n"] == 2.0
    fresh = core_plan(64)
    from src.tasks.causal_lm import CausalLMTask

    torch.manual_seed(123)  # a different init: loading must replace it exactly, with no re-scaling
    task = CausalLMTask(build_model(fresh), functools.partial(build_optimizer, plan=fresh), lambda step, total: 1.0, 2)
    assert plan == fresh.to_dict()
    task.load_state_dict(ckpt["state_dict"])
    for name, value in ckpt["state_dict"].items():
        assert torch.equal(task.state_dict()[name], value), name


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd", "lion", "adafactor", "muon", "muon_kimi",
                                       "soap", "shampoo", "shampoo_grafted"])
def test_every_optimizer_trains_under_completep(train, optimizer):
    metric, run_dir = train(*COMPLETEP, "model.width=64", "steps=3", "val_every=3", f"optimizer={optimizer}")
    assert math.isfinite(metric)


# Each optimizer config lands on its row of the width-depth tables (CompleteP, (r_n, r_L) = (4, 2)):
# multipliers of (branch.hidden LR, WD, ε), and the branch.vector LR.
ROWS = {
    "adamw": (1 / 4, 4, 1 / 8, 1),
    "adam": (1 / 4, 1 / 4, 1 / 8, 1),  # L2 decay: λ ∝ gradient entries / init = r_n^-½ r_L^-1
    "sgd": (2, 1 / 2, None, 8),  # hidden η·r_L, bias η·r_L·r_n
    "lion": (1 / 4, 4, None, 1),
    # relative steps: η/√r_n; torch's lr·wd decay: λ·r_n·r_n^-½; ε₁ in G² units, ε₂ (floors RMS(W)) as the init
    "adafactor": (1 / 2, 2, (1 / 64, 1 / 2), 1),
    "muon": (1, 1, None, 1),  # the vectors go to the AdamW rest
    "muon_kimi": (1 / 2, 2, None, 1),
    "soap": (1 / 4, 4, 1 / 8, 1),  # Adam in a rotated basis: the sign-like row, Adam's ε (its vectors: Adam)
    "shampoo": (1, 1, 1 / 4, 2),  # ε/r_L²; decoupled decay: λ; it preconditions vectors itself: η·√r_n
    "shampoo_grafted": (1 / 4, 4, None, 1),  # RMSprop graft: the sign-like row (WD λ·r_n); ε not per group
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_optimizer_lands_on_its_table_row(name):
    plan = core_plan(128, 4, optimizer=name)
    groups = {row.group.split("/")[-1]: row for row in plan.rows}
    hidden, vector = groups["branch.hidden"], groups["branch.vector"]
    lr, wd, eps, vector_lr = ROWS[name]
    assert hidden.lr_mult == pytest.approx(lr) and hidden.wd_mult == pytest.approx(wd)
    assert hidden.eps_mult == (None if eps is None else pytest.approx(eps))
    assert vector.lr_mult == pytest.approx(vector_lr)


def test_muon_is_a_hybrid_with_its_rest_at_lr_ratio():
    plan = core_plan(64, optimizer="muon")
    opt = build_optimizer(build_model(plan), plan)
    assert isinstance(opt, HybridOptimizer)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["Muon/branch.hidden"]["lr"] == pytest.approx(2e-2)  # Muon row: hidden η
    assert groups["AdamW/input"]["lr"] == pytest.approx(2e-3)  # lr_ratio 0.1
    assert all(p.ndim == 2 for p in groups["Muon/branch.hidden"]["params"])


@pytest.mark.parametrize("argv, message", [
    (["parametrization=mup"], "tok_emb.weight is shared with head.weight (input and output); mup needs an untied readout"),
    ([*UNTIED, "parametrization=mup", "parametrization.zero_init=[blocks.*.attn.query.weight]"],
     "zero_init names no parameter: blocks.*.attn.query.weight"),
    ([*UNTIED, "parametrization=mup", "optimizer=muon", "optimizer.adjust_lr_fn=foo"],
     "optimizer.adjust_lr_fn='foo'; choose one of original, match_rms_adamw, spectral_unclamped"),
    ([*UNTIED, "parametrization=mup", "parametrization.base_width=40"],
     "parametrization=mup (base width 40, base depth 4): model: width=40 is not divisible by head_dim=16"),
    ([*UNTIED, "parametrization=mup", "+optimizer.momentum=0.9", "optimizer._target_=torch.optim.RMSprop"],
     "RMSprop has no μP rule"),
    ([*UNTIED, "parametrization=completep", "parametrization.base_depth=0"],
     "parametrization: base_depth=0: completep needs a positive base size"),
])
def test_bad_parametrization_input(argv, message):
    with pytest.raises(ConfigError, match=None) as err:
        preflight(argv)
    assert message in str(err.value)


def test_sp_accepts_any_optimizer_and_a_tied_head():
    check(make_config(*TINY, "optimizer=sgd", "optimizer._target_=torch.optim.RMSprop"))


def test_make_plan_direct_api_matches_config_path():
    param = Parametrization(name="completep", width_rule=True, depth_rule="k2", base_width=32, base_depth=2)
    plan = make_plan(gpt2_factory, 64, 4, 8, param, OptimizerSpec(torch.optim.AdamW, 1e-3, kwargs={"eps": 1e-8}))
    rows = {r.name: r for r in plan.rows}
    assert rows["blocks.3.mlp.up.weight"].lr_mult == 0.5 and rows["head.weight"].forward_mult == 0.5
    assert plan.model_kwargs["branch_mult"] == 0.5


def test_the_config_path_gives_the_core_api_plan():
    from src.assemble import assemble

    cfg = make_config(*COMPLETEP, "model.width=128", "model.depth=4", "optimizer=muon")
    assert assemble(cfg, {"vocab_size": 256}).to_dict() == core_plan(128, 4, optimizer="muon").to_dict()



def _width_slope(cls, **kwargs):
    """d log ‖ΔW‖_op / d log n of one n × n matrix after 4 steps of a regression on fresh batches of
    16 rows (a stochastic gradient, as in training), n = 32 → 128."""
    def movement(width):
        gen = torch.Generator().manual_seed(0)
        w = torch.nn.Parameter(torch.randn(width, width, generator=gen) / width ** 0.5)
        target, start = torch.randn(width, width, generator=gen) / width ** 0.5, w.detach().clone()
        opt = cls([w], lr=1e-3, weight_decay=0.0, **kwargs)
        for _ in range(4):
            x = torch.randn(16, width, generator=gen)
            opt.zero_grad()
            ((x @ (w - target).T) ** 2).mean().backward()
            opt.step()
        return torch.linalg.matrix_norm(w.detach() - start, 2).item()
    return math.log(movement(128) / movement(32)) / math.log(4)


def test_soap_updates_scale_like_adamw_not_like_shampoo():
    """SOAP is Adam in Shampoo's eigenbasis: on stochastic gradients its update's spectral norm grows
    with width as AdamW's does (the sign-like row), not flat as Shampoo's UVᵀ (the paper's row for it)."""
    import pytorch_optimizer as po

    soap = _width_slope(po.SOAP, precondition_frequency=1)
    adamw, shampoo = _width_slope(torch.optim.AdamW), _width_slope(po.Shampoo, preconditioning_compute_steps=1)
    assert abs(soap - adamw) < 0.25 and soap - shampoo > 0.6, (soap, adamw, shampoo)
    assert optimizer_rule(OptimizerSpec(po.SOAP, 1e-3)).family == "sign"
    assert optimizer_rule(OptimizerSpec(po.Shampoo, 1e-3)).family == "orthogonal"
