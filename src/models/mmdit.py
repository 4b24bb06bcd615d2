"""MMDiT: two token streams with their own weights and one joint attention (SD3, Esser et al. 2024).

    x_0 = α_in · (W_patch · patchify(x) + P_sincos)       image tokens
    c_0 = α_in · W_ctx · context                           condition tokens (a caption-embedding tensor,
                                                           or the class's row of a table)
    v   = MLP_t(sinusoid(t)) + E_y[y]                      the conditioning vector
    per block, each stream s ∈ {x, c} has its own adaLN (n → 6n), q/k/v/o, QK-norm and MLP:
        q_s, k_s, v_s = proj_s(modulate(LN(s), shift₁ˢ, scale₁ˢ));  [a_x ; a_c] = Attn([q_x ; q_c], …)
        s ← s + m · gate₁ˢ ⊙ O_s a_s;   s ← s + m · gate₂ˢ ⊙ MLP_s(modulate(LN(s), shift₂ˢ, scale₂ˢ))
    out = W_out (α_out · modulate(LN(x_L), shift, scale)) → unpatchify      (the c stream is dropped)

QK-norm is RMSNorm over each head's q and k (gains of size d_head: finite, constant LR), so the
logits do not depend on the q/k scale and the query is not zero-initialised (docs/dit_mup.md,
“MMDiT”). As in SD3 the last block's condition stream only feeds the attention (no output projection
or MLP); that block lives outside the block list and is marked a residual branch in ``mup_roles``.
"""

from __future__ import annotations

import torch
from torch import nn

from src.models.layers import (MLP, Attention, ImageDenoiser, TimestepEmbedder, joint_attention, make_norm, modulate,
                               sincos_2d, xavier_fused_)


class Stream(nn.Module):
    """One stream's half of a joint block; ``pre_only``: attention inputs only (SD3's last c-stream)."""

    def __init__(self, width: int, head_dim: int, mlp_ratio: int, attn_scale: float | None, pre_only: bool = False) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, (2 if pre_only else 6) * width))
        self.norm1 = make_norm(width, eps=1e-6, affine=False)
        self.attn = Attention(width, head_dim, scale=attn_scale, causal=False, qk_norm=True)
        if pre_only:  # keys and values only: no query, output projection or MLP
            del self.attn.q, self.attn.q_norm, self.attn.o
        else:
            self.norm2 = make_norm(width, eps=1e-6, affine=False)
            self.mlp = MLP(width, mlp_ratio)

    def pre(self, s: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        mods = self.ada(vec).chunk(2 if self.pre_only else 6, dim=-1)
        return modulate(self.norm1(s), mods[0], mods[1]), mods[2:]

    def post(self, s: torch.Tensor, attended: torch.Tensor, mods: tuple[torch.Tensor, ...], mult: float) -> torch.Tensor:
        gate1, shift2, scale2, gate2 = mods
        s = s + mult * gate1.unsqueeze(1) * attended
        return s + mult * gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(s), shift2, scale2))


class JointBlock(nn.Module):
    def __init__(self, width: int, head_dim: int, mlp_ratio: int, branch_mult: float, attn_scale: float | None,
                 last: bool = False) -> None:
        super().__init__()
        self.branch_mult = float(branch_mult)
        self.x = Stream(width, head_dim, mlp_ratio, attn_scale)
        self.c = Stream(width, head_dim, mlp_ratio, attn_scale, pre_only=last)

    def forward(self, x: torch.Tensor, c: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hx, mods_x = self.x.pre(x, vec)
        hc, mods_c = self.c.pre(c, vec)
        if self.c.pre_only:  # the c stream only lends its keys and values
            q, k, v = self.x.attn.qkv(hx)
            kc, vc = self.c.attn.kv(hc)
            ax = self.x.attn.out(self.x.attn.attend(q, torch.cat([k, kc], 2), torch.cat([v, vc], 2)))
            return self.x.post(x, ax, mods_x, self.branch_mult), c
        ax, ac = joint_attention([self.x.attn, self.c.attn], [hx, hc])
        return self.x.post(x, ax, mods_x, self.branch_mult), self.c.post(c, ac, mods_c, self.branch_mult)


class MMDiT(ImageDenoiser):
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 4,
        num_classes: int = 1000,
        width: int = 512,
        depth: int = 8,
        head_dim: int = 64,
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
        if depth < 2:
            raise ValueError(f"depth={depth}: MMDiT needs at least 2 blocks (the last one is SD3's pre-only block)")
        self.cond_dim = cond_dim
        self.embed_mult, self.readout_mult = float(embed_mult), float(readout_mult)

        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, width)
        self.register_buffer("pos_embed", sincos_2d(width, image_size // patch_size), persistent=False)
        self.context_embed = nn.Linear(cond_dim, width)
        self.t_embed = TimestepEmbedder(width, freq_dim)
        self.y_embed = self.label_table(class_dropout, width)  # pooled conditioning
        self.y_tokens = self.label_table(class_dropout, cond_tokens * cond_dim)  # condition tokens: finite
        self.blocks = nn.ModuleList(
            JointBlock(width, head_dim, mlp_ratio, branch_mult, attn_scale) for _ in range(depth - 1))
        self.last = JointBlock(width, head_dim, mlp_ratio, branch_mult, attn_scale, last=True)
        self.norm_final = make_norm(width, eps=1e-6, affine=False)
        self.ada_final = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, patch_size * patch_size * in_channels)
        self.mup_roles = {f"last.{name}": (None, True) for name, _ in self.last.named_parameters()}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """SD3-style init: xavier Linears (fused per-stream qkv), N(0, 0.02²) timestep MLP and tables,
        zero adaLN modulation (adaLN-Zero) and zero readout."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in (self.t_embed.mlp[0], self.t_embed.mlp[2], self.y_embed, self.y_tokens):
            nn.init.normal_(layer.weight, std=0.02)
        for block in [*self.blocks, self.last]:
            for stream in (block.x, block.c):
                nn.init.zeros_(stream.ada[1].weight)
                xavier_fused_([getattr(stream.attn, n) for n in ("q", "k", "v") if hasattr(stream.attn, n)])
        nn.init.zeros_(self.ada_final[1].weight)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W), timesteps (B,), labels (B,) (pooled conditioning and, without a
        ``context`` (B, L, cond_dim), the condition tokens)."""
        if context is None:
            context = self.y_tokens(y).view(len(y), -1, self.cond_dim)
        h = self.embed_mult * (self.patch_embed(self.patches(x)) + self.pos_embed)
        c = self.embed_mult * self.context_embed(context)
        vec = self.t_embed(t) + self.y_embed(y)
        for block in [*self.blocks, self.last]:
            h, c = block(h, c, vec)
        shift, scale = self.ada_final(vec).chunk(2, dim=-1)
        out = self.head(self.readout_mult * modulate(self.norm_final(h), shift, scale))
        return self.image(out)
