"""Transformer building blocks shared by every model in scaling-lab.

Written here instead of taken from timm because μP needs three things timm's blocks hard-code:
an explicit attention scale (timm's fused path always uses head_dim**-0.5), separate q/k/v/o
projections (so the query can be zero-initialised and each matrix gets its own role), and a scalar
multiplier on every residual branch. Modules take numbers only; they know nothing about μP beyond
the multipliers they are given. The diffusion pieces (patches, 2-D sin-cos positions, timestep
embedding, adaLN modulation) follow facebookresearch/DiT.
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


@torch.no_grad()
def xavier_fused_(linears: list[nn.Linear]) -> None:
    """Xavier-uniform as if ``linears`` were one matrix with their outputs stacked: the init the
    originals give their fused qkv (3n × n: variance 1/(2n)) or kv (2n × n) projections, which are
    separate Linears here so each can have its own μP role and init."""
    fan_in, fan_out = linears[0].in_features, sum(layer.out_features for layer in linears)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    for layer in linears:
        nn.init.uniform_(layer.weight, -bound, bound)


def make_norm(width: int, enabled: bool = True, eps: float = 1e-5, bias: bool = True,
              affine: bool = True, rms: bool = False) -> nn.Module:
    """LayerNorm over the last dim (without gain and bias when not ``affine``, as in DiT), RMSNorm
    (gain only, LLaMA/LLaDA) with ``rms``, or the identity when normalisation is switched off."""
    if not enabled:
        return nn.Identity()
    if rms:
        return nn.RMSNorm(width, eps=eps, elementwise_affine=affine)
    return nn.LayerNorm(width, eps=eps, elementwise_affine=affine, bias=bias and affine)


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE (Su et al. 2021) on (batch, heads, seq, d_head): channel pairs (i, i + d/2) at position p
    rotate by p·θ_i, θ_i = base^(−2i/d), so q·k depends on positions only through their difference.
    Angles are computed per call (no buffer: models are built on the meta device first)."""
    half = x.shape[-1] // 2
    freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float64) / half)
    angle = torch.outer(torch.arange(x.shape[-2], device=x.device, dtype=torch.float64), freq)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Multi-head attention y = O · softmax(s · q kᵀ) v, computed by scaled_dot_product_attention.

    The logit scale s is explicit: 1/√d_head under SP; μP passes √d_base/d_head-style values instead.
    With ``causal`` the softmax is masked to the past (GPT-2); without it attention is bidirectional.
    ``context`` in ``forward`` makes it cross-attention (q from x, k and v from the context, of width
    ``context_width``); ``qk_norm`` applies RMSNorm over each head's q and k (gains of size d_head);
    ``rope`` rotates q and k by their positions (``rotary``, base ``rope_base``).
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
        qk_norm: bool = False,
        context_width: int | None = None,
        rope: bool = False,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        self.n_heads = check_heads(width, head_dim)
        self.rope, self.rope_base = rope, float(rope_base)
        self.head_dim = head_dim
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
        self.causal = causal
        self.dropout = dropout
        kv_width = context_width or width
        self.q = nn.Linear(width, width, bias=bias)
        self.k = nn.Linear(kv_width, width, bias=bias)
        self.v = nn.Linear(kv_width, width, bias=bias)
        self.o = nn.Linear(width, width, bias=bias)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.resid_drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)

    def kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k (normalised when ``qk_norm``) and v as (batch, heads, seq, d_head)."""
        return self.k_norm(self._heads(self.k(source))), self._heads(self.v(source))

    def qkv(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """q, k, v as (batch, heads, seq, d_head); k and v from ``context`` when given."""
        q, (k, v) = self.q_norm(self._heads(self.q(x))), self.kv(x if context is None else context)
        if self.rope:
            q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=causal, scale=self.scale)
        return y.transpose(1, 2).flatten(2)

    def out(self, y: torch.Tensor) -> torch.Tensor:
        return self.resid_drop(self.o(y))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.attend(*self.qkv(x, context), causal=self.causal and context is None))


def joint_attention(attns: list[Attention], xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """MMDiT's joint attention: every stream projects its own q, k, v with its own weights, one
    softmax runs over the concatenated sequence, and each stream's slice goes through its own output
    projection. The streams must share the number of heads, d_head and the logit scale."""
    parts = [attn.qkv(x) for attn, x in zip(attns, xs)]
    q, k, v = (torch.cat([p[i] for p in parts], dim=2) for i in range(3))
    y = attns[0].attend(q, k, v)
    ys = y.split([x.shape[1] for x in xs], dim=1)
    return [attn.out(part) for attn, part in zip(attns, ys)]


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


class SwiGLU(nn.Module):
    """LLaMA's feed-forward y = W_down · (SiLU(W_gate x) ⊙ W_up x), hidden size ratio · width."""

    def __init__(self, width: int, ratio: int = 3, *, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate = nn.Linear(width, ratio * width, bias=bias)
        self.up = nn.Linear(width, ratio * width, bias=bias)
        self.down = nn.Linear(ratio * width, width, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.silu(self.gate(x)) * self.up(x)))


