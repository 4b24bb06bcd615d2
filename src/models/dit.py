"""DiT: a diffusion Transformer with adaLN conditioning (Peebles & Xie 2023, facebookresearch/DiT layout).

    h_0 = α_in · (W_patch · patchify(x) + P_sincos)                 tokens (B, T, n)
    c   = MLP_t(sinusoid(t)) + E_y[y]                                conditioning (B, n), y = K is "null"
    per block, (shift, scale, gate) × 2 = Linear(SiLU(c)):
        h ← h + m · gate₁ ⊙ Attn(modulate(LN(h), shift₁, scale₁))
        h ← h + m · gate₂ ⊙ MLP(modulate(LN(h), shift₂, scale₂))
    out = W_out · (α_out · modulate(LN(h_L), shift, scale)) + b_out   → unpatchify → ε (and Σ) channels

α_out multiplies the readout's input, not its bias, as microsoft/mup's MuReadout does.

LayerNorms have no gain or bias. The init is the original DiT's (xavier-uniform Linears, N(0, 0.02²)
label table and timestep MLP, zero readout), with ``ada_init="zero"`` giving adaLN-Zero (every
modulation Linear zeroed, each block the identity at init) and ``ada_init="fan_in"`` the DiT-μP code's
N(0, 1/fan_in) modulation. α_in = ``embed_mult``, m = ``branch_mult``, α_out = ``readout_mult`` and the
attention logit scale are the only knobs a parametrization turns.
"""

from __future__ import annotations

import torch
from torch import nn

from src.models.layers import (MLP, Attention, ImageDenoiser, TimestepEmbedder, make_norm, modulate, sincos_2d,
                               xavier_fused_)

ADA_INITS = ("zero", "fan_in")
# name: (width, depth, head_dim) of the published presets (patch 2 on a 32×32×4 latent)
PRESETS = {"S": (384, 12, 64), "B": (768, 12, 64), "L": (1024, 24, 64), "XL": (1152, 28, 72)}


class AdaLNBlock(nn.Module):
    """A DiT block: attention and MLP branches, each modulated and gated by the conditioning."""

    def __init__(self, width: int, head_dim: int, mlp_ratio: int, branch_mult: float, attn_scale: float | None) -> None:
        super().__init__()
        self.branch_mult = float(branch_mult)
        self.norm1 = make_norm(width, eps=1e-6, affine=False)
        self.attn = Attention(width, head_dim, scale=attn_scale, causal=False)
        self.norm2 = make_norm(width, eps=1e-6, affine=False)
        self.mlp = MLP(width, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        h = h + self.branch_mult * gate1.unsqueeze(1) * self.attn(modulate(self.norm1(h), shift1, scale1))
        return h + self.branch_mult * gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(h), shift2, scale2))


class DiT(ImageDenoiser):
    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 4,
        num_classes: int = 1000,
        width: int = 384,
        depth: int = 12,
        head_dim: int = 64,
        patch_size: int = 2,
        *,
        mlp_ratio: int = 4,
        learn_sigma: bool = False,
        class_dropout: bool = True,
        freq_dim: int = 256,
        ada_init: str = "zero",
        embed_mult: float = 1.0,
        branch_mult: float = 1.0,
        readout_mult: float = 1.0,
        attn_scale: float | None = None,
    ) -> None:
        super().__init__(image_size, in_channels, num_classes, width, depth, head_dim, patch_size,
                         out_channels=2 * in_channels if learn_sigma else in_channels, mlp_ratio=mlp_ratio,
                         freq_dim=freq_dim)
        if ada_init not in ADA_INITS:
            raise ValueError(f"ada_init={ada_init!r}; choose one of {', '.join(ADA_INITS)}")
        self.learn_sigma, self.ada_init = learn_sigma, ada_init
        self.embed_mult, self.readout_mult = float(embed_mult), float(readout_mult)

        # A Linear on flattened p×p patches is DiT's Conv2d(kernel p, stride p) with the same weights
        # (flattened); as a Linear its fan-in and fan-out read like every other matrix's.
        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, width)
        self.register_buffer("pos_embed", sincos_2d(width, image_size // patch_size), persistent=False)
        self.t_embed = TimestepEmbedder(width, freq_dim)
        self.y_embed = self.label_table(class_dropout, width)
        self.blocks = nn.ModuleList(
            AdaLNBlock(width, head_dim, mlp_ratio, branch_mult, attn_scale) for _ in range(depth))
        self.norm_final = make_norm(width, eps=1e-6, affine=False)
        self.ada_final = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, patch_size * patch_size * self.out_channels)  # the readout
        self.reset_parameters()

    def modulation_layers(self) -> list[nn.Linear]:
        return [block.ada[-1] for block in self.blocks] + [self.ada_final[-1]]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The original DiT init (see the module docstring); ``ada_init`` picks the modulation's."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # DiT's qkv is one fused Linear
            xavier_fused_([block.attn.q, block.attn.k, block.attn.v])
        nn.init.normal_(self.y_embed.weight, std=0.02)
        for layer in self.t_embed.mlp[0], self.t_embed.mlp[2]:
            nn.init.normal_(layer.weight, std=0.02)
        for layer in self.modulation_layers():
            if self.ada_init == "zero":
                nn.init.zeros_(layer.weight)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="linear")
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def condition(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.t_embed(t) + self.y_embed(y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Noisy images (B, C, H, W), timesteps (B,), labels (B,) → (B, C_out, H, W)."""
        h = self.embed_mult * (self.patch_embed(self.patches(x)) + self.pos_embed)
        c = self.condition(t, y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_final(c).chunk(2, dim=-1)
        out = self.head(self.readout_mult * modulate(self.norm_final(h), shift, scale))  # α_out on the input
        return self.image(out)


def dit_preset(name: str, **kwargs) -> DiT:
    """DiT-S/B/L/XL with patch 2 on a 32×32×4 latent, 1000 classes and learned Σ (ImageNet 256)."""
    width, depth, head_dim = PRESETS[name]
    defaults = dict(image_size=32, in_channels=4, num_classes=1000, patch_size=2, learn_sigma=True)
    return DiT(width=width, depth=depth, head_dim=head_dim, **(defaults | kwargs))
