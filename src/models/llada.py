"""LLaDA: the mask predictor of a masked-diffusion language model (Nie et al. 2025), LLaMA-like.

    h_0 = α_in · E[x]                         E: (vocab + 1) × n, the last row is the mask token M
    h_l = h_{l-1} + m · Attn(RMSNorm(h_{l-1})),  then  h_l ← h_l + m · SwiGLU(RMSNorm(h_l))
    logits = α_out · W_head · RMSNorm(h_L)     over the vocab (never M)

Attention is bidirectional (no causal mask) with RoPE on q and k (base ``rope_base``); there is no
timestep input (the clean-data conditional of a masked token does not depend on t). The published
checkpoints keep M inside their vocab (``mask_id`` < vocab: E has vocab rows and the head scores all
of them, M included); ``src/models/llada_hf.py`` loads them. α_in = ``embed_mult``,
m = ``branch_mult``, α_out = ``readout_mult`` and ``attn_scale`` are the parametrization's knobs.
Init: N(0, σ²), σ = ``init_std``, with σ/√(2L) on the residual projections (as GPT-2), unit RMSNorm
gains, and an untied readout (μP gives it its own role).
"""

from __future__ import annotations

import torch
from torch import nn

from src.checks import check_sizes
from src.models.layers import Block, check_heads, gpt2_init_, make_norm


class LLaDA(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        width: int = 128,
        depth: int = 4,
        head_dim: int = 32,
        *,
        mlp_ratio: int = 3,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
        init_std: float = 0.02,
        embed_mult: float = 1.0,
        branch_mult: float = 1.0,
        readout_mult: float = 1.0,
        attn_scale: float | None = None,
        rope_base: float = 10000.0,
        mask_id: int | None = None,
    ) -> None:
        super().__init__()
        check_sizes(vocab_size=vocab_size, width=width, depth=depth, head_dim=head_dim, mlp_ratio=mlp_ratio)
        check_heads(width, head_dim)
        if head_dim % 2:
            raise ValueError(f"head_dim={head_dim} must be even (RoPE rotates channel pairs)")
        if mask_id is not None and not 0 <= mask_id < vocab_size:
            raise ValueError(f"mask_id={mask_id} must be a token id below vocab_size={vocab_size}")
        self.vocab_size = vocab_size
        self.mask_id = vocab_size if mask_id is None else mask_id
        self.init_std = init_std
        self.embed_mult, self.readout_mult = float(embed_mult), float(readout_mult)
        self.tok_emb = nn.Embedding(vocab_size + (mask_id is None), width)
        self.blocks = nn.ModuleList(
            Block(width, head_dim, mlp_ratio=mlp_ratio, branch_mult=branch_mult, attn_scale=attn_scale,
                  causal=False, norm_eps=norm_eps, bias=False, dropout=dropout, rms_norm=True, rope=True,
                  rope_base=rope_base, swiglu=True)
            for _ in range(depth)
        )
        self.norm_final = make_norm(width, eps=norm_eps, rms=True)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gpt2_init_(self, self.blocks, self.init_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), the mask token allowed → logits (B, T, vocab)."""
        h = self.embed_mult * self.tok_emb(tokens)
        for block in self.blocks:
            h = block(h)
        return self.readout_mult * self.head(self.norm_final(h))
