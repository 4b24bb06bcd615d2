"""GPT-2 model: parity with Hugging Face, init, multipliers, switches, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from src.models.gpt2 import GPT2, load_hf_gpt2

transformers = pytest.importorskip("transformers")


def _hf_tiny(tie: bool = True):
    config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=64, n_layer=3, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     tie_word_embeddings=tie)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a transposition mix-up shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.normal_(0.0 if "bias" in name else 1.0, 0.1)
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_hugging_face(tmp_path, tie):
    hf = _hf_tiny(tie)
    hf.save_pretrained(tmp_path)
    ours = load_hf_gpt2(tmp_path).eval()
    assert (ours.head.weight is ours.tok_emb.weight) == tie
    idx = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)
    assert got.shape == (2, 32, 97)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_load_hf_gpt2_reads_the_original_pytorch_bin_layout(tmp_path):
    """The hub's gpt2 pytorch_model.bin: GPT2Model keys (no 'transformer.' prefix, no lm_head) and
    causal-mask buffers; the head is tied."""
    hf = _hf_tiny()
    hf.config.save_pretrained(tmp_path)
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    state["h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = load_hf_gpt2(tmp_path).eval()
    idx = torch.arange(20).view(1, 20)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-5, rtol=1e-5)


def test_gpt2_init_standard_deviations():
    torch.manual_seed(0)
    model = GPT2(vocab_size=256, width=256, depth=8, head_dim=32, max_seq_len=64)
    std = {name: p.std().item() for name, p in model.named_parameters()}
    assert std["blocks.0.attn.q.weight"] == pytest.approx(0.02, rel=0.03)
    assert std["tok_emb.weight"] == pytest.approx(0.02, rel=0.03)
    residual = 0.02 / math.sqrt(2 * 8)
    assert std["blocks.3.attn.o.weight"] == pytest.approx(residual, rel=0.03)
    assert std["blocks.3.mlp.down.weight"] == pytest.approx(residual, rel=0.03)
    assert torch.count_nonzero(model.blocks[0].attn.q.bias) == 0
    assert torch.equal(model.blocks[0].norm1.weight, torch.ones(256))


def test_multipliers_act_where_documented():
    torch.manual_seed(0)
    base = GPT2(vocab_size=50, width=32, depth=2, head_dim=8, max_seq_len=16).eval()
    idx = torch.randint(0, 50, (2, 16))
    state = base.state_dict()

    def variant(**mults):
        model = GPT2(vocab_size=50, width=32, depth=2, head_dim=8, max_seq_len=16, **mults).eval()
        model.load_state_dict(state)
        with torch.no_grad():
            return model(idx)

    reference = variant()
    torch.testing.assert_close(variant(readout_mult=0.25), 0.25 * reference)
    torch.testing.assert_close(variant(attn_scale=1 / math.sqrt(8)), reference)  # the SP default
    assert not torch.allclose(variant(attn_scale=1 / 8), reference)
    assert not torch.allclose(variant(embed_mult=3.0), reference)
    # branch_mult = 0 removes every block: logits depend on the embeddings and final norm only
    no_blocks = GPT2(vocab_size=50, width=32, depth=5, head_dim=8, max_seq_len=16, branch_mult=0.0).eval()
    with torch.no_grad():
        h = no_blocks.tok_emb(idx) + no_blocks.pos_emb(torch.arange(16))
        torch.testing.assert_close(no_blocks(idx), no_blocks.head(no_blocks.norm_f(h)))


def test_layernorm_switch_and_head_tying():
    without = GPT2(vocab_size=50, width=32, depth=2, head_dim=8, max_seq_len=16, layernorm=False, tie_head=False)
    names = [n for n, _ in without.named_parameters()]
    assert not any("norm" in n for n in names)
    assert "head.weight" in names
    tied = GPT2(vocab_size=50, width=32, depth=2, head_dim=8, max_seq_len=16)
    assert "head.weight" not in [n for n, _ in tied.named_parameters()]


def test_causal_attention_ignores_the_future():
    torch.manual_seed(0)
    model = GPT2(vocab_size=50, width=32, depth=2, head_dim=8, max_seq_len=16).eval()
    a = torch.randint(0, 50, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 50
    with torch.no_grad():
        torch.testing.assert_close(model(a)[0, :10], model(b)[0, :10])
        assert not torch.allclose(model(a)[0, 10:], model(b)[0, 10:])


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100, head_dim=32), "width=100 is not divisible by head_dim=32"),
    (dict(depth=0), "depth=0 must be a positive integer"),
    (dict(width=-8), "width=-8 must be a positive integer"),
    (dict(dropout=1.5), "dropout=1.5 must be in [0, 1)"),
])
def test_bad_sizes_name_the_argument(kwargs, message):
    with pytest.raises(ValueError) as err:
        GPT2(vocab_size=50, **kwargs)
    assert message in str(err.value)
