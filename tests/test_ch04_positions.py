"""Tests of chapter 04: embeddings, word2vec, and sinusoidal / learned / RoPE / ALiBi positions,
against independent references (torch built-ins, direct formulas, transformers' LLaMA and BLOOM code)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from torch import nn

from llmcourse.transformer import embeddings as E
from llmcourse.transformer import positions as P
from llmcourse.transformer.attention_plots import plot_alibi, plot_embeddings_2d, plot_positional_heatmap
from llmcourse.transformer.attention_widgets import POSITION_KINDS, positional_encoding_view

# --------------------------------------------------------------------------- embedding = one-hot x matrix


@settings(max_examples=25, deadline=None)
@given(vocab=st.integers(1, 40), dim=st.integers(1, 12), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_one_hot_embed_is_a_row_lookup(vocab, dim, shape, seed):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, dim, generator=g, dtype=torch.float64)
    ids = torch.randint(0, vocab, shape, generator=g)
    got = E.one_hot_embed(ids, weight)
    assert got.shape == (*shape, dim)
    torch.testing.assert_close(got, weight[ids], rtol=0, atol=0)
    torch.testing.assert_close(got, F.embedding(ids, weight), rtol=0, atol=0)


def test_one_hot_embed_rejects_bad_ids():
    w = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"\[0, 4\].*5 rows"):
        E.one_hot_embed(torch.tensor([0, 5]), w)
    with pytest.raises(ValueError, match="from -1"):
        E.one_hot_embed(torch.tensor([-1]), w)
    with pytest.raises(TypeError, match="integer"):
        E.one_hot_embed(torch.tensor([0.0]), w)
    with pytest.raises(ValueError, match="vocab_size, dim"):
        E.one_hot_embed(torch.tensor([0]), torch.randn(5))


def test_sgd_step_changes_only_rows_of_seen_tokens():
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8)
    ids = torch.tensor([[3, 7, 7, 11], [0, 3, 19, 7]])
    before = emb.weight.detach().clone()
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    (emb(ids) ** 2).sum().backward()
    # the one-hot formulation has the same gradient: zero on every row of an unseen token
    w = before.clone().requires_grad_(True)
    (E.one_hot_embed(ids, w) ** 2).sum().backward()
    torch.testing.assert_close(w.grad, emb.weight.grad)
    assert E.changed_rows(torch.zeros_like(w.grad), w.grad).tolist() == [0, 3, 7, 11, 19]
    opt.step()
    assert E.changed_rows(before, emb.weight.detach()).tolist() == ids.unique().tolist()


def test_adamw_weight_decay_changes_every_row():
    """Fact check: "only the rows of seen tokens change" holds for plain SGD, not for AdamW's weight decay."""
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8)
    before = emb.weight.detach().clone()
    opt = torch.optim.AdamW(emb.parameters(), lr=0.1, weight_decay=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    assert len(E.changed_rows(before, emb.weight.detach())) == 20


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), dim=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_cosine_similarity_matches_torch(n, dim, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, dim, generator=g, dtype=torch.float64), torch.randn(n, dim, generator=g, dtype=torch.float64)
    torch.testing.assert_close(E.cosine_similarity(a, b), F.cosine_similarity(a, b, dim=-1))
    torch.testing.assert_close(E.cosine_similarity(a, a), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(E.cosine_similarity(a, -3 * a), -torch.ones(n, dtype=torch.float64))


def test_nearest_neighbours_by_index_and_word():
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    words = ["a", "b", "c", "d"]
    assert [w for w, _ in E.nearest_neighbours(vectors, "a", 3, words)] == ["b", "c", "d"]
    assert [i for i, _ in E.nearest_neighbours(vectors, 3, 1)] == [2]
    with pytest.raises(KeyError, match="'z'"):
        E.nearest_neighbours(vectors, "z", 2, words)


# --------------------------------------------------------------------------- tiny corpus and skip-gram


def test_tiny_corpus_is_deterministic_and_covers_the_topics():
    corpus = E.tiny_corpus()
    assert corpus == E.tiny_corpus() and len(corpus) == 600
    words = {w for s in E.tokenize(corpus) for w in s}
    for w in ("king", "queen", "man", "woman", "cat", "dog", "paris", "france", "three", "red"):
        assert w in words
    assert E.tiny_corpus(seed=1) != corpus


def test_skipgram_pairs_stay_inside_sentences():
    pairs = E.skipgram_pairs([[0, 1, 2], [3, 4]], window=1).tolist()
    assert sorted(map(tuple, pairs)) == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)]