class Block(nn.Module):
    """Pre-norm residual block: h ← h + m·Attn(N₁(h)), then h ← h + m·MLP(N₂(h)).

    m is ``branch_mult``: 1 under SP, 1/r_L (CompleteP) or 1/√r_L (Depth-μP) under depth scaling.
    A LLaMA block is ``rms_norm=True, rope=True, swiglu=True`` (and no biases: ``bias=False``).
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
        rms_norm: bool = False,
        rope: bool = False,
        rope_base: float = 10000.0,
        swiglu: bool = False,
    ) -> None:
        super().__init__()
        self.branch_mult = float(branch_mult)
        self.norm1 = make_norm(width, norm, norm_eps, bias, rms=rms_norm)
        self.attn = Attention(width, head_dim, scale=attn_scale, causal=causal, bias=bias, dropout=dropout,
                              rope=rope, rope_base=rope_base)
        self.norm2 = make_norm(width, norm, norm_eps, bias, rms=rms_norm)
        self.mlp = (SwiGLU(width, mlp_ratio, bias=bias, dropout=dropout) if swiglu
                    else MLP(width, mlp_ratio, bias=bias, dropout=dropout))

    def residual_projections(self) -> list[nn.Linear]:
        """The matrices that write into the residual stream (GPT-2 scales their init by 1/√(2L))."""
        return [self.attn.o, self.mlp.down]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = torch.add(h, self.attn(self.norm1(h)), alpha=self.branch_mult)
        return torch.add(h, self.mlp(self.norm2(h)), alpha=self.branch_mult)


# --------------------------------------------------------------------------- diffusion Transformers


@torch.no_grad()
def gpt2_init_(model: nn.Module, blocks: nn.ModuleList, std: float) -> None:
    """GPT-2's init: N(0, σ²) on every Linear and Embedding weight, zero biases, unit norm gains, and
    σ/√(2L) on the two residual projections of each of the L blocks."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            module.reset_parameters()
    for block in blocks:
        for proj in block.residual_projections():
            nn.init.normal_(proj.weight, std=std / math.sqrt(2 * len(blocks)))


class ImageDenoiser(nn.Module):
    """What the four diffusion Transformers share: checked sizes (image size divisible by the patch,
    width by the head dim), the image geometry, (un)patchify, and the null label of classifier-free
    guidance (the last row of a label table built with ``class_dropout``)."""

    def __init__(self, image_size: int, in_channels: int, num_classes: int, width: int, depth: int, head_dim: int,
                 patch_size: int, out_channels: int | None = None, **sizes: int) -> None:
        super().__init__()
        from src.checks import check_sizes

        check_sizes(image_size=image_size, in_channels=in_channels, num_classes=num_classes, width=width,
                    depth=depth, head_dim=head_dim, patch_size=patch_size, **sizes)
        check_heads(width, head_dim)
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.image_size, self.in_channels, self.patch_size = image_size, in_channels, patch_size
        self.num_classes = num_classes
        self.out_channels = out_channels or in_channels
        self.tokens = (image_size // patch_size) ** 2

    def label_table(self, class_dropout: bool, dim: int) -> nn.Embedding:
        """(classes + 1 null row when ``class_dropout``) × dim."""
        self.has_null = bool(class_dropout)
        return nn.Embedding(self.num_classes + int(class_dropout), dim)

    @property
    def null_label(self) -> int:
        """The label index classifier-free guidance uses for "no class"."""
        if not self.has_null:
            raise ValueError(f"this {type(self).__name__} was built with class_dropout=false: it has no null label")
        return self.num_classes

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x, self.patch_size)

    def image(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpatchify(tokens, self.patch_size, self.out_channels, self.image_size, self.image_size)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x · (1 + scale) + shift, with (batch, width) shift and scale broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) → (B, H/p · W/p, p·p·C) tokens in row-major patch order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of ``patchify``: (B, T, p·p·C) → (B, C, H, W)."""
    b = tokens.shape[0]
    x = tokens.reshape(b, height // patch, width // patch, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, height, width)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[sin(p ω_k), cos(p ω_k)] with ω_k = 10000^(-k/(dim/2)), k < dim/2 (MAE/DiT positions)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double().reshape(-1, 1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions of a grid × grid patch layout, (grid², dim): half the channels
    encode the column, half the row, as in DiT's ``get_2d_sincos_pos_embed``."""
    if dim % 4:
        raise ValueError(f"width={dim} must be a multiple of 4 for 2-D sin-cos positions")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1).float()


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's sinusoidal timestep features [cos(t ω_k), sin(t ω_k)], ω_k = max_period^(-k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """t → MLP(sinusoid(t)): Linear(freq_dim → n), SiLU, Linear(n → n)."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))
