"""U-ViT: a ViT over [time token, class token, patch tokens] with long skips (Bao et al. 2023).

    h_0 = α_in · ([MLP_t(sinusoid_n(t)), E_y[y], W_patch · patchify(x)] + P)       P learned, (2 + T, n)
    in-blocks  b_1..b_D:  h ← Block(h), each output pushed on a stack
    mid-block:            h ← Block(h)
    out-blocks b'_1..b'_D: h ← Block(W_skip [h ; stack.pop()])                     W_skip: 2n → n
    out = W_out (α_out · LN(h)) on the patch tokens → unpatchify

Blocks are pre-LN Transformer blocks (shared ``layers.Block``, bidirectional) with residual
multiplier m. The sinusoid has dimension n, so both layers of the optional time MLP (n → 4n → n) are
hidden; so is W_skip, which the stream passes through unscaled by m (not a residual branch although
it repeats with depth); the class table and patch embedding are input-like; P is a vector (one
growing dim). Init as in the U-ViT code: trunc-normal(0.02) Linears and P, zero biases. ``depth`` is D, the number of in-
(and out-) blocks: 2D + 1 blocks in all.
"""

from __future__ import annotations

import torch
from torch import nn

from src.models.layers import Block, ImageDenoiser, make_norm, timestep_features


class SkipBlock(nn.Module):
    """An out-block: W_skip [h ; skip] (2n → n), then a Transformer block."""

    def __init__(self, width: int, block: Block) -> None:
        super().__init__()
        self.skip = nn.Linear(2 * width, width)
        self.block = block

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.skip(torch.cat([h, skip], dim=-1)))


class UViT(ImageDenoiser):
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 4,
        num_classes: int = 1000,
        width: int = 512,
        depth: int = 6,
        head_dim: int = 64,
        patch_size: int = 2,
        *,
        mlp_ratio: int = 4,
        mlp_time_embed: bool = True,
        class_dropout: bool = True,
        embed_mult: float = 1.0,
        branch_mult: float = 1.0,
        readout_mult: float = 1.0,
        attn_scale: float | None = None,
    ) -> None:
        super().__init__(image_size, in_channels, num_classes, width, depth, head_dim, patch_size, mlp_ratio=mlp_ratio)
        self.embed_mult, self.readout_mult = float(embed_mult), float(readout_mult)

        def block() -> Block:
            return Block(width, head_dim, mlp_ratio=mlp_ratio, branch_mult=branch_mult, attn_scale=attn_scale,
                         causal=False)

        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, width)
        self.time_embed = (nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, width))
                           if mlp_time_embed else nn.Identity())
        self.y_embed = self.label_table(class_dropout, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + self.tokens, width))
        self.in_blocks = nn.ModuleList(block() for _ in range(depth))
        self.mid_block = block()
        self.out_blocks = nn.ModuleList(SkipBlock(width, block()) for _ in range(depth))
        self.norm_final = make_norm(width)
        self.head = nn.Linear(width, patch_size * patch_size * in_channels)
        # the mid block is a residual block like the others, though no list of it grows with depth; the
        # long-skip projection sits in the depth list but is not a branch (its output is not ×branch_mult)
        self.mup_roles = {f"mid_block.{name}": (None, True) for name, _ in self.mid_block.named_parameters()}
        self.mup_roles.update({f"out_blocks.*.skip.{name}": (None, False) for name in ("weight", "bias")})
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        width = self.pos_embed.shape[-1]
        time = self.time_embed(timestep_features(t, width)).unsqueeze(1)
        h = torch.cat([time, self.y_embed(y).unsqueeze(1), self.patch_embed(self.patches(x))], dim=1)
        h = self.embed_mult * (h + self.pos_embed)
        skips = []
        for blk in self.in_blocks:
            h = blk(h)
            skips.append(h)
        h = self.mid_block(h)
        for blk in self.out_blocks:
            h = blk(h, skips.pop())
        out = self.head(self.readout_mult * self.norm_final(h[:, 2:]))
        return self.image(out)
