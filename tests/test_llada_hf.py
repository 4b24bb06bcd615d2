"""Published LLaDA checkpoints (src/models/llada_hf.py): a tiny random checkpoint in the Hugging Face
layout loads into the project's model with identical logits, matches a forward written from the
published model's definition, trains end to end, and unsupported configs are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from src.errors import ConfigError
from src.models.llada import LLaDA
from src.models.llada_hf import INDEX, published, read_config, save_published
from tests.conftest import run_cli

TINY = {"vocab_size": 300, "width": 32, "depth": 2, "head_dim": 16, "mlp_ratio": 3, "mask_id": 290,
        "rope_base": 500000.0, "norm_eps": 1e-5}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = LLaDA(**TINY)
    with torch.no_grad():  # gains away from 1, so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    save_published(model, tmp_path / "ckpt", shards=2)
    return model, tmp_path / "ckpt"


def reference_logits(path, tokens: torch.Tensor) -> torch.Tensor:
    """The published LLaDAModelLM forward (llama block), from its definition: RMSNorm in float32,
    q/k/v, RoPE rotating the two halves of each head by position × θ^(−2i/d), softmax attention
    without a mask, attn_out, then SiLU(ff_proj x) ⊙ up_proj x through ff_out; ln_f; ff_out."""
    cfg = json.loads((path / "config.json").read_text())
    w = {}
    for file in sorted(path.glob("*.safetensors")):
        w |= {k.removeprefix("model.transformer."): v for k, v in load_file(str(file)).items()}
    heads, d = cfg["n_heads"], cfg["d_model"] // cfg["n_heads"]

    def rms(x, gain):
        return gain * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["rms_norm_eps"]))

    def rope(x):
        inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float) / d)
        angle = torch.outer(torch.arange(x.shape[-2], dtype=torch.float), inv)
        angle = torch.cat([angle, angle], dim=-1)
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return x * angle.cos() + torch.cat([-x2, x1], dim=-1) * angle.sin()

    x = w["wte.weight"][tokens]
    batch, seq = tokens.shape
    for i in range(cfg["n_layers"]):
        b = {k.removeprefix(f"blocks.{i}."): v for k, v in w.items() if k.startswith(f"blocks.{i}.")}
        h = rms(x, b["attn_norm.weight"])
        q, k, v = (F.linear(h, b[f"{n}_proj.weight"]).view(batch, seq, heads, d).transpose(1, 2) for n in "qkv")
        att = F.scaled_dot_product_attention(rope(q), rope(k), v).transpose(1, 2).reshape(batch, seq, -1)
        x = x + F.linear(att, b["attn_out.weight"])
        h = rms(x, b["ff_norm.weight"])
        x = x + F.linear(F.silu(F.linear(h, b["ff_proj.weight"])) * F.linear(h, b["up_proj.weight"]), b["ff_out.weight"])
    return F.linear(rms(x, w["ln_f.weight"]), w["ff_out.weight"])


def test_a_published_checkpoint_loads_with_identical_logits(checkpoint):
    original, path = checkpoint
    assert (path / INDEX).exists() and len(list(path.glob("*.safetensors"))) == 2
    assert read_config(path) == {**TINY, "vocab_size": 300}
    loaded = published(str(path), vocab_size=257)
    tokens = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    tokens[:, ::3] = 290  # mask tokens, inside the vocab
    assert loaded.mask_id == 290 and loaded.tok_emb.num_embeddings == 300 and loaded.head.out_features == 300
    assert torch.equal(loaded(tokens), original(tokens))


def test_logits_match_a_forward_written_from_the_published_definition(checkpoint):
    _, path = checkpoint
    tokens = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, ref = published(str(path))(tokens), reference_logits(path, tokens)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5), (ours - ref).abs().max()


def test_other_sizes_and_the_meta_device_build_without_loading(checkpoint):
    _, path = checkpoint
    with torch.device("meta"):
        assert published(str(path)).head.weight.is_meta
    wider = published(str(path), width=64)  # a μP twin: same architecture, fresh weights
    assert wider.head.in_features == 64 and wider.mask_id == 290


@pytest.mark.parametrize("change, message", [
    ({"include_bias": True}, "include_bias=True is not supported"),
    ({"n_kv_heads": 1}, "n_kv_heads=1 < n_heads=2 (grouped-query attention) is not supported"),
    ({"mlp_hidden_size": 40}, "mlp_hidden_size=40 is not a multiple of d_model=32"),
    ({"weight_tying": True}, "weight_tying=True is not supported"),
])
def test_configs_the_model_cannot_express_are_refused_in_one_line(checkpoint, change, message):
    _, path = checkpoint
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        published(str(path))


def test_a_missing_tensor_or_a_small_vocab_is_refused(checkpoint):
    _, path = checkpoint
    with pytest.raises(ConfigError, match="the data has 400 token ids, the checkpoint's vocab 300"):
        published(str(path), vocab_size=400)
    index = json.loads((path / INDEX).read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != first}
    (path / INDEX).write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="no weights for"):
        published(str(path))


def test_the_run_builds_a_published_checkpoint_with_its_weights(checkpoint):
    from src.assemble import assemble, instantiate
    from src.mup.plan import build_model
    from tests.conftest import make_config

    original, path = checkpoint
    cfg = make_config("experiment=llada_sft", "model=llada_hf", f"model.path={path}")
    model = build_model(assemble(cfg, instantiate(cfg.data, "data").model_inputs))  # the run's own path
    tokens = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(model(tokens), original(tokens))  # the published weights, untouched by the plan


@pytest.mark.slow  # 20 s; the fast suite runs VRPO from a published checkpoint (tests/test_chat.py)
def test_sft_runs_end_to_end_from_a_published_checkpoint(checkpoint, tmp_path):
    _, path = checkpoint
    run_dir = tmp_path / "sft"
    done = run_cli("experiment=llada_sft", "model=llada_hf", f"model.path={path}", "steps=2", "val_every=2",
                   "logger=csv", f"hydra.run.dir={run_dir}", "task.sample_accuracy=false")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "ok" and record["config"]["model"]["width"] == 32


def test_another_size_than_the_checkpoints_is_refused_before_training(checkpoint):
    from src.preflight import preflight

    _, path = checkpoint
    with pytest.raises(ConfigError, match=r"model.width=64 differs from the checkpoint's 32 .*loads at its own size"):
        preflight(["experiment=llada_sft", "model=llada_hf", f"model.path={path}", "model.width=64"])