@pytest.mark.parametrize("seed", [0, 1])
def test_skipgram_learns_meaningful_neighbours(seed):
    vectors, losses = E.train_skipgram(E.tokenize(E.tiny_corpus()), dim=16, window=2, epochs=8, seed=seed)
    assert losses[-1] < 0.7 * losses[0] and all(b <= a + 1e-6 for a, b in zip(losses, losses[1:]))
    royals, pets = set(E.ROYALS), set(E.PETS)
    king = [w for w, _ in vectors.neighbours("king", 3)]
    assert "queen" in king and set(king) <= royals
    assert vectors.neighbours("cat", 1)[0][0] in pets
    assert vectors.neighbours("paris", 1)[0][0] in E.CAPITALS
    again, _ = E.train_skipgram(E.tokenize(E.tiny_corpus()), dim=16, window=2, epochs=8, seed=seed)
    torch.testing.assert_close(again.vectors, vectors.vectors, rtol=0, atol=0)  # seeded: repeatable


def test_project_2d_matches_pca_by_eigendecomposition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3, 1, 0.5, 0.2, 0.1])
    points = E.project_2d(x)
    centered = (x - x.mean(0)).numpy()
    _, vecs = np.linalg.eigh(centered.T @ centered)
    reference = centered @ vecs[:, ::-1][:, :2]  # the two directions of largest variance
    np.testing.assert_allclose(np.abs(points.numpy()), np.abs(reference), atol=1e-9)
    assert points[:, 0].var() > points[:, 1].var()
    torch.testing.assert_close(E.project_2d(x), points)


# --------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize("n, d, base", [(50, 128, 10000.0), (7, 6, 100.0), (1, 2, 10000.0)])
def test_sinusoidal_matches_the_formula_written_as_a_loop(n, d, base):
    pe = P.sinusoidal_encoding(n, d, base)
    expected = torch.zeros(n, d)
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / base ** (2 * i / d)
            expected[pos, 2 * i] = math.sin(angle)
            expected[pos, 2 * i + 1] = math.cos(angle)
    torch.testing.assert_close(pe, expected, atol=1e-6, rtol=0)


def test_sinusoidal_wavelengths_and_errors():
    w = P.sinusoidal_frequencies(128)
    wavelengths = 2 * math.pi / w
    assert wavelengths[0] == pytest.approx(2 * math.pi) and wavelengths[-1] < 2 * math.pi * 10000
    assert torch.all(wavelengths[1:] > wavelengths[:-1])
    with pytest.raises(ValueError, match="even"):
        P.sinusoidal_encoding(10, 7)


def test_sinusoidal_table_has_no_trainable_parameters():
    """Fact check: the sinusoidal encoding is a fixed function of the position; nothing in it is learned."""
    pe = P.sinusoidal_encoding(16, 8)
    assert not pe.requires_grad
    torch.testing.assert_close(pe, P.sinusoidal_encoding(16, 8), rtol=0, atol=0)


