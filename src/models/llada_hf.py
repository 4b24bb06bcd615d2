"""LLaDA checkpoints in their published Hugging Face layout (GSAI-ML/LLaDA-8B-Base, -Instruct, and
LLaDA 1.5): a directory with ``config.json`` and safetensors weights (``model.safetensors``, or shards
listed in ``model.safetensors.index.json``).

The published model (OLMo-derived ``LLaDAModelLM``, ``block_type: llama``) is the same network as
``src.models.llada.LLaDA``: RMSNorm before attention and feed-forward, bidirectional attention with
RoPE over half-split channel pairs (base ``rope_theta``), SwiGLU y = W_out · (SiLU(W_ff x) ⊙ W_up x),
a final RMSNorm and an untied head over the whole vocab, the mask token ``mask_token_id`` (126336)
inside it. Its tensors map one to one (``NAMES``); a config this class cannot express (biases, GQA,
tied head, QK-norm, ALiBi, a hidden size that is not a multiple of the width, block groups) is
refused in one line rather than loaded into the wrong network.

``published(path, ...)`` is the model factory of ``model=llada_hf model.path=<dir>``: at the
checkpoint's own width and depth it returns the model with the published weights; at any other size
(the μP plan builds such twins on the meta device to infer shapes) a freshly initialised one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from src.errors import ConfigError
from src.models.llada import LLaDA

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
WEIGHTS = "model.safetensors"
# published name (after "model.transformer.") -> this model's name; {i} is the block index
NAMES = {
    "wte.weight": "tok_emb.weight", "ln_f.weight": "norm_final.weight", "ff_out.weight": "head.weight",
    "blocks.{i}.attn_norm.weight": "blocks.{i}.norm1.weight", "blocks.{i}.ff_norm.weight": "blocks.{i}.norm2.weight",
    "blocks.{i}.q_proj.weight": "blocks.{i}.attn.q.weight", "blocks.{i}.k_proj.weight": "blocks.{i}.attn.k.weight",
    "blocks.{i}.v_proj.weight": "blocks.{i}.attn.v.weight", "blocks.{i}.attn_out.weight": "blocks.{i}.attn.o.weight",
    "blocks.{i}.ff_proj.weight": "blocks.{i}.mlp.gate.weight", "blocks.{i}.up_proj.weight": "blocks.{i}.mlp.up.weight",
    "blocks.{i}.ff_out.weight": "blocks.{i}.mlp.down.weight",
}
# config keys whose published value this model cannot change: (key, the value it needs, its default)
FIXED = [("block_type", "llama", "llama"), ("activation_type", "silu", "silu"), ("layer_norm_type", "rms", "rms"),
         ("include_bias", False, False), ("include_qkv_bias", False, False), ("weight_tying", False, False),
         ("alibi", False, False), ("rope", True, True), ("attention_layer_norm", False, False),
         ("input_emb_norm", False, False), ("scale_logits", False, False), ("block_group_size", 1, 1)]


def read_config(path: str | Path) -> dict[str, Any]:
    """This model's numbers from a published ``config.json``: width, depth, head_dim, mlp_ratio,
    vocab_size, mask_id, rope_base, norm_eps. A ConfigError names what the model cannot express."""
    file = Path(path) / CONFIG
    if not file.exists():
        raise ConfigError(f"model.path={path}: no {CONFIG} there (a LLaDA checkpoint dir has config.json "
                          "and model.safetensors)")
    cfg = json.loads(file.read_text())
    for key, needed, default in FIXED:
        if cfg.get(key, default) != needed:
            raise ConfigError(f"model.path={path}: {key}={cfg[key]!r} is not supported (needs {needed!r})")
    width, heads = cfg["d_model"], cfg["n_heads"]
    if cfg.get("n_kv_heads") not in (None, heads):
        raise ConfigError(f"model.path={path}: n_kv_heads={cfg['n_kv_heads']} < n_heads={heads} "
                          "(grouped-query attention) is not supported")
    hidden = cfg.get("mlp_hidden_size") or cfg["mlp_ratio"] * width
    if hidden % width:
        raise ConfigError(f"model.path={path}: mlp_hidden_size={hidden} is not a multiple of d_model={width}")
    return {"width": width, "depth": cfg["n_layers"], "head_dim": width // heads, "mlp_ratio": hidden // width,
            "vocab_size": cfg.get("embedding_size") or cfg["vocab_size"], "mask_id": cfg.get("mask_token_id", 126336),
            "rope_base": float(cfg.get("rope_theta", 10000.0)), "norm_eps": float(cfg.get("rms_norm_eps", 1e-5))}


def _local_name(name: str) -> str | None:
    """This model's name for a published tensor name (None: not a weight of the network)."""
    name = name.removeprefix("model.").removeprefix("transformer.")
    index = re.match(r"blocks\.(\d+)\.", name)
    key = re.sub(r"^blocks\.\d+\.", "blocks.{i}.", name)
    local = NAMES.get(key)
    return local and local.replace("{i}", index.group(1) if index else "")


