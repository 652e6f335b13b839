"""The conceptual diagrams of chapters 02-04: they name what they show, with the real shapes, and read cleanly."""
import math

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from diagram_checks import all_text, overlapping_texts, texts_outside
from llmcourse.basics.backprop_diagrams import draw_layer_backprop, draw_sensitivity_boxes
from llmcourse.tokenizers import RegexTokenizer
from llmcourse.tokenizers.diagrams import draw_encoding_pipeline, draw_merge_step
from llmcourse.tokenizers.widgets import show_token
from llmcourse.transformer.attention_plots import plot_embeddings_2d
from llmcourse.transformer.embedding_diagrams import draw_embedding_lookup, draw_rope_rotation


def drawn(fig: Figure) -> Figure:
    """The diagram functions return a Figure (closed in pyplot; the checks draw it with Agg)."""
    assert isinstance(fig, Figure)
    return fig


def assert_clean(fig: Figure) -> None:
    assert overlapping_texts(fig) == []
    assert texts_outside(fig) == []


# ------------------------------------------------------------------------------------------------------- chapter 02

@pytest.mark.parametrize("n_preceding, n_current", [(2, 3), (4, 2), (1, 6)])
def test_sensitivity_boxes_name_every_unit_and_both_directions(n_preceding, n_current):
    fig = drawn(draw_sensitivity_boxes(n_preceding, n_current))
    text = all_text(fig)
    for i in range(1, n_preceding + 1):
        assert f"$p_{i}$" in text and f"$A(p_{i})$" in text and rf"$\delta p_{i}$" in text
    for j in range(1, n_current + 1):
        assert f"$c_{j}$" in text and rf"$\delta c_{j} = \partial e/\partial c_{j}$" in text
    assert f"$p_{n_preceding + 1}$" not in text and f"$c_{n_current + 1}$" not in text
    for words in ("preceding box", "current box", "forward (values)", "backward (sensitivities)",
                  r"$c_j = \sum_i\, A(p_i)\, w_{ij} + b_j$", r"$\delta p_i = A'(p_i) \sum_j\, w_{ij}\, \delta c_j$"):
        assert words in text
    assert_clean(fig)


@pytest.mark.parametrize("batch, n_in, n_out", [(4, 3, 2), (200, 8, 2), (1, 1, 1), (16, 64, 10)])
def test_layer_backprop_labels_every_block_with_its_shape(batch, n_in, n_out):
    fig = drawn(draw_layer_backprop(batch, n_in, n_out))
    lines = all_text(fig).splitlines()
    for shape in [(batch, n_in), (n_in, n_out), (batch, n_out), (n_in, batch), (n_out, n_in)]:
        assert f"({shape[0]}, {shape[1]})" in lines, shape
    assert f"({n_out},)" in lines
    for name in ["$X$", "$W$", "$Z$", "$X^T$", "$W^T$", r"$\Delta$", r"$\partial L/\partial W$",
                 r"$\partial L/\partial b$", r"$\Delta_\mathrm{prev}$", r"$A'(Z_\mathrm{prev})$",
                 "sum over the batch of"]:
        assert name in lines, name
    assert_clean(fig)


def test_backprop_diagrams_refuse_bad_sizes():
    with pytest.raises(ValueError, match="n_preceding must be between 1 and 6"):
        draw_sensitivity_boxes(0, 3)
    with pytest.raises(ValueError, match="n_current must be a whole number"):
        draw_sensitivity_boxes(2, 2.5)
    with pytest.raises(ValueError, match="batch must be between 1"):
        draw_layer_backprop(batch=0)
    with pytest.raises(ValueError, match="n_out must be a whole number"):
        draw_layer_backprop(n_out="2")


# ------------------------------------------------------------------------------------------------------- chapter 03

TINY = "the cat sat on the mat; the cats sat on the mats; that cat ate the rat"


@pytest.fixture(scope="module")
def small_tokenizer():
    return RegexTokenizer().train(TINY * 3 + " Hello world, hello 2024!", vocab_size=256 + 20)


@pytest.mark.parametrize("text", ["Hello world, 2024!", "the cats sat", "x"])
def test_encoding_pipeline_shows_every_stage(small_tokenizer, text):
    fig = drawn(draw_encoding_pipeline(small_tokenizer, text))
    shown = all_text(fig)
    lines = shown.splitlines()
    pieces = small_tokenizer.pretokenize(text)
    ids = small_tokenizer.encode_ordinary(text)
    for piece in pieces:
        assert show_token(piece.encode()) in lines, piece
    for b in text.encode():
        assert str(b) in lines
    for i in ids:
        assert str(i) in lines and show_token(small_tokenizer.vocab[i]) in lines
    assert any(f"{len(pieces)} pre-tokens -> {len(text.encode())} bytes -> {len(ids)} tokens" in s for s in lines)
    for row in ["text", "pre-tokens\n(regex split)", "UTF-8 bytes", "ids"]:
        assert row in shown
    assert_clean(fig)