def test_shift_by_k_is_one_fixed_rotation():
    d = 32
    pe = P.sinusoidal_encoding(300, d).double()
    for k in (-40, -1, 0, 1, 3, 17, 100):
        m = P.relative_shift_matrix(k, d).double()
        positions = torch.arange(max(0, -k), min(300, 300 - k))
        torch.testing.assert_close(pe[positions] @ m, pe[positions + k], atol=2e-5, rtol=0)
        torch.testing.assert_close(m @ m.T, torch.eye(d, dtype=torch.float64), atol=1e-6, rtol=0)  # a rotation
    torch.testing.assert_close(P.relative_shift_matrix(3, d) @ P.relative_shift_matrix(4, d),
                               P.relative_shift_matrix(7, d), atol=1e-6, rtol=0)


@settings(max_examples=30, deadline=None)
@given(pos=st.integers(0, 500), k=st.integers(-200, 200), half=st.integers(1, 16))
def test_shift_matrix_for_any_position(pos, k, half):
    d = 2 * half
    if pos + k < 0:
        k = -pos
    pe = P.sinusoidal_encoding(pos + k + 1 + max(0, -k), d).double()
    torch.testing.assert_close(pe[pos] @ P.relative_shift_matrix(k, d).double(), pe[pos + k], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- learned positions


def test_learned_positions_add_rows_and_refuse_longer_sequences():
    torch.manual_seed(0)
    lp = P.LearnedPositions(max_len=8, d_model=4)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(lp(x), x + lp.table.weight[:5])
    torch.testing.assert_close(lp(x, offset=3), x + lp.table.weight[3:8])
    assert sum(p.numel() for p in lp.parameters() if p.requires_grad) == 8 * 4
    with pytest.raises(ValueError, match=r"positions 0\.\.8 .*max_len=8"):
        lp(torch.randn(1, 9, 4))
    with pytest.raises(ValueError, match="max_len=8"):
        lp(x, offset=4)


# --------------------------------------------------------------------------- RoPE


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                       num_hidden_layers=1, vocab_size=100, max_position_embeddings=64)


def test_rope_matches_transformers_llama():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = llama_config()
    rotary = LlamaRotaryEmbedding(config)
    head_dim = config.hidden_size // config.num_attention_heads
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 12, head_dim, generator=g)
    k = torch.randn(2, 2, 12, head_dim, generator=g)
    cos, sin = P.rope_frequencies(head_dim, config.max_position_embeddings)
    for position_ids in (torch.arange(12)[None].expand(2, -1),                      # from 0
                         torch.arange(30, 42)[None].expand(2, -1),                  # after a cache
                         torch.stack([torch.arange(12), torch.arange(5, 17)])):     # per sequence
        hf_cos, hf_sin = rotary(q, position_ids)
        torch.testing.assert_close(cos[position_ids], hf_cos, atol=1e-6, rtol=0)
        torch.testing.assert_close(sin[position_ids], hf_sin, atol=1e-6, rtol=0)
        hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
        positions = position_ids[0] if bool((position_ids == position_ids[0]).all()) else position_ids
        torch.testing.assert_close(P.apply_rope(q, cos, sin, positions), hf_q, atol=1e-6, rtol=0)
        torch.testing.assert_close(P.apply_rope(k, cos, sin, positions), hf_k, atol=1e-6, rtol=0)
    torch.testing.assert_close(P.apply_rope(q, cos, sin, 30), P.apply_rope(q, cos, sin, torch.arange(30, 42)))


