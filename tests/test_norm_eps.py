"""Every block and model config lets the learner choose the norm's epsilon (chapters 06-07).

Each test sets an epsilon far from the default (so that a norm still using the default changes the output)
and compares against an independent reference: torch's F.layer_norm / F.rms_norm, or a transformers model
built from a config with the same epsilon."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from llmcourse.models.gpt import GPT
from llmcourse.models.llama import Llama
from llmcourse.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from llmcourse.transformer.block import StackLM, TransformerBlock
from llmcourse.transformer.norms import LayerNorm, RMSNorm, make_norm

BIG_EPS = 0.25  # large enough that forgetting it moves every output visibly


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3


def _norms(model):
    return [m for m in model.modules() if isinstance(m, (LayerNorm, RMSNorm))]


def test_make_norm_defaults_and_custom_eps():
    assert make_norm("layernorm", 8).eps == 1e-5 and make_norm("rmsnorm", 8).eps == 1e-6
    x = _x(3, 8)
    ln, rms = make_norm("layernorm", 8, eps=BIG_EPS), make_norm("rmsnorm", 8, eps=BIG_EPS)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (8,), ln.weight, ln.bias, eps=BIG_EPS))
    torch.testing.assert_close(rms(x), F.rms_norm(x, (8,), rms.weight, eps=BIG_EPS))
    assert not torch.allclose(rms(x), F.rms_norm(x, (8,), rms.weight, eps=1e-6), atol=1e-3)


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_make_norm_rejects_an_eps_that_is_not_positive(eps):
    with pytest.raises(ValueError, match="eps must be a small positive number"):
        make_norm("layernorm", 8, eps=eps)


@pytest.mark.parametrize("norm,prenorm", [("layernorm", True), ("rmsnorm", True), ("layernorm", False)])
def test_transformer_block_uses_its_eps(norm, prenorm):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, norm=norm, prenorm=prenorm, eps=BIG_EPS).eval()
    assert [m.eps for m in _norms(block)] == [BIG_EPS, BIG_EPS]
    x = _x(2, 5, 16)

    def normed(h, m):
        if norm == "layernorm":
            return F.layer_norm(h, (16,), m.weight, m.bias, eps=BIG_EPS)
        return F.rms_norm(h, (16,), m.weight, eps=BIG_EPS)

    with torch.no_grad():
        if prenorm:
            h = x + block.attn(normed(x, block.norm1), is_causal=True)
            expected = h + block.ffn(normed(h, block.norm2))
        else:
            h = normed(x + block.attn(x, is_causal=True), block.norm1)
            expected = normed(h + block.ffn(h), block.norm2)
        torch.testing.assert_close(block(x), expected)
        default = TransformerBlock(16, 4, norm=norm, prenorm=prenorm).eval()
        default.load_state_dict(block.state_dict())
        assert (default(x) - block(x)).abs().max() > 1e-3


def test_stack_lm_passes_eps_to_every_norm():
    model = StackLM(8, n_layers=3, d_model=16, n_heads=2, eps=BIG_EPS)
    assert len(_norms(model)) == 7 and {m.eps for m in _norms(model)} == {BIG_EPS}


@pytest.mark.parametrize("norm_first", [False, True])
def test_seq2seq_config_eps_reaches_every_layernorm(norm_first):
    model = Seq2SeqTransformer(Seq2SeqConfig(n_layers=2, norm_first=norm_first, eps=BIG_EPS))
    expected = 2 * 2 + 2 * 3 + (2 if norm_first else 0)  # encoder layers, decoder layers, final norms
    assert len(_norms(model)) == expected and {m.eps for m in _norms(model)} == {BIG_EPS}
    assert {m.eps for m in _norms(Seq2SeqTransformer(Seq2SeqConfig()))} == {1e-5}


def test_gpt_with_a_custom_eps_equals_transformers_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=16,
                                  layer_norm_epsilon=BIG_EPS, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = GPT.from_hf(hf)
    assert ours.config.eps == BIG_EPS and {m.eps for m in _norms(ours)} == {BIG_EPS}
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)


def test_llama_with_a_custom_eps_equals_transformers_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                                   rms_norm_eps=BIG_EPS, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = Llama.from_hf(hf)
    assert ours.config.eps == BIG_EPS and {m.eps for m in _norms(ours)} == {BIG_EPS}
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)