def test_encoding_pipeline_merges_inside_pretokens_only(small_tokenizer):
    lines = all_text(drawn(draw_encoding_pipeline(small_tokenizer, "the cat"))).splitlines()
    assert "␣cat" in lines and "the" in lines          # two pre-tokens, each one token after the merges
    assert lines.count("the␣cat") == 1                 # only the text itself: no token crosses the pre-tokens


def test_merge_step_highlights_the_most_frequent_pair():
    fig = drawn(draw_merge_step(TINY))
    text = all_text(fig)
    assert "most frequent pair (97, 116) = 'a' + 't', 10 times  ->  new token 256 'at'" in text
    assert "length 70 -> 60 tokens" in text
    assert text.splitlines().count("at") == 10 and text.splitlines().count("before") == 3   # wrapped in 3 lines
    assert_clean(fig)


def test_merge_step_from_ids_with_a_given_pair_and_vocabulary():
    vocab = {**{i: bytes([i]) for i in range(256)}, 256: b"at", 257: b"th"}
    ids = [257, 101, 32, 99, 256, 32, 115, 256]              # "the cat sat" after two merges
    fig = drawn(draw_merge_step(ids, pair=(32, 115), vocab=vocab))
    text = all_text(fig)
    assert "pair (32, 115) = '␣' + 's', 1 times  ->  new token 258 '␣s'" in text
    assert "most frequent" not in text and "length 8 -> 7 tokens" in text
    assert {"th", "at", "␣s"} <= set(text.splitlines())
    assert_clean(fig)


def test_tokenizer_diagrams_refuse_bad_arguments(small_tokenizer):
    with pytest.raises(ValueError, match="RegexTokenizer"):
        draw_encoding_pipeline("not a tokenizer", "hi")
    with pytest.raises(ValueError, match="at most 32 fit"):
        draw_encoding_pipeline(small_tokenizer, "a much longer sentence than one row can hold")
    with pytest.raises(ValueError, match="non-empty string"):
        draw_encoding_pipeline(small_tokenizer, "")
    with pytest.raises(ValueError, match="does not occur"):
        draw_merge_step("abc", pair=(99, 97))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        draw_merge_step("a")
    with pytest.raises(ValueError, match="fresh id"):
        draw_merge_step([1, 2, 300], pair=(1, 2), new_id=300)


# ------------------------------------------------------------------------------------------------------- chapter 04

LESSON_TABLE = [[0.1, 0.2, 0.3], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5], [-1.0, 0.0, 1.0]]


@pytest.mark.parametrize("ids, vocab_size, d_model, table", [([3, 0, 3, 4], 5, 3, LESSON_TABLE),
                                                             ([1, 3, 3, 7], 10, 4, None),
                                                             ([0], 2, 1, None)])
def test_embedding_lookup_shows_the_rows_and_the_product_with_shapes(ids, vocab_size, d_model, table):
    fig = drawn(draw_embedding_lookup(ids, vocab_size, d_model, table=table))
    shown = all_text(fig)
    lines = shown.splitlines()
    n = len(ids)
    assert f"(vocab_size, d_model) = ({vocab_size}, {d_model})" in lines
    for shape in [f"({n},)", f"({n}, {d_model})", f"({n}, {vocab_size})", f"({vocab_size}, {d_model})"]:
        assert shape in lines, shape
    for name in ["ids", "table W", "W[ids]", "one_hot(ids)", "W", "embeddings", f"token {vocab_size - 1}"]:
        assert name in lines, name
    assert f"token {vocab_size}" not in lines
    assert "one_hot(ids) @ W" in shown
    assert lines.count("1") >= n                               # one 1 per one-hot row
    if table is not None:                                      # the selected rows are printed again in the output
        for i in ids:
            for v in table[i]:
                assert lines.count(f"{v:.2g}") >= 3
    assert_clean(fig)


