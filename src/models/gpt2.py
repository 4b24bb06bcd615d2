"""GPT-2: a pre-LN decoder-only Transformer with learned positions (Radford et al. 2019, nanoGPT layout).

    h_0 = α_in · (E[x] + P[pos])
    h_l = h_{l-1} + m · Attn(LN(h_{l-1})),  then  h_l ← h_l + m · MLP(LN(h_l))      l = 1..L
    logits = α_out · W_head · LN(h_L)

α_in = ``embed_mult``, m = ``branch_mult``, α_out = ``readout_mult``, and the attention logit scale
``attn_scale`` are the only knobs a parametrization turns; their defaults give standard GPT-2, whose
init is N(0, σ²) with σ = 0.02 and σ/√(2L) on the two residual projections of every block.
``load_hf_gpt2`` reads a Hugging Face GPT-2 checkpoint from a local directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from src.checks import check_sizes
from src.models.layers import Block, check_heads, gpt2_init_, make_norm


class GPT2(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        width: int = 128,
        depth: int = 4,
        head_dim: int = 32,
        max_seq_len: int = 1024,
        *,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        layernorm: bool = True,
        norm_eps: float = 1e-5,
        tie_head: bool = True,
        init_std: float = 0.02,
        embed_mult: float = 1.0,
        branch_mult: float = 1.0,
        readout_mult: float = 1.0,
        attn_scale: float | None = None,
    ) -> None:
        super().__init__()
        check_sizes(
            vocab_size=vocab_size, width=width, depth=depth, head_dim=head_dim,
            max_seq_len=max_seq_len, mlp_ratio=mlp_ratio,
        )
        check_heads(width, head_dim)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        self.width, self.depth, self.max_seq_len = width, depth, max_seq_len
        self.init_std = init_std
        self.embed_mult = float(embed_mult)
        self.readout_mult = float(readout_mult)

        self.tok_emb = nn.Embedding(vocab_size, width)
        self.pos_emb = nn.Embedding(max_seq_len, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(
                width, head_dim, mlp_ratio=mlp_ratio, branch_mult=branch_mult,
                attn_scale=attn_scale, causal=True, norm=layernorm, norm_eps=norm_eps,
                bias=bias, dropout=dropout,
            )
            for _ in range(depth)
        )
        self.norm_f = make_norm(width, layernorm, norm_eps, bias)
        self.head = nn.Linear(width, vocab_size, bias=False)
        if tie_head:
            self.head.weight = self.tok_emb.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Standard GPT-2 init: N(0, σ²) everywhere, σ/√(2L) on residual projections, zero biases."""
        gpt2_init_(self, self.blocks, self.init_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) → logits (B, T, vocab)."""
        seq = idx.shape[1]
        if seq > self.max_seq_len:
            raise ValueError(f"sequence length {seq} exceeds max_seq_len={self.max_seq_len}")
        pos = torch.arange(seq, device=idx.device)
        h = self.drop(self.embed_mult * (self.tok_emb(idx) + self.pos_emb(pos)))
        for block in self.blocks:
            h = block(h)
        return self.readout_mult * self.head(self.norm_f(h))


def _hf_to_local(name: str) -> list[tuple[str, slice | None]]:
    """Map one Hugging Face GPT-2 tensor name to (local name, column slice of a fused qkv) pairs."""
    name = name.removeprefix("transformer.")
    if name.startswith("h."):
        _, index, rest = name.split(".", 2)
        prefix = f"blocks.{index}."
        if rest.startswith("attn.c_attn."):
            kind = rest.rsplit(".", 1)[1]
            return [(f"{prefix}attn.{p}.{kind}", slice(i, i + 1)) for i, p in enumerate("qkv")]
        table = {"ln_1.": "norm1.", "ln_2.": "norm2.", "attn.c_proj.": "attn.o.",
                 "mlp.c_fc.": "mlp.up.", "mlp.c_proj.": "mlp.down."}
        for hf, local in table.items():
            if rest.startswith(hf):
                return [(prefix + local + rest.removeprefix(hf), None)]
        return []  # attention-mask buffers of old checkpoints
    table = {"wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight",
             "ln_f.weight": "norm_f.weight", "ln_f.bias": "norm_f.bias", "lm_head.weight": "head.weight"}
    return [(table[name], None)] if name in table else []


def _read_hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(path / "model.safetensors")
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")


def load_hf_gpt2(path: str | Path, **overrides) -> GPT2:
    """Build a GPT2 from a local Hugging Face GPT-2 checkpoint (config.json + weights).

    HF stores attention and MLP weights as Conv1D (in, out) with q, k, v fused; they are transposed
    and split here. ``overrides`` are passed to the constructor (e.g. ``dropout``).
    """
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    if config.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{path}: activation {config['activation_function']!r} is not supported")
    width, heads = config["n_embd"], config["n_head"]
    kwargs = dict(
        vocab_size=config["vocab_size"], width=width, depth=config["n_layer"],
        head_dim=width // heads, max_seq_len=config["n_positions"],
        norm_eps=config.get("layer_norm_epsilon", 1e-5), tie_head=config.get("tie_word_embeddings", True),
    )
    model = GPT2(**(kwargs | overrides))
    state = {}
    for hf_name, tensor in _read_hf_state_dict(path).items():
        conv1d = hf_name.endswith("weight") and any(k in hf_name for k in ("c_attn", "c_proj", "c_fc"))
        for local, part in _hf_to_local(hf_name):
            value = tensor
            if part is not None:
                value = value.chunk(3, dim=-1)[part.start]
            state[local] = value.t().contiguous() if conv1d else value.contiguous()
    if model.head.weight is model.tok_emb.weight:  # tied: HF files may omit lm_head.weight
        state["head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state, strict=True)
    return model
