"""Tests of chapter 05: attention step by step and as matrices, masks, MHA/GQA/MQA, cross-attention,
KV cache and its size, against PyTorch (F.scaled_dot_product_attention, nn.MultiheadAttention, nn.RNN)
and transformers' LLaMA attention built from a config."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from torch import nn

from llmcourse.transformer import attention as A
from llmcourse.transformer.attention_plots import plot_attention_weights, plot_kv_cache
from llmcourse.transformer.positions import alibi_bias, rope_frequencies
from llmcourse.transformer.sequence_timing import plot_rnn_vs_attention, rnn_loop, time_rnn_vs_attention
from llmcourse.transformer.attention_widgets import attention_view

DT = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


# --------------------------------------------------------------------------- one query, then all of them


def test_attend_one_walks_through_four_tokens():
    x = randn(4, 6, seed=1)  # four tokens a1..a4
    w_q, w_k, w_v = randn(6, 8, seed=2), randn(6, 8, seed=3), randn(6, 5, seed=4)
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    rows = [A.attend_one(q[i], k, v) for i in range(4)]
    for weights, _ in rows:
        assert weights.shape == (4,) and float(weights.sum()) == pytest.approx(1.0) and bool((weights > 0).all())
    out = torch.stack([o for _, o in rows])
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q[None], k[None], v[None])[0])
    torch.testing.assert_close(out, A.scaled_dot_product_attention(q, k, v))
    weights, _ = A.attend_one(q[0], k, v, scale=False)
    torch.testing.assert_close(weights, torch.softmax(k @ q[0], 0))
    with pytest.raises(ValueError, match="d_k=8 but keys have d_k=3"):
        A.attend_one(q[0], k[:, :3], v)


def test_attention_scores_and_head_dim_mismatch():
    q, k = randn(2, 3, 5, 8), randn(2, 3, 7, 8, seed=1)
    torch.testing.assert_close(A.attention_scores(q, k), q @ k.transpose(-1, -2) / math.sqrt(8))
    torch.testing.assert_close(A.attention_scores(q, k, scale=False), torch.einsum("bhqd,bhkd->bhqk", q, k))
    with pytest.raises(ValueError, match="query head_dim 8 does not match key head_dim 4"):
        A.attention_scores(q, k[..., :4])


def test_scaling_keeps_score_variance_near_one():
    spread = A.dot_product_spread([4, 64, 512], n_samples=2000)
    for d_k, raw, scaled in zip(spread["d_k"], spread["var_raw"], spread["var_scaled"]):
        assert raw == pytest.approx(d_k, rel=0.1) and scaled == pytest.approx(1.0, rel=0.1)
    assert spread["max_weight_raw"][-1] > 0.85 > 0.5 > spread["max_weight_scaled"][-1]  # unscaled softmax saturates


def test_causal_mask():
    torch.testing.assert_close(A.causal_mask(5), torch.ones(5, 5, dtype=torch.bool).tril())
    # two new queries after three cached keys are positions 3 and 4
    assert A.causal_mask(2, 5).tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 8),
                   st.integers(1, 8))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), mask_kind=st.sampled_from(["none", "bool", "float", "bias+bool"]),
       mask_rank=st.sampled_from([2, 3, 4]))
def test_sdpa_matches_torch(shape, seed, mask_kind, mask_rank):
    b, h, lq, lk, d, dv = shape
    q, k, v = randn(b, h, lq, d, seed=seed), randn(b, h, lk, d, seed=seed + 1), randn(b, h, lk, dv, seed=seed + 2)
    mask_shape = {2: (lq, lk), 3: (h, lq, lk), 4: (b, 1, lq, lk)}[mask_rank]
    g = torch.Generator().manual_seed(seed)
    bool_mask = torch.rand(mask_shape, generator=g) < 0.7  # some rows may hide every key
    bias = randn(*mask_shape, seed=seed + 3)
    if mask_kind == "none":
        ours, ref = A.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
    elif mask_kind == "bool":
        ours = A.scaled_dot_product_attention(q, k, v, mask=bool_mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask)
    elif mask_kind == "float":
        ours = A.scaled_dot_product_attention(q, k, v, mask=bias)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:  # torch takes one mask: fold the bias and the bool mask into one float mask
        ours = A.scaled_dot_product_attention(q, k, v, mask=bool_mask, bias=bias)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~bool_mask, -math.inf))
    torch.testing.assert_close(ours, ref)


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_sdpa_causal_matches_torch(shape, seed):
    b, h, lq, lk, d, dv = shape
    q, k, v = randn(b, h, lq, d, seed=seed), randn(b, h, lk, d, seed=seed + 1), randn(b, h, lk, dv, seed=seed + 2)
    same = (q, k[..., :1, :].expand(b, h, lq, d) + randn(b, h, lq, d, seed=seed + 3), randn(b, h, lq, dv, seed=seed))
    torch.testing.assert_close(A.scaled_dot_product_attention(*same, is_causal=True),
                               F.scaled_dot_product_attention(*same, is_causal=True))  # same length: as torch
    # any lengths: our is_causal is torch with our (bottom-right aligned) causal_mask
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=A.causal_mask(lq, lk)))


def test_sdpa_causal_alignment_differs_from_torch_when_lengths_differ():
    q, k, v = randn(1, 1, 2, 4), randn(1, 1, 5, 4, seed=1), randn(1, 1, 5, 4, seed=2)
    ours = A.scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)[1]
    assert (ours[0, 0] > 0).sum(-1).tolist() == [4, 5]  # the last two positions: KV-cache style
    top_left = torch.ones(2, 5, dtype=torch.bool).tril()  # what torch's is_causal uses
    assert top_left.sum(-1).tolist() == [1, 2]


def test_sdpa_weights_bias_and_fully_masked_rows():
    q, k, v = randn(2, 8, 5, 4), randn(2, 8, 5, 4, seed=1), randn(2, 8, 5, 3, seed=2)
    bias = alibi_bias(8, 5).to(DT)  # ALiBi with the causal mask folded in
    out, weights = A.scaled_dot_product_attention(q, k, v, bias=bias, return_weights=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 8, 5, dtype=DT))
    assert bool((weights.triu(1) == 0).all())
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
    nothing = torch.zeros(5, 5, dtype=torch.bool)
    out, weights = A.scaled_dot_product_attention(q, k, v, mask=nothing, return_weights=True)
    assert not out.isnan().any() and bool((out == 0).all()) and bool((weights == 0).all())


def test_sdpa_errors_are_clear():
    q, k, v = randn(2, 4, 5, 8), randn(2, 4, 6, 8), randn(2, 4, 6, 8)
    with pytest.raises(ValueError, match=r"mask of shape \(5, 5\) does not broadcast .*\(2, 4, 5, 6\)"):
        A.scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bias of shape \(3, 5, 6\) .*\(2, 4, 5, 6\)"):
        A.scaled_dot_product_attention(q, k, v, bias=torch.zeros(3, 5, 6))
    with pytest.raises(ValueError, match=r"mask of shape \(1, 2, 4, 5, 6\)"):
        A.scaled_dot_product_attention(q, k, v, mask=torch.ones(1, 2, 4, 5, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="query has 4 heads but key/value have 2.*repeat_kv"):
        A.scaled_dot_product_attention(q, k[:, :2], v[:, :2])
    with pytest.raises(ValueError, match="head_dim 8 does not match key head_dim 7"):
        A.scaled_dot_product_attention(q, k[..., :7], v)
    with pytest.raises(ValueError, match="6 keys but 5 values"):
        A.scaled_dot_product_attention(q, k, v[..., :5, :])


# --------------------------------------------------------------------------- heads


def test_heads_are_slices_of_one_big_projection():
    x, w_q = randn(2, 5, 12), randn(12, 12, seed=1)  # d_model 12, 3 heads of 4
    heads = A.split_heads(x @ w_q, 3)
    assert heads.shape == (2, 3, 5, 4)
    for h in range(3):
        torch.testing.assert_close(heads[:, h], x @ w_q[:, 4 * h:4 * (h + 1)])
    torch.testing.assert_close(A.merge_heads(heads), x @ w_q)
    with pytest.raises(ValueError, match="12 is not divisible by n_heads=5"):
        A.split_heads(x, 5)


def test_repeat_kv_matches_transformers():
    from transformers.models.llama.modeling_llama import repeat_kv

    kv = randn(2, 3, 4, 5)
    for n_rep in (1, 2, 4):
        torch.testing.assert_close(A.repeat_kv(kv, n_rep), repeat_kv(kv, n_rep))


def test_module_errors_are_clear():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_heads=4"):
        A.MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="n_heads=8 is not divisible by n_kv_heads=3"):
        A.MultiHeadAttention(32, 8, 3)
    m = A.MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"d_model=16\), got \(2, 3, 8\)"):
        m(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 2\) does not broadcast .*\(1, 4, 3, 3\)"):
        m(torch.randn(1, 3, 16), mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="neither rope nor is_causal"):
        m(torch.randn(1, 3, 16), context=torch.randn(1, 4, 16), is_causal=True)


def reference_attention(module: A.MultiHeadAttention, x, causal=False):
    """Per-head loop with torch's SDPA: query head h uses key/value head h // (n_heads / n_kv_heads)."""
    hd, rep = module.head_dim, module.n_heads // module.n_kv_heads
    q, k, v = module.q_proj(x), module.k_proj(x), module.v_proj(x)
    outs = []
    for h in range(module.n_heads):
        j = h // rep
        outs.append(F.scaled_dot_product_attention(q[..., h * hd:(h + 1) * hd], k[..., j * hd:(j + 1) * hd],
                                                   v[..., j * hd:(j + 1) * hd], is_causal=causal))
    return module.o_proj(torch.cat(outs, dim=-1))  # concat the heads, then W_O


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("causal", [False, True])
def test_mha_gqa_mqa_match_a_per_head_loop(n_kv_heads, causal):
    torch.manual_seed(0)
    m = A.MultiHeadAttention(32, 4, n_kv_heads, bias=True).to(DT)
    assert m.k_proj.weight.shape == (n_kv_heads * 8, 32)
    x = randn(2, 7, 32)
    torch.testing.assert_close(m(x, is_causal=causal), reference_attention(m, x, causal))


