"""PixArt-α: DiT blocks with cross-attention to a condition sequence and adaLN-single (Chen et al. 2023).

    h_0 = α_in · (W_patch · patchify(x) + P_sincos)
    e   = MLP_t(sinusoid(t));   m = W_t · SiLU(e)                     one shared t_block: n → 6n
    s   = MLP_c(context)  (context: a caption-embedding tensor, or the class's row of a table)
    per block, (shift₁, scale₁, gate₁, shift₂, scale₂, gate₂) = m + S_l           S_l: a (6, n) table
        h ← h + m_b · gate₁ ⊙ SelfAttn(modulate(LN(h), shift₁, scale₁))
        h ← h + m_b · CrossAttn(h, s)
        h ← h + m_b · gate₂ ⊙ MLP(modulate(LN(h), shift₂, scale₂))
    out = W_out (α_out · modulate(LN(h_L), (e + S_f) chunks)) → unpatchify

Roles (docs/dit_mup.md, “PixArt-α”): the caption projection's first layer and the patch embedding are
input-like; t_block, cross-attention q/kv/o and the second projection layer hidden; the tables S_l and
S_f vectors (PixArt's randn/√n init shrinks with width; μP keeps their base-width std). The
cross-attention output projection starts at zero, as in PixArt. The class-conditional form embeds the
label into a ``cond_tokens × cond_dim`` sequence (with a null row for classifier-free guidance);
``forward(x, t, y, context=...)`` takes a caption-embedding tensor instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from src.models.layers import (MLP, Attention, ImageDenoiser, TimestepEmbedder, make_norm, modulate, sincos_2d,
                               xavier_fused_)


class PixArtBlock(nn.Module):
    def __init__(self, width: int, head_dim: int, mlp_ratio: int, branch_mult: float, attn_scale: float | None) -> None:
        super().__init__()
        self.branch_mult = float(branch_mult)
        self.norm1 = make_norm(width, eps=1e-6, affine=False)
        self.attn = Attention(width, head_dim, scale=attn_scale, causal=False)
        self.cross = Attention(width, head_dim, scale=attn_scale, causal=False)
        self.norm2 = make_norm(width, eps=1e-6, affine=False)
        self.mlp = MLP(width, mlp_ratio)
        self.table = nn.Parameter(torch.randn(6, width) / math.sqrt(width))

    def forward(self, h: torch.Tensor, mod: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.table).unbind(1)
        h = h + self.branch_mult * gate1.unsqueeze(1) * self.attn(modulate(self.norm1(h), shift1, scale1))
        h = h + self.branch_mult * self.cross(h, context)
        return h + self.branch_mult * gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(h), shift2, scale2))


class PixArt(ImageDenoiser):
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 4,
        num_classes: int = 1000,
        width: int = 1152,
        depth: int = 28,
        head_dim: int = 72,
        patch_size: int = 2,
        *,
        mlp_ratio: int = 4,
        cond_dim: int = 64,
        cond_tokens: int = 4,
        class_dropout: bool = True,
        freq_dim: int = 256,
        embed_mult: float = 1.0,
        branch_mult: float = 1.0,
        readout_mult: float = 1.0,
        attn_scale: float | None = None,
    ) -> None:
        super().__init__(image_size, in_channels, num_classes, width, depth, head_dim, patch_size,
                         mlp_ratio=mlp_ratio, cond_dim=cond_dim, cond_tokens=cond_tokens, freq_dim=freq_dim)
        self.cond_dim = cond_dim
        self.embed_mult, self.readout_mult = float(embed_mult), float(readout_mult)

        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, width)
        self.register_buffer("pos_embed", sincos_2d(width, image_size // patch_size), persistent=False)
        self.t_embed = TimestepEmbedder(width, freq_dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.y_embed = self.label_table(class_dropout, cond_tokens * cond_dim)  # finite: no n
        self.context_proj = nn.Sequential(nn.Linear(cond_dim, width), nn.GELU(approximate="tanh"),
                                          nn.Linear(width, width))
        self.blocks = nn.ModuleList(
            PixArtBlock(width, head_dim, mlp_ratio, branch_mult, attn_scale) for _ in range(depth))
        self.norm_final = make_norm(width, eps=1e-6, affine=False)
        self.table_final = nn.Parameter(torch.randn(2, width) / math.sqrt(width))
        self.head = nn.Linear(width, patch_size * patch_size * in_channels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """PixArt's init: xavier Linears (fused self-attention qkv and cross-attention kv), N(0, 0.02²)
        timestep MLP, t_block and caption projection, zero cross-attention output and readout, tables
        randn/√n."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            xavier_fused_([block.attn.q, block.attn.k, block.attn.v])
            xavier_fused_([block.cross.k, block.cross.v])
        for layer in (self.t_embed.mlp[0], self.t_embed.mlp[2], self.t_block[1], self.context_proj[0],
                      self.context_proj[2]):
            nn.init.normal_(layer.weight, std=0.02)
        nn.init.normal_(self.y_embed.weight, std=1.0)
        for block in self.blocks:
            nn.init.zeros_(block.cross.o.weight)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W), timesteps (B,), and labels (B,) or a context (B, L, cond_dim)."""
        if context is None:
            context = self.y_embed(y).view(len(y), -1, self.cond_dim)
        s = self.context_proj(context)
        h = self.embed_mult * (self.patch_embed(self.patches(x)) + self.pos_embed)
        e = self.t_embed(t)
        mod = self.t_block(e).view(len(e), 6, -1)
        for block in self.blocks:
            h = block(h, mod, s)
        shift, scale = (e.unsqueeze(1) + self.table_final).unbind(1)
        out = self.head(self.readout_mult * modulate(self.norm_final(h), shift, scale))
        return self.image(out)
