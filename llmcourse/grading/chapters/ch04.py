"""Graded checks of chapter 04, "Embeddings and positions".

Six exercises, each checked on seeded inputs against an independent reference:
PyTorch's ``F.embedding`` and ``F.cosine_similarity``, the formulas written out
here, and the ``llmcourse.transformer.positions`` functions (themselves tested against
``transformers``' LLaMA and BLOOM code). Then two more:

* ``alibi_look_back``, an experiment: how far back an ALiBi head looks when only
  its bias decides. It is compared with the same mean distance summed in closed
  form (a truncated geometric series), and with what the slopes imply: about
  1/slope tokens back, further for smaller slopes, never beyond uniform weights;
* ``skipgram_grads``, a derivation: the gradients of word2vec's skip-gram loss
  with respect to both embedding tables, compared with ``torch.autograd``.

Each exercise is checked on its own: no check needs any other exercise's function.

Where an exercise asks you to write something PyTorch already has, the check
runs your function with that built-in switched off, so calling it fails the check.
For ``skipgram_grads`` that is autograd itself.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from llmcourse.transformer import positions as P
from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    call,
    expect,
    expect_close,
    expect_shape,
    expect_tensors,
    forbid,
    forbid_autograd,
    seeded_generator,
    seeded_randn,
)

chapter = Chapter("04", "Embeddings and positions")

Namespace = Mapping[str, Any]

# (owner, attribute, how a learner would write it)
_EMBEDDING = [(F, "embedding", "F.embedding"), (torch, "embedding", "torch.embedding"),
              (torch.nn.Embedding, "forward", "nn.Embedding"), (torch, "index_select", "torch.index_select"),
              (torch.Tensor, "index_select", "x.index_select")]
_COSINE = [(F, "cosine_similarity", "F.cosine_similarity"), (torch, "cosine_similarity", "torch.cosine_similarity"),
           (F, "normalize", "F.normalize")]


def _check_dtype(value: Any, dtype: torch.dtype, what: str) -> None:
    if isinstance(value, torch.Tensor) and value.dtype != dtype:
        raise CheckFailed(f"{what} returned {value.dtype}; it should keep the input's dtype {dtype}.")


# --------------------------------------------------------------------------- one_hot_embed

@chapter.check("one_hot_embed", points=1, hint="Build a (n, vocab_size) one-hot matrix with one 1 per row, at the "
               "token's id, and multiply it by the (vocab_size, dim) table. The number of columns is the "
               "vocabulary size, which the table tells you, not the largest id in the input.")
def one_hot_embed_matches_lookup(ns: Namespace) -> None:
    weight = seeded_randn(7, 3, seed=100)
    ids = torch.tensor([2, 0, 2, 5])  # the last row (id 6) is never used
    expected = F.embedding(ids, weight)
    with forbid("one_hot_embed", _EMBEDDING):
        got = call(ns, "one_hot_embed", ids, weight)
    expect_close(got, expected, "one_hot_embed([2, 0, 2, 5]) with a (7, 3) table")
    weight = seeded_randn(50, 16, seed=101)
    ids = torch.randint(0, 50, (20,), generator=seeded_generator(102))
    expected = F.embedding(ids, weight)
    with forbid("one_hot_embed", _EMBEDDING):
        got = call(ns, "one_hot_embed", ids, weight)
    expect_close(got, expected, "one_hot_embed of 20 ids with a (50, 16) table")


@chapter.check("one_hot_embed", points=1, hint="A batch of ids (batch, seq) must give (batch, seq, dim): one-hot "
               "over the last dimension and matrix-multiply, without flattening the batch away. Square tables "
               "(vocab_size == dim) catch a transposed table.")
def one_hot_embed_batches(ns: Namespace) -> None:
    weight = seeded_randn(6, 6, seed=103)  # square, so a transposed table still has the right shape
    ids = torch.tensor([[1, 4, 4], [0, 5, 2]])
    expected = F.embedding(ids, weight)
    with forbid("one_hot_embed", _EMBEDDING):
        got = expect_shape(call(ns, "one_hot_embed", ids, weight), (2, 3, 6), "one_hot_embed of a (2, 3) batch")
    expect_close(got, expected, "one_hot_embed of a (2, 3) batch with a (6, 6) table")


@chapter.check("one_hot_embed", points=1, hint="Make the one-hot matrix in the table's dtype (float64 here) so the "
               "product keeps full precision, and let gradients flow to the table.")
def one_hot_embed_dtype_and_gradient(ns: Namespace) -> None:
    weight = seeded_randn(9, 4, seed=104, dtype=torch.float64).requires_grad_()
    ids = torch.tensor([3, 8, 3])
    with forbid("one_hot_embed", _EMBEDDING):
        got = call(ns, "one_hot_embed", ids, weight)
    _check_dtype(got, torch.float64, "one_hot_embed with a float64 table")
    expect_close(got, F.embedding(ids, weight.detach()), "one_hot_embed with a float64 table", atol=1e-12, rtol=1e-12)
    expect(isinstance(got, torch.Tensor) and got.requires_grad,
           "the result is cut off from the table: gradients cannot reach it (avoid .detach(), .numpy() or "
           "torch.tensor(...) on the result).")
    got.sum().backward()
    expected_grad = torch.zeros(9, 4, dtype=torch.float64)
    expected_grad[3] = 2.0
    expected_grad[8] = 1.0
    expect_close(weight.grad, expected_grad, "the gradient of one_hot_embed(...).sum() with respect to the table")


# --------------------------------------------------------------------------- cosine_similarity

@chapter.check("cosine_similarity", points=1, hint="cos = (a · b) / (|a| |b|): divide the dot product by the "
               "product of both vectors' lengths (the square root of the sum of squares).")
def cosine_small_examples(ns: Namespace) -> None:
    a = torch.tensor([1.0, 2.0, 0.0])
    for b, value in [(torch.tensor([2.0, 4.0, 0.0]), 1.0), (torch.tensor([0.0, 0.0, 3.0]), 0.0),
                     (torch.tensor([-1.0, -2.0, 0.0]), -1.0), (torch.tensor([3.0, 1.0, 0.0]), 5 / math.sqrt(50))]:
        with forbid("cosine_similarity", _COSINE):
            got = call(ns, "cosine_similarity", a, b)
        expect_close(got, torch.tensor(value), f"cosine_similarity([1, 2, 0], {b.tolist()})")


@chapter.check("cosine_similarity", points=1, hint="Reduce over the last dimension only, so rows (batch, dim) give "
               "one cosine per row, and broadcast a and b like a * b does.")
def cosine_batches_and_broadcasting(ns: Namespace) -> None:
    a, b = seeded_randn(5, 8, seed=110), seeded_randn(5, 8, seed=111)
    expected = F.cosine_similarity(a, b, dim=-1)
    with forbid("cosine_similarity", _COSINE):
        got = call(ns, "cosine_similarity", a, b)
    expect_close(got, expected, "cosine_similarity of two (5, 8) batches, row by row")
    table, query = seeded_randn(10, 4, seed=112), seeded_randn(4, seed=113)
    expected = F.cosine_similarity(table, query[None], dim=-1)
    with forbid("cosine_similarity", _COSINE):
        got = call(ns, "cosine_similarity", table, query)
    expect_close(got, expected, "cosine_similarity of a (10, 4) table with one (4,) vector")


@chapter.check("cosine_similarity", points=1, hint="The cosine ignores length: scaling a or b by any positive "
               "number must not change it, and it always lies in [-1, 1].")
def cosine_ignores_length(ns: Namespace) -> None:
    a, b = seeded_randn(3, 6, seed=114, dtype=torch.float64), seeded_randn(3, 6, seed=115, dtype=torch.float64)
    expected = F.cosine_similarity(a, b, dim=-1)
    with forbid("cosine_similarity", _COSINE):
        got = call(ns, "cosine_similarity", a * 1000.0, b * 0.01)
    expect_close(got, expected, "cosine_similarity of long (x1000) and short (x0.01) vectors", atol=1e-9, rtol=1e-9)
    _check_dtype(got, torch.float64, "cosine_similarity of float64 vectors")


# --------------------------------------------------------------------------- sinusoidal_encoding

def _sinusoidal_reference(n: int, d: int) -> torch.Tensor:
    """The formula written out one entry at a time (independent of llmcourse's vectorised version)."""
    table = [[0.0] * d for _ in range(n)]
    for pos in range(n):
        for i in range(d // 2):
            w = 10000.0 ** (-2 * i / d)
            table[pos][2 * i] = math.sin(pos * w)
            table[pos][2 * i + 1] = math.cos(pos * w)
    return torch.tensor(table, dtype=torch.float64)


@chapter.check("sinusoidal_encoding", points=1, hint="Pair i (columns 2i and 2i+1) uses the frequency "
               "w_i = 10000 ** (-2i / d_model), with i counting pairs (0 .. d_model/2 - 1), not columns. Sines "
               "go in the even columns, cosines in the odd ones.")
def sinusoidal_small_table(ns: Namespace) -> None:
    got = call(ns, "sinusoidal_encoding", 3, 4)
    expect_close(got, _sinusoidal_reference(3, 4), "sinusoidal_encoding(3, 4)")
    got = call(ns, "sinusoidal_encoding", 6, 8)
    expect_close(got, _sinusoidal_reference(6, 8), "sinusoidal_encoding(6, 8)")


@chapter.check("sinusoidal_encoding", points=1, hint="Positions start at 0, so row 0 is [0, 1, 0, 1, ...]. "
               "Interleave sin and cos column by column rather than putting all sines first.")
def sinusoidal_first_row_and_layout(ns: Namespace) -> None:
    got = expect_shape(call(ns, "sinusoidal_encoding", 5, 6), (5, 6), "sinusoidal_encoding(5, 6)")
    expect_close(got[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]), "row 0 (position 0) of sinusoidal_encoding")
    expect_close(got, _sinusoidal_reference(5, 6), "sinusoidal_encoding(5, 6)")


@chapter.check("sinusoidal_encoding", points=1, hint="The full-size table (50 positions, d_model = 128) must match "
               "too: compute all angles at once as an outer product of positions and frequencies.")
def sinusoidal_full_size(ns: Namespace) -> None:
    got = call(ns, "sinusoidal_encoding", 50, 128)
    expect_close(got, P.sinusoidal_encoding(50, 128), "sinusoidal_encoding(50, 128)")


# --------------------------------------------------------------------------- rope_rotate

def _rope_reference(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    cos, sin = P.rope_frequencies(x.shape[-1], int(positions.max()) + 1, base, dtype=torch.float64)
    return P.apply_rope(x.double(), cos, sin, positions).to(x.dtype)


@chapter.check("rope_rotate", points=1, hint="Pair i is coordinates (i, i + head_dim/2) and turns by angle "
               "pos * base ** (-2i / head_dim). Use x * cos + rotate_half(x) * sin with rotate_half(x1, x2) = "
               "(-x2, x1) and each angle repeated for both halves.")
def rope_matches_llama_layout(ns: Namespace) -> None:
    x = seeded_randn(2, 3, 5, 8, seed=120)
    positions = torch.arange(5)
    expected = _rope_reference(x, positions, 10000.0)
    expect_close(call(ns, "rope_rotate", x, positions, 10000.0), expected,
                 "rope_rotate of a (2, 3, 5, 8) tensor at positions 0..4", atol=1e-5, rtol=1e-4)


@chapter.check("rope_rotate", points=1, hint="Use the positions you are given (they need not start at 0 or be "
               "consecutive) and the base you are given.")
def rope_positions_and_base(ns: Namespace) -> None:
    x = seeded_randn(1, 2, 4, 16, seed=121)
    positions = torch.tensor([7, 3, 100, 2048])
    for base in (10000.0, 500.0):
        expected = _rope_reference(x, positions, base)
        expect_close(call(ns, "rope_rotate", x, positions, base), expected,
                     f"rope_rotate at positions [7, 3, 100, 2048] with base {base:g}", atol=1e-4, rtol=1e-4)


@chapter.check("rope_rotate", points=1, hint="A rotation keeps every vector's length and makes q·k depend only on "
               "the distance between positions; keep the input's shape and dtype.")
def rope_properties(ns: Namespace) -> None:
    q, k = seeded_randn(1, 1, 1, 32, seed=122, dtype=torch.float64), seeded_randn(1, 1, 1, 32, seed=123, dtype=torch.float64)
    scores = []
    for m, n in [(9, 2), (57, 50), (1007, 1000)]:
        rq = call(ns, "rope_rotate", q, torch.tensor([m]), 10000.0)
        rk = call(ns, "rope_rotate", k, torch.tensor([n]), 10000.0)
        rq = expect_shape(rq, (1, 1, 1, 32), "rope_rotate of a (1, 1, 1, 32) query")
        _check_dtype(rq, torch.float64, "rope_rotate of a float64 query")
        expect(abs(float(rq.norm()) - float(q.norm())) < 1e-9,
               f"rope_rotate changed a vector's length from {float(q.norm()):.6f} to {float(rq.norm()):.6f}.")
        scores.append(float((rq * as_float64(rk)).sum()))
    expected = float((_rope_reference(q, torch.tensor([7]), 10000.0) * k).sum())
    for (m, n), s in zip([(9, 2), (57, 50), (1007, 1000)], scores):
        expect(abs(s - expected) < 1e-8, f"q at {m}, k at {n} scored {s:.6f}, but every pair 7 apart should score "
               f"{expected:.6f} (the score of q at 7 with k at 0).")


def as_float64(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"rope_rotate should return a torch.Tensor, got {type(value).__name__}.")
    return value.detach().double()


# --------------------------------------------------------------------------- alibi_slopes

def _slopes_reference(n: int) -> torch.Tensor:
    def power_of_two(m: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / m) for h in range(m)]

    p = 1 << (n.bit_length() - 1)  # the largest power of two <= n
    slopes = power_of_two(p) + power_of_two(2 * p)[0::2][: n - p]
    return torch.tensor(slopes, dtype=torch.float64)


@chapter.check("alibi_slopes", points=1, hint="For n heads (a power of two) the slopes are 2^(-8/n), 2^(-16/n), "
               "..., 2^(-8): the first is 2^(-8/n), not 1, and the last is always 2^(-8).")
def alibi_slopes_power_of_two(ns: Namespace) -> None:
    for n in (1, 2, 4, 8, 16):
        got = expect_shape(call(ns, "alibi_slopes", n), (n,), f"alibi_slopes({n})")
        expect_close(got, _slopes_reference(n), f"alibi_slopes({n})", atol=1e-7, rtol=1e-6)


@chapter.check("alibi_slopes", points=1, hint="When n is not a power of two, take the slopes of the largest power "
               "of two p below n, then add every other slope of 2p heads (the 1st, 3rd, ...) until there are n.")
def alibi_slopes_other_counts(ns: Namespace) -> None:
    for n in (3, 6, 12, 20):
        got = expect_shape(call(ns, "alibi_slopes", n), (n,), f"alibi_slopes({n})")
        expect_close(got, P.alibi_slopes(n), f"alibi_slopes({n})", atol=1e-7, rtol=1e-6)


# --------------------------------------------------------------------------- alibi_bias

@chapter.check("alibi_bias", points=1, hint="Entry [h, i, j] is -slope_h * (i - j) for keys j <= i: zero on the "
               "diagonal and more negative the further back the key is. Slopes for n heads: 2^(-8(h+1)/n).")
def alibi_bias_small(ns: Namespace) -> None:
    inf = math.inf
    s0, s1 = 2.0 ** -4, 2.0 ** -8
    expected = torch.tensor([[[0.0, -inf, -inf], [-s0, 0.0, -inf], [-2 * s0, -s0, 0.0]],
                             [[0.0, -inf, -inf], [-s1, 0.0, -inf], [-2 * s1, -s1, 0.0]]])
    got = expect_shape(call(ns, "alibi_bias", 2, 3), (2, 3, 3), "alibi_bias(2, 3)")
    expect_finite_part_close(got, expected, "alibi_bias(2, 3)")


@chapter.check("alibi_bias", points=1, hint="The future (keys j > i) must be -inf, so that softmax gives it "
               "weight 0; a bias of 0 there would let a token look ahead.")
def alibi_bias_masks_the_future(ns: Namespace) -> None:
    got = expect_shape(call(ns, "alibi_bias", 4, 6), (4, 6, 6), "alibi_bias(4, 6)")
    future = torch.ones(6, 6, dtype=torch.bool).triu(1).expand(4, 6, 6)
    expect(bool(torch.isneginf(got[future]).all()), "alibi_bias(4, 6) has finite entries above the diagonal "
           "(keys in the future); they should be -inf.")
    expect(bool(torch.isfinite(got[~future]).all()), "alibi_bias(4, 6) has -inf or nan on or below the diagonal; "
           "only the future is masked.")


@chapter.check("alibi_bias", points=1, hint="Check the whole tensor for 8 and 16 heads: one (seq, seq) matrix per "
               "head, head h using the h-th slope, in order from the largest slope to the smallest.")
def alibi_bias_matches_reference(ns: Namespace) -> None:
    for n_heads, seq in ((8, 10), (16, 5)):
        got = expect_shape(call(ns, "alibi_bias", n_heads, seq), (n_heads, seq, seq), f"alibi_bias({n_heads}, {seq})")
        expect_finite_part_close(got, P.alibi_bias(n_heads, seq), f"alibi_bias({n_heads}, {seq})")


def expect_finite_part_close(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Compare two bias tensors that hold -inf: the -inf must sit in the same places, the rest must be close."""
    masked = torch.isneginf(expected)
    if not torch.equal(torch.isneginf(got), masked):
        raise CheckFailed(f"{what} has -inf in the wrong places: exactly the future keys (j > i) should be -inf.")
    expect_close(torch.where(masked, torch.zeros_like(got), got), torch.where(masked, 0.0, expected), what,
                 atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- alibi_look_back (an experiment)

def _geometric_mean_distance(slope: float, seq_len: int) -> float:
    """Mean of d = 0 .. seq_len - 1 under weights e^(-slope d): the truncated geometric series, summed in closed form."""
    r = math.exp(-slope)
    return r / (1.0 - r) - seq_len * r ** seq_len / (1.0 - r ** seq_len)


def _look_back(ns: Namespace, n_heads: int, seq_len: int, head: int) -> float:
    got = call(ns, "alibi_look_back", n_heads, seq_len, head)
    return as_number(got, f"alibi_look_back({n_heads}, {seq_len}, {head})")


@chapter.check("alibi_look_back", points=1, hint="Take the bias row of the LAST query (position seq_len - 1): "
               "-slope * distance for each key, with the head's slope 2^(-8(h+1)/n_heads). Softmax it into weights, "
               "then return the sum over keys of weight * distance.")
def alibi_look_back_matches_the_weights(ns: Namespace) -> None:
    for n_heads, seq_len, head in [(2, 4, 0), (8, 16, 3), (8, 100, 7), (16, 50, 10), (4, 1000, 1)]:
        slope = 2.0 ** (-8.0 * (head + 1) / n_heads)
        expected = _geometric_mean_distance(slope, seq_len)
        got = _look_back(ns, n_heads, seq_len, head)
        expect(math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-5),
               f"alibi_look_back({n_heads}, {seq_len}, {head}) is {got:.6g}; head {head} (slope {slope:.4g}) puts "
               f"its weights on keys at a mean distance of {expected:.6g}.")


@chapter.check("alibi_look_back", points=1, hint="With a slope m and a long sequence the weights fall by a factor "
               "e^(-m) per step back, so a head looks about 1/m tokens back: heads with smaller slopes look further. "
               "A sequence of one token has only distance 0, and no head can look further back than uniform weights "
               "would, (seq_len - 1) / 2.")
def alibi_look_back_follows_the_slopes(ns: Namespace) -> None:
    got = _look_back(ns, 8, 1, 0)
    expect(abs(got) < 1e-6, f"with a single token the only key is the query itself (distance 0), got {got:.4g}.")
    distances = [_look_back(ns, 8, 2048, head) for head in range(8)]
    expect(all(a < b for a, b in zip(distances, distances[1:])), "the mean distance should grow from head 0 (the "
           f"largest slope) to head 7 (the smallest); got {[round(d, 2) for d in distances]}.")
    for head in range(5):  # slopes from 1/2 to 1/32: 2048 tokens are many times 1/slope
        slope = 2.0 ** (-(head + 1))
        expect(1 / slope - 1 < distances[head] < 1 / slope, f"head {head} of 8 (slope 1/{2 ** (head + 1)}) should "
               f"look back between {1 / slope - 1:g} and {1 / slope:g} tokens on average, got {distances[head]:.4g}.")
    for n_heads, seq_len, head in [(8, 10, 7), (2, 30, 1)]:
        got = _look_back(ns, n_heads, seq_len, head)
        expect(0 < got < (seq_len - 1) / 2, f"alibi_look_back({n_heads}, {seq_len}, {head}) is {got:.4g}; it must lie "
               f"between 0 and {(seq_len - 1) / 2:g}, the mean distance of uniform weights.")


# --------------------------------------------------------------------------- skipgram_grads (a derivation)


def _skipgram_inputs(vocab: int, dim: int, batch: int, seed: int, dtype: torch.dtype = torch.float32):
    center = seeded_randn(vocab, dim, seed=seed, dtype=dtype)
    context = seeded_randn(vocab, dim, seed=seed + 1, dtype=dtype)
    generator = seeded_generator(seed + 2)
    center_ids = torch.randint(0, vocab // 2, (batch,), generator=generator)  # half the words are never a center
    context_ids = torch.randint(0, vocab, (batch,), generator=generator)
    return center, context, center_ids, context_ids


def _skipgram_reference(center, context, center_ids, context_ids):
    center, context = center.clone().requires_grad_(), context.clone().requires_grad_()
    loss = F.cross_entropy(center[center_ids] @ context.T, context_ids)
    return torch.autograd.grad(loss, (center, context))


def _learner_skipgram(ns: Namespace, center, context, center_ids, context_ids, what: str):
    with forbid_autograd("skipgram_grads"):
        got = call(ns, "skipgram_grads", center.clone(), context.clone(), center_ids.clone(), context_ids.clone())
    return expect_tensors(got, [center.shape, context.shape], ["the center table's gradient",
                          "the context table's gradient"], what)


@chapter.check("skipgram_grads", points=1, hint="For one pair, the loss is -log softmax(z)[o] with z = context_table "
               "@ u, u the center word's vector. Its derivative by z is p - onehot(o); every row of the context "
               "table got one logit, so every row gets a gradient. Average over the pairs of the batch.")
def skipgram_grads_context_table(ns: Namespace) -> None:
    inputs = _skipgram_inputs(vocab=9, dim=4, batch=6, seed=130)
    _, expected = _skipgram_reference(*inputs)
    _, got = _learner_skipgram(ns, *inputs, "skipgram_grads for 6 pairs, vocabulary 9, dim 4")
    expect_close(got, expected, "the gradient for the context table (6 pairs, vocabulary 9, dim 4)")


@chapter.check("skipgram_grads", points=1, hint="The center table enters only through its looked-up rows: the "
               "gradient of row c is the sum, over the pairs whose center word is c, of (p - onehot(o)) @ "
               "context_table, divided by the batch size. Rows never used as a center get zeros; a word that is the "
               "center of several pairs adds them up (index_add_, not assignment).")
def skipgram_grads_center_table(ns: Namespace) -> None:
    center, context, _, context_ids = _skipgram_inputs(vocab=8, dim=3, batch=7, seed=131)
    center_ids = torch.tensor([2, 0, 2, 2, 3, 0, 1])  # word 2 is the center three times; words 4..7 never
    expected, _ = _skipgram_reference(center, context, center_ids, context_ids)
    got, _ = _learner_skipgram(ns, center, context, center_ids, context_ids,
                               "skipgram_grads for 7 pairs with repeated centers")
    expect_close(got, expected, "the gradient for the center table (7 pairs, word 2 the center of three of them)")


@chapter.check("skipgram_grads", points=1, hint="Keep the tables' dtype (float64 here) and compute softmax stably "
               "(torch.softmax does); the result must hold for one pair as for many.")
def skipgram_grads_float64(ns: Namespace) -> None:
    for batch, seed in ((1, 132), (12, 133)):
        center, context, center_ids, context_ids = _skipgram_inputs(12, 5, batch, seed, dtype=torch.float64)
        center, context = center * 3, context * 3  # logits of ±20 and more
        expected = _skipgram_reference(center, context, center_ids, context_ids)
        got = _learner_skipgram(ns, center, context, center_ids, context_ids,
                                f"skipgram_grads for {batch} pair{'s' if batch > 1 else ''} in float64")
        for g, e, which in zip(got, expected, ("center", "context")):
            _check_dtype(g, torch.float64, f"skipgram_grads with float64 tables ({which} gradient)")
            expect_close(g, e, f"the {which} table's gradient for {batch} pair{'s' if batch > 1 else ''} in float64",
                         atol=1e-10, rtol=1e-9)