@pytest.mark.parametrize("bias", [True, False])
def test_matches_nn_multihead_attention(bias):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(24, 4, bias=bias, batch_first=True).to(DT).eval()
    ours = A.load_from_torch_mha(ref).eval()
    x = randn(3, 6, 24)
    expected, expected_w = ref(x, x, x, need_weights=True, average_attn_weights=False)
    got, got_w = ours(x, return_weights=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_w, expected_w)
    # causal: torch's bool attn_mask means "blocked" (True = hide), ours means "may attend"
    blocked = ~A.causal_mask(6)
    expected, _ = ref(x, x, x, attn_mask=blocked, need_weights=False)
    torch.testing.assert_close(ours(x, is_causal=True), expected)
    torch.testing.assert_close(ours(x, mask=A.causal_mask(6)), expected)
    # padding: key_padding_mask True = ignore this key
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2, [False] * 5 + [True]])
    expected, _ = ref(x, x, x, key_padding_mask=padding, need_weights=False)
    torch.testing.assert_close(ours(x, mask=~padding[:, None, None, :]), expected)


def test_cross_attention_matches_nn_multihead_attention():
    torch.manual_seed(1)
    ref = nn.MultiheadAttention(16, 2, batch_first=True).to(DT).eval()
    ours = A.load_from_torch_mha(ref)
    cross = A.CrossAttention(16, 2, bias=True).to(DT)
    cross.load_state_dict(ours.state_dict())
    decoder, encoder = randn(2, 3, 16), randn(2, 9, 16, seed=1)  # queries from one sequence, keys/values another
    expected, expected_w = ref(decoder, encoder, encoder, average_attn_weights=False)
    out, weights = cross(decoder, encoder, return_weights=True)
    assert weights.shape == (2, 2, 3, 9)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_w)
    torch.testing.assert_close(ours(decoder, context=encoder), expected)
    with pytest.raises(ValueError, match="needs a context"):
        cross(decoder, None)