def test_interleaved_rope_matches_complex_multiplication():
    """The paper's view: pair (x_2i, x_2i+1) is the complex number x_2i + i x_2i+1, multiplied by e^(i pos theta_i)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 10, 16, generator=g, dtype=torch.float64)
    cos, sin = P.rope_frequencies(16, 10, dtype=torch.float64)
    theta = 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    angles = torch.arange(10.0, dtype=torch.float64)[:, None] * theta
    rotation = torch.polar(torch.ones_like(angles), angles)
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (8, 2)).contiguous()) * rotation).flatten(-2)
    torch.testing.assert_close(P.apply_rope(x, cos, sin, interleaved=True), expected, atol=1e-6, rtol=0)


def test_the_two_rope_conventions_differ_only_by_a_permutation():
    x = torch.randn(2, 2, 9, 12, generator=torch.Generator().manual_seed(2))
    cos, sin = P.rope_frequencies(12, 9)
    evens_then_odds = torch.cat([torch.arange(0, 12, 2), torch.arange(1, 12, 2)])
    torch.testing.assert_close(P.apply_rope(x, cos, sin, interleaved=True)[..., evens_then_odds],
                               P.apply_rope(x[..., evens_then_odds], cos, sin))
    assert not torch.allclose(P.apply_rope(x, cos, sin, interleaved=True), P.apply_rope(x, cos, sin))


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_keeps_lengths_and_scores_depend_only_on_the_offset(interleaved):
    g = torch.Generator().manual_seed(3)
    cos, sin = P.rope_frequencies(16, 200, dtype=torch.float64)
    x = torch.randn(1, 1, 50, 16, generator=g, dtype=torch.float64)
    rotated = P.apply_rope(x, cos, sin, interleaved=interleaved)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    q, k = torch.randn(1, 1, 1, 16, generator=g, dtype=torch.float64), torch.randn(1, 1, 1, 16, generator=g,
                                                                                    dtype=torch.float64)

    def score(m, n):
        return float((P.apply_rope(q, cos, sin, m, interleaved) * P.apply_rope(k, cos, sin, n, interleaved)).sum())

    for m, n in ((5, 2), (40, 0), (3, 3), (0, 7)):
        for shift in (1, 20, 100):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-9)
    assert score(5, 2) != pytest.approx(score(2, 5), abs=1e-6)  # the offset's sign matters


def test_rope_errors_are_clear():
    cos, sin = P.rope_frequencies(8, 16)
    with pytest.raises(ValueError, match=r"position 19 is past the RoPE table.*0\.\.15"):
        P.apply_rope(torch.randn(1, 1, 20, 8), cos, sin)
    with pytest.raises(ValueError, match="past the RoPE table"):
        P.apply_rope(torch.randn(1, 1, 4, 8), cos, sin, positions=14)
    with pytest.raises(ValueError, match="even"):
        P.rope_frequencies(7, 16)
    with pytest.raises(ValueError, match="head_dim=6"):
        P.apply_rope(torch.randn(1, 1, 4, 6), cos, sin)
    with pytest.raises(ValueError, match=r"\(batch, heads, seq, head_dim\)"):
        P.apply_rope(torch.randn(4, 8), cos, sin)


# --------------------------------------------------------------------------- ALiBi


def test_alibi_slopes_power_of_two_and_not():
    torch.testing.assert_close(P.alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)]))
    twelve = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(4)]
    torch.testing.assert_close(P.alibi_slopes(12), torch.tensor(twelve))
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    for n in (1, 2, 3, 5, 6, 8, 12, 16, 20, 32, 48, 71):
        torch.testing.assert_close(P.alibi_slopes(n), _get_alibi_slopes(n, torch.device("cpu")).float())
    with pytest.raises(ValueError):
        P.alibi_slopes(0)


def test_alibi_bias_values_and_bloom_equivalence():
    bias = P.alibi_bias(4, 6)
    slopes = P.alibi_slopes(4)
    assert bias.shape == (4, 6, 6)
    for h in range(4):
        for i in range(6):
            for j in range(6):
                expected = -slopes[h] * (i - j) if j <= i else -math.inf
                assert float(bias[h, i, j]) == pytest.approx(float(expected))
    torch.testing.assert_close(P.alibi_bias(4, 6, causal=False), -slopes[:, None, None] * (
        torch.arange(6)[:, None] - torch.arange(6)[None]).abs().float())
    # BLOOM adds slope * key_position instead: it differs by a constant per row, which softmax ignores
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    scores = torch.randn(4, 6, 6, generator=torch.Generator().manual_seed(0))
    bloom = build_alibi_tensor(torch.ones(1, 6), 4, torch.float32)  # (heads, 1, k_len)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(torch.softmax(scores + bias, -1),
                               torch.softmax((scores + bloom).masked_fill(~causal, -math.inf), -1))


# --------------------------------------------------------------------------- plots and widgets


@pytest.mark.parametrize("kind", POSITION_KINDS)
def test_positional_encoding_view_returns_a_figure(kind):
    assert isinstance(positional_encoding_view(kind, n_positions=20, d_model=16, position=5), Figure)


def test_position_and_embedding_plots_return_figures():
    assert isinstance(plot_positional_heatmap(P.sinusoidal_encoding(50, 128)), Figure)
    assert isinstance(plot_alibi(P.alibi_bias(8, 10)), Figure)
    points = E.project_2d(torch.randn(5, 4))
    assert isinstance(plot_embeddings_2d(points, list("abcde"), groups=["x", "x", "y", "y", "y"]), Figure)
    with pytest.raises(ValueError, match="kind"):
        positional_encoding_view("nope")


def test_sinusoidal_values_span_minus_one_to_one_and_rows_keep_their_length():
    """Fact check: the sinusoidal values lie in [-1, 1] (not [0, 1]); every row has length sqrt(d_model / 2)."""
    pe = P.sinusoidal_encoding(2000, 64)
    assert pe.min() < -0.999 and pe.max() > 0.999 and pe.abs().max() <= 1.0 + 1e-6
    assert (pe < 0).float().mean() > 0.2
    torch.testing.assert_close(pe.norm(dim=1), torch.full((2000,), math.sqrt(32.0)), atol=1e-4, rtol=0)


def test_numpy_table_needs_its_import_and_then_equals_the_package():
    """Fact check: a numpy table builder without ``import numpy as np`` fails with NameError; with it, it matches."""
    code = ("def table(n, d):\n"
            "    pos = np.arange(n)[:, None]\n"
            "    col = np.arange(d)[None, :]\n"
            "    angles = pos * 10000.0 ** (-2 * (col // 2) / d)\n"
            "    return np.where(col % 2 == 0, np.sin(angles), np.cos(angles))\n")
    bare: dict = {}
    exec(code, bare)
    with pytest.raises(NameError, match="'np'"):
        bare["table"](4, 8)
    fixed: dict = {}
    exec("import numpy as np\n" + code, fixed)
    np.testing.assert_allclose(fixed["table"](50, 16), P.sinusoidal_encoding(50, 16).numpy(), atol=1e-6)


def test_gpt_adds_positions_once_and_residuals_in_every_block():
    """Fact check: the position table is added once to the input, not as a residual connection inside the blocks."""
    from llmcourse.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=16, n_layers=2, n_heads=2)).eval()
    ids = torch.randint(0, 50, (2, 9))
    calls = []
    handle = gpt.wpe.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        logits = gpt(ids)
        handle.remove()
        x = gpt.wte(ids) + gpt.wpe.table.weight[:9]
        for block in gpt.blocks:
            x = x + block.attn(block.ln_1(x), is_causal=True)
            x = x + block.mlp(block.ln_2(x))
        torch.testing.assert_close(gpt.lm_head(gpt.ln_f(x)), logits, atol=1e-5, rtol=1e-5)
        # the position step adds the same rows whatever the tokens; a block's residual branch depends on them
        a, b = gpt.wte(ids), gpt.wte((ids + 1) % 50)
        torch.testing.assert_close(gpt.wpe(a) - a, gpt.wpe(b) - b)
        block = gpt.blocks[0]
        assert not torch.allclose(block.attn(block.ln_1(gpt.wpe(a)), is_causal=True),
                                  block.attn(block.ln_1(gpt.wpe(b)), is_causal=True))
    assert len(calls) == 1