@pytest.mark.parametrize("q, k, theta, positions, pairs", [
    ((1.0, 2.0), (0.5, -1.0), 0.4, (0, 1, 2, 3), ((5, 2), (10, 7), (3, 5))),
    ((2.0, 0.5), (1.0, 1.0), 0.9, (0, 1, 2, 3, 4, 5), ((7, 0), (57, 50))),
])
def test_rope_rotation_marks_the_angles_and_the_distance(q, k, theta, positions, pairs):
    fig = drawn(draw_rope_rotation(q, k, theta, positions, pairs))
    shown = all_text(fig)
    assert f"θ = {theta:g} rad" in shown and f"|q| = {math.hypot(*q):.4f}" in shown
    for m in positions[1:]:
        assert f"{'' if m == 1 else m}θ = {m * theta:.2g}" in shown
    def rotated(v, angle):
        return v[0] * math.cos(angle) - v[1] * math.sin(angle), v[0] * math.sin(angle) + v[1] * math.cos(angle)

    for m, n in pairs:
        qm, kn = rotated(q, m * theta), rotated(k, n * theta)
        score = qm[0] * kn[0] + qm[1] * kn[1]
        assert f"m = {m}, n = {n}:  m − n = {m - n}   q·k = {score:.4f}" in shown
        assert f"q at {m}" in shown and f"k at {n}" in shown
    assert_clean(fig)


def test_rope_scores_agree_for_equal_distances():
    lines = all_text(drawn(draw_rope_rotation(pairs=((5, 2), (10, 7), (103, 100))))).splitlines()
    scores = {line.split("q·k = ")[1] for line in lines if "q·k = " in line}
    assert scores == {"-2.4076"}                               # the lesson's number, three times


def test_embedding_diagrams_refuse_bad_arguments():
    with pytest.raises(ValueError, match=r"token ids must be in 0..4"):
        draw_embedding_lookup([5], vocab_size=5)
    with pytest.raises(ValueError, match="table has shape"):
        draw_embedding_lookup([0], 5, 3, table=[[1.0, 2.0]])
    with pytest.raises(ValueError, match="vocab_size must be between"):
        draw_embedding_lookup([0], vocab_size=100)
    with pytest.raises(ValueError, match="theta must be an angle"):
        draw_rope_rotation(theta=0.0)
    with pytest.raises(ValueError, match="q must be two finite numbers"):
        draw_rope_rotation(q=(0.0, 0.0))
    with pytest.raises(ValueError, match="different positions"):
        draw_rope_rotation(positions=(1, 1))


# the lesson's word2vec map (section 2): the 28 words projected to 2-D, as lesson 04 computes them
LESSON_POINTS = [(-0.33, 0.848), (-0.211, 0.527), (0.225, 0.673), (-0.233, 0.676), (0.728, 0.701), (0.981, 0.96),
                 (0.98, 0.779), (0.871, 0.691), (-0.452, 1.649), (-0.389, 1.5), (-0.188, 1.236), (-0.205, 1.298),
                 (2.074, -0.923), (2.149, -0.746), (2.13, -0.95), (2.007, -0.708), (2.074, -1.093), (1.768, -1.259),
                 (-1.592, -1.416), (-1.933, -0.994), (-1.74, -1.045), (-1.614, -1.437), (-1.713, -0.917),
                 (-1.619, -1.329), (-1.043, 0.191), (-0.858, 0.584), (-0.98, 0.274), (-0.887, 0.232)]
LESSON_WORDS = ["king", "queen", "prince", "princess", "man", "woman", "boy", "girl", "cat", "dog", "kitten", "puppy",
                "paris", "berlin", "rome", "madrid", "tokyo", "london", "one", "two", "three", "four", "five", "six",
                "red", "green", "blue", "yellow"]
LESSON_GROUPS = [g for g, n in [("royals", 4), ("people", 4), ("pets", 4), ("capitals", 6), ("numbers", 6),
                                ("colours", 4)] for _ in range(n)]


@pytest.mark.parametrize("case", ["lesson", "lesson, no groups", "crowded"])
def test_word_map_labels_do_not_overlap(case):
    points, words, groups = torch.tensor(LESSON_POINTS), LESSON_WORDS, LESSON_GROUPS
    if case == "lesson, no groups":
        groups = None
    elif case == "crowded":        # twelve words within a hundredth of each other, the rest far away
        points = torch.tensor([(0.01 * (i % 4), 0.01 * (i // 4)) for i in range(12)] + [(1.0, 1.0), (-1.0, 0.5)])
        words, groups = [f"word{i}" for i in range(14)], None
    fig = drawn(plot_embeddings_2d(points, words, groups))
    lines = all_text(fig).splitlines()
    assert all(w in lines for w in words)
    assert_clean(fig)


def test_word_map_overlap_check_can_fail():
    """The unplaced labels of the old plot (every label at the same small offset) did overlap on the lesson's data."""
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    for (x, y), word in zip(LESSON_POINTS, LESSON_WORDS):
        ax.annotate(word, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=8)
    ax.set_xlim(-2.2, 2.4)
    ax.set_ylim(-1.6, 1.9)
    assert ("kitten", "puppy") in overlapping_texts(fig)
    plt.close(fig)
