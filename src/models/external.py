"""Factories ``(width, depth, **multipliers) -> nn.Module`` for models nobody here wrote, for the μP
API (``src.mup.setup``, ``src.mup.coordinate_check``; docs/library.md). No model code is forked: a
multiplier the model's own config exposes is passed there, and one it lacks is a forward hook
(``src.multipliers.scale_output``, also ``src.mup.scale_output``) or an attribute set after
construction.

- **Granite** (``transformers``): its config has every μP knob. ``embedding_multiplier`` scales the
  token embedding, ``residual_multiplier`` both branches of every block, ``logits_scaling`` divides the
  logits (so it is 1/readout_mult) and ``attention_multiplier`` replaces 1/√d_head.
- **Llama** (``transformers``): no multiplier in its config. The readout and the branch multipliers
  are hooks on ``lm_head`` and on each block's ``o_proj`` and ``down_proj``; the embedding multiplier a
  hook on ``embed_tokens``; the attention scale the ``scaling`` attribute of each attention module.
- **ViT** (``timm``): no multiplier either; hooks as for Llama (``head``, each block's ``attn.proj`` and
  ``mlp.fc2``, and ``pos_drop``, whose output is the patch embedding plus the positions). Its
  attention scale is hard-coded: ``Attention.scale`` is 1/√d_head, and
  the fused path (``F.scaled_dot_product_attention``, timm's default) ignores that attribute and uses
  its own 1/√d_head. With the head dim fixed (width grown by adding heads) μP's scale is that value, so
  nothing is needed; when the head dim grows, μP's α·√d_base/d_head needs ``attn.scale`` set *and*
  ``attn.fused_attn = False`` (the unfused path is slower and uses more memory).

Every factory keeps the model's own init (σ = 0.02 for Granite and Llama, timm's truncated normal for
ViT); the plan rescales it per tensor.
"""

from __future__ import annotations

from torch import nn

from src.multipliers import scale_output


def granite(width: int, depth: int, embed_mult: float = 1.0, branch_mult: float = 1.0, readout_mult: float = 1.0,
            attn_scale: float | None = None, head_dim: int = 16, vocab: int = 256, max_len: int = 128) -> nn.Module:
    """``GraniteForCausalLM`` at hidden size ``width`` (``width/head_dim`` heads, MLP 4×) and ``depth``
    blocks, with an untied head."""
    from transformers import GraniteConfig, GraniteForCausalLM

    config = GraniteConfig(
        vocab_size=vocab, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=depth,
        num_attention_heads=width // head_dim, num_key_value_heads=width // head_dim, head_dim=head_dim,
        max_position_embeddings=max_len, tie_word_embeddings=False, embedding_multiplier=embed_mult,
        residual_multiplier=branch_mult, logits_scaling=1.0 / readout_mult,
        attention_multiplier=head_dim**-0.5 if attn_scale is None else attn_scale)
    return GraniteForCausalLM(config)


def _llama(width: int, depth: int, head_dim: int, vocab: int, max_len: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=depth,
        num_attention_heads=width // head_dim, num_key_value_heads=width // head_dim, head_dim=head_dim,
        max_position_embeddings=max_len, tie_word_embeddings=False))


def llama(width: int, depth: int, embed_mult: float = 1.0, branch_mult: float = 1.0, readout_mult: float = 1.0,
          attn_scale: float | None = None, head_dim: int = 16, vocab: int = 256, max_len: int = 128) -> nn.Module:
    """``LlamaForCausalLM`` sized as :func:`granite`, the multipliers as hooks and attributes."""
    model = _llama(width, depth, head_dim, vocab, max_len)
    scale_output(model.model.embed_tokens, embed_mult)
    scale_output(model.lm_head, readout_mult)
    for layer in model.model.layers:
        scale_output(layer.self_attn.o_proj, branch_mult)
        scale_output(layer.mlp.down_proj, branch_mult)
        if attn_scale is not None:
            layer.self_attn.scaling = attn_scale
    return model


def plain_llama(width: int, depth: int, head_dim: int = 16, vocab: int = 256, max_len: int = 128) -> nn.Module:
    """Llama as it ships, taking no multiplier: the μP API refuses it wherever one is needed."""
    return _llama(width, depth, head_dim, vocab, max_len)


def vit(width: int, depth: int, embed_mult: float = 1.0, branch_mult: float = 1.0, readout_mult: float = 1.0,
        attn_scale: float | None = None, head_dim: int = 16, img_size: int = 16, patch_size: int = 4,
        classes: int = 10) -> nn.Module:
    """timm's ``VisionTransformer`` at embedding width ``width`` (``width/head_dim`` heads) and ``depth``
    blocks, the multipliers as hooks; ``attn_scale`` sets each block's scale on the unfused path."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=1, num_classes=classes,
                              embed_dim=width, depth=depth, num_heads=width // head_dim, global_pool="avg",
                              class_token=False)
    scale_output(model.pos_drop, embed_mult)  # patches + positions, as the in-house models scale them
    scale_output(model.head, readout_mult)
    for block in model.blocks:
        scale_output(block.attn.proj, branch_mult)
        scale_output(block.mlp.fc2, branch_mult)
        if attn_scale is not None:
            block.attn.scale, block.attn.fused_attn = attn_scale, False
    return model