def test_load_from_torch_mha_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="kdim"):
        A.load_from_torch_mha(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))


def test_matches_transformers_llama_attention_with_rope_and_gqa():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                         num_hidden_layers=1, vocab_size=100, max_position_embeddings=64)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    llama = LlamaAttention(config, layer_idx=0).eval()
    ours = A.MultiHeadAttention(64, 4, n_kv_heads=2)
    ours.load_state_dict(llama.state_dict())  # same names: q_proj, k_proj, v_proj, o_proj
    x = torch.randn(2, 10, 64)
    cos, sin = LlamaRotaryEmbedding(config)(x, torch.arange(10)[None])
    additive_causal = torch.full((10, 10), -math.inf).triu(1)[None, None]
    expected, expected_w = llama(x, position_embeddings=(cos, sin), attention_mask=additive_causal)
    got, got_w = ours(x, rope=rope_frequencies(16, 64), is_causal=True, return_weights=True)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_w, expected_w, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- MHA -> GQA


def test_mha_to_gqa_identity_and_group_means():
    torch.manual_seed(0)
    mha = A.MultiHeadAttention(32, 8, bias=True).to(DT)
    x = randn(2, 6, 32)
    same = A.mha_to_gqa(mha, 8)
    torch.testing.assert_close(same(x, is_causal=True), mha(x, is_causal=True), rtol=0, atol=0)
    gqa = A.mha_to_gqa(mha, 2)
    assert (gqa.n_heads, gqa.n_kv_heads) == (8, 2) and gqa.k_proj.weight.shape == (8, 32)
    k_heads = mha.k_proj.weight.view(8, 4, 32)
    torch.testing.assert_close(gqa.k_proj.weight.view(2, 4, 32)[1], k_heads[4:8].mean(0))
    torch.testing.assert_close(gqa.v_proj.bias.view(2, 4)[0], mha.v_proj.bias.view(8, 4)[:4].mean(0))
    torch.testing.assert_close(gqa.q_proj.weight, mha.q_proj.weight, rtol=0, atol=0)
    with torch.no_grad():
        change = (gqa(x) - mha(x)).norm() / mha(x).norm()
    assert 0.01 < float(change) < 2.0  # measurable, not catastrophic
    with pytest.raises(ValueError, match="8 key/value heads cannot be split into 3"):
        A.mha_to_gqa(mha, 3)