def _files(path: Path) -> list[Path]:
    if (path / INDEX).exists():
        return [path / f for f in sorted(set(json.loads((path / INDEX).read_text())["weight_map"].values()))]
    if (path / WEIGHTS).exists():
        return [path / WEIGHTS]
    raise ConfigError(f"model.path={path}: neither {WEIGHTS} nor {INDEX} there")


@torch.no_grad()
def load_published(model: LLaDA, path: str | Path) -> LLaDA:
    """Copy the published weights into ``model`` shard by shard (peak memory: one shard); every
    tensor of the model must be found, with its shape."""
    from safetensors import safe_open

    params, seen = dict(model.named_parameters()), set()
    for file in _files(Path(path)):
        with safe_open(str(file), framework="pt") as shard:
            for name in shard.keys():
                local = _local_name(name)
                if local is None or local not in params:
                    raise ConfigError(f"model.path={path}: {name} has no place in the model")
                tensor = shard.get_tensor(name)
                if tensor.shape != params[local].shape:
                    raise ConfigError(f"model.path={path}: {name} is {tuple(tensor.shape)}, the model's {local} "
                                      f"is {tuple(params[local].shape)}")
                params[local].copy_(tensor)
                seen.add(local)
    if missing := sorted(set(params) - seen):
        raise ConfigError(f"model.path={path}: no weights for {', '.join(missing[:3])}"
                          + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    return model


def published(path: str, vocab_size: int | None = None, width: int | None = None, depth: int | None = None,
              head_dim: int | None = None, **kwargs: Any) -> LLaDA:
    """The model of ``model=llada_hf``: the checkpoint's architecture at ``width`` × ``depth`` (its own
    by default), with the published weights when that is its own size and not on the meta device.
    ``vocab_size`` is the data's: it must fit in the checkpoint's vocab."""
    numbers = read_config(path)
    if vocab_size is not None and vocab_size > numbers["vocab_size"]:
        raise ConfigError(f"model.path={path}: the data has {vocab_size} token ids, the checkpoint's vocab "
                          f"{numbers['vocab_size']}")
    own = (numbers["width"], numbers["depth"], numbers["head_dim"])
    sizes = {"width": width or own[0], "depth": depth or own[1], "head_dim": head_dim or own[2]}
    model = LLaDA(**{**numbers, **sizes, **kwargs})
    if (sizes["width"], sizes["depth"], sizes["head_dim"]) == own and model.head.weight.device.type != "meta":
        load_published(model, path)
    return model


def save_published(model: LLaDA, path: str | Path, shards: int = 1) -> None:
    """Write ``model`` in the published layout (``config.json`` and safetensors, in ``shards``
    files with an index when more than one): an export, and the tests' tiny checkpoints."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    block = model.blocks[0]
    config = {key: value for key, value, _ in FIXED} | {
        "architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": model.head.in_features,
        "n_heads": block.attn.n_heads, "n_kv_heads": block.attn.n_heads, "n_layers": len(model.blocks),
        "mlp_hidden_size": block.mlp.up.out_features, "vocab_size": model.vocab_size,
        "embedding_size": model.vocab_size, "mask_token_id": model.mask_id, "rope_theta": block.attn.rope_base,
        "rms_norm_eps": block.norm1.eps}
    (path / CONFIG).write_text(json.dumps(config, indent=2))
    inverse = {}
    for published_key, local_key in NAMES.items():
        for i in range(len(model.blocks)) if "{i}" in local_key else [None]:
            fill = (lambda s: s.replace("{i}", str(i))) if i is not None else (lambda s: s)  # noqa: E731
            inverse[fill(local_key)] = "model.transformer." + fill(published_key)
    tensors = {inverse[n]: p.detach().contiguous() for n, p in model.named_parameters()}
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(path / WEIGHTS))
        return
    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = names[k::shards]
        save_file({n: tensors[n] for n in part}, str(path / file))
        weight_map |= {n: file for n in part}
    (path / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
