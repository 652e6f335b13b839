"""Chapter 07: GPT and the LLaMA-style decoder equal transformers' GPT-2 and LLaMA (random weights, copied
across), generate the same greedy tokens as transformers' generate, with and without the KV cache; fused
(ChatGLM2-style) projections equal unfused ones; the encoder-decoder Transformer; clear errors."""
from __future__ import annotations

import pytest
import torch
import transformers

from llmcourse.models.generation import generate
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.llama import Llama, LlamaStyleConfig, fuse


def _ids(batch, seq, vocab=100, seed=0):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def hf_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=100, n_positions=32,
                                  bos_token_id=None, eos_token_id=None, initializer_range=0.2)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def hf_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   bos_token_id=None, eos_token_id=None, pad_token_id=None, initializer_range=0.2)
    return transformers.LlamaForCausalLM(cfg).eval()


# --------------------------------------------------------------------------- GPT

def test_gpt_equals_hf_gpt2(hf_gpt2):
    ours = GPT.from_hf(hf_gpt2)
    ids = _ids(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_gpt2(ids).logits, atol=1e-5, rtol=0)
    assert ours.num_parameters() == sum(p.numel() for p in hf_gpt2.parameters())


def test_gpt_greedy_generation_equals_hf(hf_gpt2):
    ours = GPT.from_hf(hf_gpt2)
    for seed in range(3):
        prompt = _ids(1, 4, seed=seed)
        expected = hf_gpt2.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
        assert generate(ours, prompt, 20, top_k=1).tolist() == expected.tolist()


def test_gpt_cache_equals_no_cache_token_for_token():
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=50, context_length=40, d_model=32, n_layers=2, n_heads=4)).eval()
    prompt = _ids(2, 5, vocab=50)
    for kwargs in [{"top_k": 1}, {"temperature": 1.5}, {"top_p": 0.9, "top_k": 20}]:
        a = generate(model, prompt, 30, use_cache=True, generator=torch.Generator().manual_seed(3), **kwargs)
        b = generate(model, prompt, 30, use_cache=False, generator=torch.Generator().manual_seed(3), **kwargs)
        assert torch.equal(a, b), kwargs
    with torch.no_grad():  # and the cached logits equal the full forward pass's
        full = model(prompt)
        logits, past = model(prompt[:, :3], use_cache=True)
        step, _ = model(prompt[:, 3:], past_kv=past)
        torch.testing.assert_close(torch.cat([logits, step], 1), full, atol=1e-5, rtol=0)


def test_gpt_gpt2_small_parameter_count():
    with torch.device("meta"):
        model = GPT(GPTConfig())
    assert model.num_parameters() == 124_439_808  # GPT-2 small, tied embeddings


def test_gpt_errors_are_clear(hf_gpt2):
    model = GPT.from_hf(hf_gpt2)
    with pytest.raises(ValueError, match="context length"):
        model(_ids(1, 33))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, 100]]))
    with pytest.raises(ValueError, match="context length"):
        generate(model, _ids(1, 30), 5)
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=64, n_heads=5)
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig(n_layers=0)


# --------------------------------------------------------------------------- LLaMA

def test_llama_equals_hf_llama(hf_llama):
    ours = Llama.from_hf(hf_llama)
    ids = _ids(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_llama(ids).logits, atol=1e-5, rtol=0)
    assert ours.num_parameters() == sum(p.numel() for p in hf_llama.parameters())


def test_llama_greedy_generation_equals_hf(hf_llama):
    ours = Llama.from_hf(hf_llama)
    for seed in range(3):
        prompt = _ids(1, 4, seed=seed)
        expected = hf_llama.generate(prompt, max_new_tokens=20, do_sample=False)
        assert generate(ours, prompt, 20, top_k=1).tolist() == expected.tolist()
        assert generate(ours, prompt, 20, top_k=1, use_cache=False).tolist() == expected.tolist()


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("qkv, gate_up", [(True, False), (False, True), (True, True)])
def test_fused_equals_unfused(n_kv_heads, qkv, gate_up):
    torch.manual_seed(2)
    model = Llama(LlamaStyleConfig(vocab_size=60, context_length=24, d_model=32, n_heads=4, n_kv_heads=n_kv_heads,
                                   d_hidden=48)).eval()
    fused = fuse(model, qkv=qkv, gate_up=gate_up).eval()
    assert fused.num_parameters() == model.num_parameters()
    ids = _ids(2, 24, vocab=60)
    with torch.no_grad():
        torch.testing.assert_close(fused(ids), model(ids), atol=1e-5, rtol=0)
    prompt = ids[:, :4]
    assert torch.equal(generate(fused, prompt, 15, top_k=1), generate(model, prompt, 15, top_k=1))
    assert torch.equal(generate(fused, prompt, 15, top_k=1), generate(fused, prompt, 15, top_k=1, use_cache=False))
    if qkv:
        w = fused.layers[0].self_attn.qkv_proj.weight
        a = model.layers[0].self_attn
        assert torch.equal(w, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))


def test_mqa_has_a_smaller_cache():
    torch.manual_seed(0)
    cfg = dict(vocab_size=60, context_length=24, d_model=32, n_heads=4, d_hidden=48)
    mha, mqa = Llama(LlamaStyleConfig(**cfg)), Llama(LlamaStyleConfig(**cfg, n_kv_heads=1))
    ids = _ids(1, 6, vocab=60)
    with torch.no_grad():
        k_mha = mha(ids, use_cache=True)[1][0][0]
        k_mqa = mqa(ids, use_cache=True)[1][0][0]
    assert k_mha.shape == (1, 4, 6, 8) and k_mqa.shape == (1, 1, 6, 8)


