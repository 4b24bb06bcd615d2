"""Transformer building blocks shared by every model in scaling-lab.

Written here instead of taken from timm because μP needs three things timm's blocks hard-code:
an explicit attention scale (timm's fused path always uses head_dim**-0.5), separate q/k/v/o
projections (so the query can be zero-initialised and each matrix gets its own role), and a scalar
multiplier on every residual branch. Modules take numbers only; they know nothing about μP beyond
the multipliers they are given.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def check_heads(width: int, head_dim: int) -> int:
    """Number of heads n_heads = width / head_dim; ValueError when it is not a whole number."""
    if width % head_dim:
        raise ValueError(
            f"width={width} is not divisible by head_dim={head_dim}; "
            f"choose a width that is a multiple of {head_dim}"
        )
    return width // head_dim


def make_norm(width: int, enabled: bool = True, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """LayerNorm over the last dim, or the identity when normalisation is switched off."""
    return nn.LayerNorm(width, eps=eps, bias=bias) if enabled else nn.Identity()


class Attention(nn.Module):
    """Multi-head self-attention y = O · softmax(s · q kᵀ) v, computed by scaled_dot_product_attention.

    The logit scale s is explicit: 1/√d_head under SP; μP passes √d_base/d_head-style values instead.
    With ``causal`` the softmax is masked to the past (GPT-2); without it attention is bidirectional.
    """

    def __init__(
        self,
        width: int,
        head_dim: int,
        *,
        scale: float | None = None,
        causal: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_heads = check_heads(width, head_dim)
        self.head_dim = head_dim
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
        self.causal = causal
        self.dropout = dropout
        self.q = nn.Linear(width, width, bias=bias)
        self.k = nn.Linear(width, width, bias=bias)
        self.v = nn.Linear(width, width, bias=bias)
        self.o = nn.Linear(width, width, bias=bias)
        self.resid_drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        y = F.scaled_dot_product_attention(
            self._heads(self.q(x)),
            self._heads(self.k(x)),
            self._heads(self.v(x)),
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal,
            scale=self.scale,
        )
        return self.resid_drop(self.o(y.transpose(1, 2).reshape(batch, seq, width)))


class MLP(nn.Module):
    """Position-wise feed-forward y = W_down · GELU(W_up x), hidden size ratio · width."""

    def __init__(
        self,
        width: int,
        ratio: int = 4,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        gelu_approximate: str = "tanh",
    ) -> None:
        super().__init__()
        self.up = nn.Linear(width, ratio * width, bias=bias)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.down = nn.Linear(ratio * width, width, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(self.act(self.up(x))))


class Block(nn.Module):
    """Pre-norm residual block: h ← h + m·Attn(N₁(h)), then h ← h + m·MLP(N₂(h)).

    m is ``branch_mult``: 1 under SP, 1/r_L (CompleteP) or 1/√r_L (Depth-μP) under depth scaling.
    """

    def __init__(
        self,
        width: int,
        head_dim: int,
        *,
        mlp_ratio: int = 4,
        branch_mult: float = 1.0,
        attn_scale: float | None = None,
        causal: bool = True,
        norm: bool = True,
        norm_eps: float = 1e-5,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.branch_mult = float(branch_mult)
        self.norm1 = make_norm(width, norm, norm_eps, bias)
        self.attn = Attention(
            width, head_dim, scale=attn_scale, causal=causal, bias=bias, dropout=dropout
        )
        self.norm2 = make_norm(width, norm, norm_eps, bias)
        self.mlp = MLP(width, mlp_ratio, bias=bias, dropout=dropout)

    def residual_projections(self) -> list[nn.Linear]:
        """The matrices that write into the residual stream (GPT-2 scales their init by 1/√(2L))."""
        return [self.attn.o, self.mlp.down]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = torch.add(h, self.attn(self.norm1(h)), alpha=self.branch_mult)
        return torch.add(h, self.mlp(self.norm2(h)), alpha=self.branch_mult)