def test_mha_to_gqa_is_exact_when_heads_in_a_group_already_agree():
    torch.manual_seed(0)
    mha = A.MultiHeadAttention(16, 4).to(DT)
    with torch.no_grad():  # make heads 0,1 share keys/values, and heads 2,3
        for proj in (mha.k_proj, mha.v_proj):
            w = proj.weight.view(4, 4, 16)
            w[1], w[3] = w[0], w[2]
    x = randn(1, 5, 16)
    torch.testing.assert_close(A.mha_to_gqa(mha, 2)(x), mha(x))


# --------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("n_kv_heads", [4, 1])
@pytest.mark.parametrize("use_rope", [False, True])
def test_incremental_decoding_with_a_kv_cache_equals_full_causal_attention(n_kv_heads, use_rope):
    torch.manual_seed(0)
    m = A.MultiHeadAttention(32, 4, n_kv_heads).to(DT).eval()
    x = randn(2, 9, 32)
    rope = rope_frequencies(8, 16, dtype=DT) if use_rope else None
    full = m(x, is_causal=True, rope=rope)
    out, cache = m(x[:, :4], is_causal=True, rope=rope, use_cache=True)  # prefill four tokens
    outs = [out]
    for t in range(4, 9):  # then one token at a time
        out, cache = m(x[:, t:t + 1], is_causal=True, rope=rope, past_kv=cache)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), full)
    assert cache[0].shape == (2, n_kv_heads, 9, 8) and cache[1].shape == (2, n_kv_heads, 9, 8)