def test_llama_errors_are_clear(hf_llama):
    model = Llama.from_hf(hf_llama)
    with pytest.raises(ValueError, match="context length"):
        model(_ids(1, 33))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[100]]))
    with pytest.raises(ValueError, match="n_kv_heads"):
        LlamaStyleConfig(d_model=64, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="odd"):
        LlamaStyleConfig(d_model=12, n_heads=4)


# --------------------------------------------------------------------------- encoder-decoder

from llmcourse.transformer.attention import load_from_torch_mha  # noqa: E402
from llmcourse.models import seq2seq as S2S  # noqa: E402


def test_number_to_words():
    assert S2S.number_to_words(0) == ["zero"]
    assert S2S.number_to_words(15) == ["fifteen"]
    assert S2S.number_to_words(40) == ["forty"]
    assert S2S.number_to_words(100) == ["one", "hundred"]
    assert " ".join(S2S.number_to_words(342)) == "three hundred and forty two"
    assert " ".join(S2S.number_to_words(910)) == "nine hundred and ten"
    assert S2S.source_digits(7) == ["0", "0", "7"]
    assert S2S.decode_target(S2S.encode_target(517)) == S2S.number_to_words(517)
    data = S2S.make_number_data()
    assert not set(data.train) & set(data.test) and len(data.train) + len(data.test) == 1000
    with pytest.raises(ValueError, match="0..999"):
        S2S.number_to_words(1000)


def _copy_mha(ours, theirs):
    ours.load_state_dict(load_from_torch_mha(theirs).state_dict())


def _copy_common(ours, theirs, norms):
    with torch.no_grad():
        ours.mlp.up.weight.copy_(theirs.linear1.weight)
        ours.mlp.up.bias.copy_(theirs.linear1.bias)
        ours.mlp.down.weight.copy_(theirs.linear2.weight)
        ours.mlp.down.bias.copy_(theirs.linear2.bias)
        for name in norms:
            getattr(ours, name).weight.copy_(getattr(theirs, name).weight)
            getattr(ours, name).bias.copy_(getattr(theirs, name).bias)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_and_decoder_layers_equal_torch(norm_first):
    torch.manual_seed(0)
    d, h, hidden = 32, 4, 64
    t_enc = torch.nn.TransformerEncoderLayer(d, h, hidden, dropout=0.0, batch_first=True, norm_first=norm_first)
    t_dec = torch.nn.TransformerDecoderLayer(d, h, hidden, dropout=0.0, batch_first=True, norm_first=norm_first)
    enc, dec = S2S.EncoderLayer(d, h, hidden, norm_first=norm_first), S2S.DecoderLayer(d, h, hidden,
                                                                                        norm_first=norm_first)
    _copy_mha(enc.self_attn, t_enc.self_attn)
    _copy_common(enc, t_enc, ["norm1", "norm2"])
    _copy_mha(dec.self_attn, t_dec.self_attn)
    _copy_mha(dec.cross_attn, t_dec.multihead_attn)
    _copy_common(dec, t_dec, ["norm1", "norm2", "norm3"])
    t_enc.eval(), t_dec.eval()
    src, tgt = torch.randn(2, 5, d), torch.randn(2, 4, d)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])  # torch: True = padding
    ours_mask = (~pad)[:, None, None, :]
    with torch.no_grad():
        memory = enc(src, ours_mask)
        torch.testing.assert_close(memory, t_enc(src, src_key_padding_mask=pad), atol=1e-5, rtol=1e-5)
        causal = torch.nn.Transformer.generate_square_subsequent_mask(4)
        expected = t_dec(tgt, memory, tgt_mask=causal, memory_key_padding_mask=pad)
        torch.testing.assert_close(dec(tgt, memory, ours_mask), expected, atol=1e-5, rtol=1e-5)


def test_seq2seq_padding_and_causality():
    torch.manual_seed(0)
    model = S2S.Seq2SeqTransformer(S2S.Seq2SeqConfig(d_model=32, n_heads=4, d_hidden=64)).eval()
    src = torch.tensor([[1, 4, 2, 0, 0]])
    tgt = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        logits, weights = model.decode(tgt, model.encode(src), src, return_weights=True)
        assert logits.shape == (1, 4, len(S2S.TARGET_VOCAB))
        assert torch.all(weights[-1][..., 3:] == 0)  # nobody attends to padding
        changed = model(src, torch.tensor([[1, 5, 6, 9]]))  # a later target token cannot change earlier outputs
        torch.testing.assert_close(changed[:, :3], logits[:, :3])
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 40, dtype=torch.long), tgt)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.tensor([[11]]), tgt)
    with pytest.raises(ValueError, match="divisible"):
        S2S.Seq2SeqConfig(d_model=30, n_heads=4)


def test_seq2seq_learns_the_task_a_little():
    torch.manual_seed(0)
    model = S2S.Seq2SeqTransformer(S2S.Seq2SeqConfig(d_model=32, n_heads=4, d_hidden=64, n_layers=1))
    losses = S2S.train_seq2seq(model, S2S.make_number_data(), steps=40, batch_size=32, warmup=10)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    weights, digits, words = S2S.cross_attention(model, 342)
    assert weights.shape == (4, len(words), 3) and digits == ["3", "4", "2"]
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, len(words)))


def test_decoder_only_comparison_counts():
    counts = S2S.parameter_counts(512, 6)
    assert counts["decoder-only (N layers)"] == 6 * 12 * 512 * 512
    assert counts["encoder-decoder (N + N layers)"] == 6 * (12 + 16) * 512 * 512