def test_kv_cache_bytes_per_token_for_real_models():
    assert A.kv_cache_bytes_per_token(32, 32, 128) == 2 * 32 * 32 * 128 * 2 == 524_288
    shapes = A.MODEL_SHAPES
    assert shapes["LLaMA-2 7B"].kv_bytes_per_token() == 524_288
    assert shapes["LLaMA-2 70B"].kv_bytes_per_token() == 2 * 80 * 8 * 128 * 2 == 327_680
    assert shapes["Mistral 7B"].kv_bytes_per_token() == 131_072
    assert shapes["LLaMA-2 7B"].kind == "MHA" and shapes["LLaMA-2 70B"].kind == "GQA"
    assert shapes["Falcon 7B"].kind == "MQA" and shapes["Falcon 7B"].head_dim == 64
    for shape in shapes.values():
        assert shape.d_model % shape.n_heads == 0 and shape.n_heads % shape.n_kv_heads == 0 and shape.source
    table = A.kv_cache_table(context_len=4096)
    row = next(r for r in table if r["model"] == "LLaMA-2 7B")
    assert row["gib_at_context"] == pytest.approx(2.0)
    assert isinstance(plot_kv_cache(table), Figure)
    assert isinstance(plot_kv_cache(table, "bytes_per_token"), Figure)


def test_model_shapes_agree_with_transformers_default_configs():
    """transformers' default configs are LLaMA-2 7B, Mistral 7B, Falcon 7B and GPT-2 small."""
    from transformers import FalconConfig, GPT2Config, LlamaConfig, MistralConfig

    for name, config in (("LLaMA-2 7B", LlamaConfig()), ("Mistral 7B", MistralConfig())):
        s = A.MODEL_SHAPES[name]
        assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_model) == (
            config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.hidden_size)
    falcon, gpt2 = FalconConfig(), GPT2Config()
    s = A.MODEL_SHAPES["Falcon 7B"]
    assert (s.n_layers, s.n_heads, s.d_model, falcon.multi_query) == (32, 71, 4544, True)
    s = A.MODEL_SHAPES["GPT-2 small"]
    assert (s.n_layers, s.n_heads, s.d_model) == (gpt2.n_layer, gpt2.n_head, gpt2.n_embd)


# --------------------------------------------------------------------------- RNN vs attention, plots, widgets


def test_rnn_loop_matches_nn_rnn():
    torch.manual_seed(0)
    rnn = nn.RNN(6, 6, batch_first=True).to(DT)
    x = randn(10, 6)
    expected, _ = rnn(x[None])
    got = rnn_loop(x, rnn.weight_ih_l0.detach().T, rnn.weight_hh_l0.detach().T,
                   (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach())
    torch.testing.assert_close(got, expected[0])


def test_time_rnn_vs_attention_shape_and_plot():
    result = time_rnn_vs_attention([8, 32], d_model=16, repeats=1)
    assert result["lengths"] == [8, 32]
    for key in ("rnn_loop", "torch_rnn", "attention"):
        assert len(result[key]) == 2 and all(t > 0 for t in result[key])
    assert isinstance(plot_rnn_vs_attention(result), Figure)


def test_attention_plots_and_view_return_figures():
    tokens = ["the", "cat", "sat", "down"]
    m = A.MultiHeadAttention(16, 2)
    _, weights = m(torch.randn(1, 4, 16), is_causal=True, return_weights=True)
    assert isinstance(plot_attention_weights(weights[0, 0], tokens), Figure)
    assert isinstance(plot_attention_weights(weights[0], tokens), Figure)
    assert isinstance(attention_view(tokens, weights, head=1, token=2), Figure)
    with pytest.raises(ValueError, match="3 tokens but the weights cover 4 keys"):
        attention_view(tokens[:3], weights)
    with pytest.raises(ValueError, match="head must be in 0..1"):
        attention_view(tokens, weights, head=2)


def test_explorers_build_widgets():
    import ipywidgets as widgets

    from llmcourse.transformer.attention_widgets import attention_explorer, positional_encoding_explorer

    assert isinstance(positional_encoding_explorer("rope", n_positions=16, d_model=8), widgets.interactive)
    weights = torch.softmax(torch.randn(2, 3, 3), -1)
    assert isinstance(attention_explorer(["a", "b", "c"], weights), widgets.interactive)
