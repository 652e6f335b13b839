"""Graded checks of chapter 05, "Attention".

Seven warm-up exercises and one module to build (``CausalSelfAttention``), each checked on seeded random inputs
against an independent
reference: PyTorch's ``F.scaled_dot_product_attention`` (with and without masks,
and with ``enable_gqa``), explicit per-head slicing, and the KV cache a real
``llmcourse.transformer.attention.MultiHeadAttention`` layer builds. Each exercise is checked
on its own: no check needs any other exercise's function.

Then two more:

* ``attention_entropy``, an experiment: how spread out softmax's weights are for
  random queries and keys, with and without the division by sqrt(d_k). It is
  compared with a fresh estimate computed another way (the entropy from
  ``logsumexp``), and with what the variance argument predicts: without scaling
  the entropy collapses towards 0 as d_k grows, with scaling it stays put;
* ``attention_grads``, a derivation: the gradients of attention's output with
  respect to the queries, keys and values, compared with ``torch.autograd``
  through PyTorch's fused attention.

``attention`` must be written by hand, so its checks run the learner's function
with ``F.scaled_dot_product_attention`` switched off; ``attention_grads``'s run it
with autograd switched off.

Last, ``lstm_cell_step`` (CNNs and LSTMs next to attention): one step of an LSTM,
compared with ``nn.LSTMCell`` and ``nn.LSTM`` on the same weights, and with the
gates set by hand (keep the cell state, hide it), with PyTorch's LSTM kernels
switched off; and ``causal_conv1d``, a convolution that only looks back, compared
with ``F.conv1d`` padded on both sides and trimmed, with a sum written index by index,
and with a change to one token that must not reach any earlier output.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    call,
    call_object,
    expect,
    expect_close,
    expect_shape,
    expect_tensors,
    forbid,
    forbid_autograd,
    seeded_randn,
)

chapter = Chapter("05", "Attention")

Namespace = Mapping[str, Any]

_SDPA = [(F, "scaled_dot_product_attention", "F.scaled_dot_product_attention")]


def _explicit_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Every q_i . k_j / sqrt(d_k), written as a broadcast product and a sum (no matmul)."""
    return (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1) / math.sqrt(q.shape[-1])


# --------------------------------------------------------------------------- attention_scores

@chapter.check("attention_scores", points=1, hint="Entry (i, j) is the dot product of query i with key j, divided "
               "by the square root of the vectors' length d_k (the last dimension). Transpose only the last two "
               "dimensions of k.")
def attention_scores_values(ns: Namespace) -> None:
    q, k = seeded_randn(2, 3, 5, 8, seed=1), seeded_randn(2, 3, 7, 8, seed=2)
    expect_close(call(ns, "attention_scores", q, k), _explicit_scores(q, k),
                 "attention_scores with q (2, 3, 5, 8) and k (2, 3, 7, 8)")


@chapter.check("attention_scores", points=1, hint="The result has one row per query and one column per key: shape "
               "(..., q_len, k_len). Scale by sqrt(d_k), not by d_k and not by a sequence length.")
def attention_scores_other_shapes(ns: Namespace) -> None:
    for q_len, k_len, d_k, seed in [(4, 6, 16, 3), (3, 3, 1, 4), (1, 9, 64, 5)]:
        q, k = seeded_randn(q_len, d_k, seed=seed), seeded_randn(k_len, d_k, seed=seed + 10)
        expect_close(call(ns, "attention_scores", q, k), _explicit_scores(q, k),
                     f"attention_scores with q ({q_len}, {d_k}) and k ({k_len}, {d_k})")


@chapter.check("attention_scores", points=1, hint="softmax of your scores should give exactly the attention weights "
               "PyTorch uses; if they are too peaked or too flat, look at the scaling.")
def attention_scores_match_torch_weights(ns: Namespace) -> None:
    q, k = seeded_randn(2, 4, 5, 32, seed=6) * 2, seeded_randn(2, 4, 5, 32, seed=7) * 2
    identity = torch.eye(5).expand(2, 4, 5, 5)  # values = one-hot rows, so the output is the weight matrix
    weights = F.scaled_dot_product_attention(q, k, identity)
    scores = expect_shape(call(ns, "attention_scores", q, k), (2, 4, 5, 5), "attention_scores of (2, 4, 5, 32) inputs")
    expect_close(torch.softmax(scores, dim=-1), weights, "softmax(attention_scores(q, k)) vs torch's attention weights")


# --------------------------------------------------------------------------- causal_mask

@chapter.check("causal_mask", points=1, hint="Return a bool tensor of shape (seq_len, seq_len), True where query i "
               "may attend to key j: j <= i, the diagonal included (a token may look at itself).")
def causal_mask_values(ns: Namespace) -> None:
    got = call(ns, "causal_mask", 5)
    got = expect_shape(got, (5, 5), "causal_mask(5)")
    expect(got.dtype == torch.bool, f"causal_mask(5) has dtype {got.dtype}; return a bool tensor (True = may attend).")
    expected = torch.tensor([[j <= i for j in range(5)] for i in range(5)])
    expect(torch.equal(got, expected), "causal_mask(5) is wrong: expected True on and below the diagonal, "
           f"got\n{got.int()}")


@chapter.check("causal_mask", points=1, hint="Used as attn_mask (True = may attend), your mask must hide exactly the "
               "future, like is_causal=True does; it must work for any length, including 1.")
def causal_mask_works_in_attention(ns: Namespace) -> None:
    got = expect_shape(call(ns, "causal_mask", 1), (1, 1), "causal_mask(1)")
    expect(got.dtype == torch.bool and bool(got.all()), "causal_mask(1) should be [[True]].")
    q, k, v = seeded_randn(2, 7, 4, seed=20), seeded_randn(2, 7, 4, seed=21), seeded_randn(2, 7, 3, seed=22)
    mask = call(ns, "causal_mask", 7)
    mask = expect_shape(mask, (7, 7), "causal_mask(7)")
    expect(mask.dtype == torch.bool, f"causal_mask(7) has dtype {mask.dtype}; return a bool tensor.")
    expect_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                 F.scaled_dot_product_attention(q, k, v, is_causal=True),
                 "attention with your causal_mask(7) vs is_causal=True")


# --------------------------------------------------------------------------- attention

def _attention(ns: Namespace, *args: Any, **kwargs: Any) -> Any:
    with forbid("attention", _SDPA):
        return call(ns, "attention", *args, **kwargs)


@chapter.check("attention", points=1, hint="softmax(q k^T / sqrt(d_k)) v: the softmax runs over the keys (the last "
               "dimension of the scores), and the values may have another width than the keys.")
def attention_matches_torch(ns: Namespace) -> None:
    q, k, v = seeded_randn(2, 3, 5, 8, seed=30), seeded_randn(2, 3, 7, 8, seed=31), seeded_randn(2, 3, 7, 6, seed=32)
    expect_close(_attention(ns, q, k, v), F.scaled_dot_product_attention(q, k, v),
                 "attention with q (2, 3, 5, 8), k (2, 3, 7, 8), v (2, 3, 7, 6)")
    q, k, v = seeded_randn(4, 16, seed=33), seeded_randn(4, 16, seed=34), seeded_randn(4, 16, seed=35)
    expect_close(_attention(ns, q, k, v, None), F.scaled_dot_product_attention(q, k, v),
                 "attention with (4, 16) inputs and mask=None")


@chapter.check("attention", points=1, hint="Hide a key by setting its score to -inf before the softmax (where the "
               "mask is False), so the remaining weights still sum to 1. Do not zero weights after the softmax.")
def attention_with_masks(ns: Namespace) -> None:
    q, k, v = seeded_randn(2, 2, 6, 8, seed=40), seeded_randn(2, 2, 6, 8, seed=41), seeded_randn(2, 2, 6, 8, seed=42)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    expect_close(_attention(ns, q, k, v, causal), F.scaled_dot_product_attention(q, k, v, attn_mask=causal),
                 "attention with a causal mask (6, 6)")
    padding = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    padding[0, ..., 4:] = False  # the first sequence has two padding tokens at the end
    padding[1, ..., :1] = False
    expect_close(_attention(ns, q, k, v, padding), F.scaled_dot_product_attention(q, k, v, attn_mask=padding),
                 "attention with a padding mask of shape (2, 1, 1, 6)")


@chapter.check("attention", points=1, hint="Large scores must not overflow: use a softmax that subtracts the row's "
               "maximum (torch.softmax does). Each output row is a weighted average of value rows.")
def attention_large_scores_and_averages(ns: Namespace) -> None:
    q, k = seeded_randn(3, 5, 32, seed=50) * 30, seeded_randn(3, 5, 32, seed=51) * 30
    v = seeded_randn(3, 5, 4, seed=52)
    expect_close(_attention(ns, q, k, v), F.scaled_dot_product_attention(q, k, v),
                 "attention with very large scores")
    ones = torch.ones(3, 5, 4)
    expect_close(_attention(ns, q / 30, k / 30, ones), ones, "attention with all-one values (weights must sum to 1)")


# --------------------------------------------------------------------------- split_heads

def _heads_by_slicing(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    head_dim = x.shape[-1] // n_heads
    return torch.stack([x[..., h * head_dim:(h + 1) * head_dim] for h in range(n_heads)], dim=1)


@chapter.check("split_heads", points=1, hint="Head h gets the contiguous slice of features h*head_dim ... "
               "(h+1)*head_dim of every position; the output is (batch, n_heads, seq, head_dim).")
def split_heads_slices(ns: Namespace) -> None:
    x = seeded_randn(2, 5, 12, seed=60)
    expect_close(call(ns, "split_heads", x, 3), _heads_by_slicing(x, 3), "split_heads of (2, 5, 12) into 3 heads")


@chapter.check("split_heads", points=1, hint="Reshape the features into (n_heads, head_dim) first, then swap the "
               "sequence and head dimensions; reshaping straight to (batch, n_heads, seq, head_dim) mixes positions.")
def split_heads_any_shape(ns: Namespace) -> None:
    for batch, seq, d, heads, seed in [(1, 4, 8, 2, 61), (3, 7, 16, 4, 62), (2, 3, 6, 1, 63), (1, 1, 8, 8, 64)]:
        x = seeded_randn(batch, seq, d, seed=seed)
        expect_close(call(ns, "split_heads", x, heads), _heads_by_slicing(x, heads),
                     f"split_heads of ({batch}, {seq}, {d}) into {heads} heads")


# --------------------------------------------------------------------------- merge_heads

@chapter.check("merge_heads", points=1, hint="Concatenate the heads along the features: position t's output is "
               "[head 0 at t, head 1 at t, ...], shape (batch, seq, n_heads * head_dim).")
def merge_heads_concatenates(ns: Namespace) -> None:
    x = seeded_randn(2, 3, 5, 4, seed=70)
    expect_close(call(ns, "merge_heads", x), torch.cat([x[:, h] for h in range(3)], dim=-1),
                 "merge_heads of (2, 3, 5, 4)")


@chapter.check("merge_heads", points=1, hint="Move the head dimension next to head_dim (swap heads and seq) before "
               "reshaping; after a transpose use .reshape (or .contiguous().view).")
def merge_heads_undoes_the_split(ns: Namespace) -> None:
    for batch, heads, seq, head_dim, seed in [(1, 4, 6, 2, 71), (3, 2, 1, 8, 72), (2, 1, 5, 3, 73)]:
        y = seeded_randn(batch, seq, heads * head_dim, seed=seed)
        split = y.view(batch, seq, heads, head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)
        expect_close(call(ns, "merge_heads", split), y,
                     f"merge_heads of a split ({batch}, {heads}, {seq}, {head_dim})")


# --------------------------------------------------------------------------- repeat_kv

def _repeat_by_index(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    index = torch.arange(x.shape[1] * n_rep) // n_rep  # query head i uses key/value head i // n_rep
    return x[:, index]


@chapter.check("repeat_kv", points=1, hint="Query head i uses key/value head i // n_rep: each kv head is repeated "
               "n_rep times in a row (0, 0, 1, 1, ...), not the whole stack tiled (0, 1, 0, 1, ...).")
def repeat_kv_order(ns: Namespace) -> None:
    x = seeded_randn(2, 2, 5, 4, seed=80)
    expect_close(call(ns, "repeat_kv", x, 3), _repeat_by_index(x, 3), "repeat_kv of (2, 2, 5, 4) with n_rep=3")


@chapter.check("repeat_kv", points=1, hint="Repeat along the head dimension (dim 1) only: the sequence length and "
               "head_dim stay the same. n_rep=1 changes nothing; one kv head (MQA) serves every query head.")
def repeat_kv_edge_cases(ns: Namespace) -> None:
    x = seeded_randn(1, 4, 3, 2, seed=81)
    expect_close(call(ns, "repeat_kv", x, 1), x, "repeat_kv with n_rep=1")
    x = seeded_randn(2, 1, 6, 4, seed=82)
    expect_close(call(ns, "repeat_kv", x, 8), x.expand(2, 8, 6, 4), "repeat_kv of one kv head (MQA) with n_rep=8")


@chapter.check("repeat_kv", points=1, hint="With your repeated keys and values, ordinary attention must equal "
               "PyTorch's grouped-query attention.")
def repeat_kv_gives_gqa(ns: Namespace) -> None:
    q = seeded_randn(2, 8, 5, 4, seed=83)
    k, v = seeded_randn(2, 2, 5, 4, seed=84), seeded_randn(2, 2, 5, 4, seed=85)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    k_rep, v_rep = call(ns, "repeat_kv", k, 4), call(ns, "repeat_kv", v, 4)
    k_rep = expect_shape(k_rep, (2, 8, 5, 4), "repeat_kv of keys (2, 2, 5, 4) with n_rep=4")
    v_rep = expect_shape(v_rep, (2, 8, 5, 4), "repeat_kv of values (2, 2, 5, 4) with n_rep=4")
    expect_close(F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True), expected,
                 "attention with your repeated keys and values vs torch's enable_gqa=True")


# --------------------------------------------------------------------------- kv_cache_bytes

def _as_int(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckFailed(f"{what} should return a whole number of bytes (an int), got {value!r:.60}.")
    return value


def _measured_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Run real attention layers with a KV cache over a few tokens and weigh what they keep."""
    from llmcourse.transformer.attention import MultiHeadAttention

    torch.manual_seed(0)
    n_heads, tokens = 2 * n_kv_heads, 3
    layers = [MultiHeadAttention(n_heads * head_dim, n_heads, n_kv_heads).to(dtype) for _ in range(n_layers)]
    x = torch.randn(1, tokens, n_heads * head_dim, dtype=dtype)
    total = 0
    with torch.no_grad():
        for layer in layers:
            _, (keys, values) = layer(x, use_cache=True)
            total += keys.numel() * keys.element_size() + values.numel() * values.element_size()
    return total // tokens


@chapter.check("kv_cache_bytes", points=1, hint="Per token and per layer the cache keeps one key AND one value for "
               "every key/value head, each head_dim numbers of bytes_per_value bytes.")
def kv_cache_bytes_measured(ns: Namespace) -> None:
    for n_layers, n_kv_heads, head_dim, dtype in [(1, 2, 4, torch.float32), (3, 1, 8, torch.bfloat16),
                                                  (2, 3, 2, torch.float64)]:
        size = torch.tensor([], dtype=dtype).element_size()
        expected = _measured_bytes_per_token(n_layers, n_kv_heads, head_dim, dtype)
        got = _as_int(call(ns, "kv_cache_bytes", n_layers, n_kv_heads, head_dim, size),
                      "kv_cache_bytes")
        expect(got == expected, f"kv_cache_bytes({n_layers}, {n_kv_heads}, {head_dim}, {size}) returned {got}, but "
               f"{n_layers} real attention layer(s) keep {expected} bytes per token.")


@chapter.check("kv_cache_bytes", points=1, hint="Use the parameters you are given (layers, kv heads, head_dim) and the "
               "default of 2 bytes per value (16-bit floats); the answer is in bytes per token, a whole number.")
def kv_cache_bytes_real_models(ns: Namespace) -> None:
    from llmcourse.transformer.attention import MODEL_SHAPES

    for name in ("LLaMA-2 7B", "LLaMA-2 70B", "Falcon 7B"):
        s = MODEL_SHAPES[name]
        expected = s.kv_bytes_per_token(2)
        got = _as_int(call(ns, "kv_cache_bytes", s.n_layers, s.n_kv_heads, s.head_dim), "kv_cache_bytes")
        expect(got == expected, f"kv_cache_bytes for {name} ({s.n_layers} layers, {s.n_kv_heads} kv heads, "
               f"head_dim {s.head_dim}, default bytes) returned {got:,}, expected {expected:,} bytes per token.")


# --------------------------------------------------------------------------- CausalSelfAttention (build the module)

_BUILD = "CausalSelfAttention"


def _reference_layer(d_model: int, n_heads: int, n_kv_heads: int | None = None, seed: int = 0):
    """The package's attention layer with seeded random weights: the learner's module loads these."""
    from llmcourse.transformer.attention import MultiHeadAttention

    layer = MultiHeadAttention(d_model, n_heads, n_kv_heads=n_kv_heads)
    with torch.no_grad():
        for i, p in enumerate(layer.parameters()):
            p.copy_(seeded_randn(*p.shape, seed=seed + i) / math.sqrt(p.shape[-1]))
    return layer.eval()


def _sdpa_reference(layer, x: torch.Tensor) -> torch.Tensor:
    """Causal self-attention through PyTorch's fused kernel, from the same weights (an independent reference)."""
    batch, seq, _ = x.shape
    heads = lambda t, n: t.view(batch, seq, n, layer.head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = heads(layer.q_proj(x), layer.n_heads), heads(layer.k_proj(x), layer.n_kv_heads), \
        heads(layer.v_proj(x), layer.n_kv_heads)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=layer.n_kv_heads != layer.n_heads)
    return layer.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


def _build_module(ns: Namespace, d_model: int, n_heads: int, n_kv_heads: int | None = None,
                  dropout: float = 0.0, load_from=None):
    """The learner's module, built with keywords and (optionally) given the reference layer's weights."""
    from torch import nn

    from llmcourse.transformer.attention import MultiHeadAttention

    kwargs = dict(d_model=d_model, n_heads=n_heads, dropout=dropout)
    if n_kv_heads is not None:
        kwargs["n_kv_heads"] = n_kv_heads
    module = call(ns, _BUILD, **kwargs)
    if not isinstance(module, nn.Module):
        raise CheckFailed(f"`{_BUILD}(...)` should build an nn.Module (subclass nn.Module), got {type(module).__name__}.")
    if isinstance(module, MultiHeadAttention):
        raise CheckFailed(f"`{_BUILD}` must be written here, not taken from llmcourse's MultiHeadAttention.")
    if load_from is not None:
        expected = {name: tuple(t.shape) for name, t in load_from.state_dict().items()}
        got = {name: tuple(t.shape) for name, t in module.state_dict().items()}
        if got != expected:
            raise CheckFailed(f"the module's parameters should be exactly {expected} (names and shapes, no biases), "
                              f"got {got}")
        module.load_state_dict(load_from.state_dict())
    return module


def _run_module(module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the fused kernel switched off; the learner's errors become readable failures."""
    with forbid(_BUILD, _SDPA):
        return call_object(f"`{_BUILD}.forward`", module, x)


@chapter.check(_BUILD, points=1, hint="Four bias-free nn.Linear layers named q_proj, k_proj, v_proj and o_proj: q_proj "
               "and o_proj are d_model x d_model; k_proj and v_proj map d_model to n_kv_heads * head_dim, with "
               "head_dim = d_model // n_heads and n_kv_heads = n_heads when it is not given.")
def build_attention_parameters(ns: Namespace) -> None:
    for n_kv_heads in (None, 2):
        _build_module(ns, 32, 4, n_kv_heads, load_from=_reference_layer(32, 4, n_kv_heads))


@chapter.check(_BUILD, points=2, hint="Project x to queries, keys and values, split each into heads (batch, heads, seq, "
               "head_dim), take softmax(q k^T / sqrt(head_dim)) with the future hidden, multiply by the values, "
               "merge the heads back to (batch, seq, d_model) and apply o_proj.")
def build_attention_matches_reference(ns: Namespace) -> None:
    reference = _reference_layer(32, 4, seed=10)
    module = _build_module(ns, 32, 4, load_from=reference).eval()
    x = seeded_randn(2, 7, 32, seed=11)
    with torch.no_grad():
        expect_close(_run_module(module, x), _sdpa_reference(reference, x),
                     "the output for x of shape (2, 7, 32) with 4 heads", atol=1e-5)


@chapter.check(_BUILD, points=1, hint="Causal: position t may look at positions 0..t only. Set the scores of later "
               "keys to -inf before the softmax, so changing a later token never changes an earlier output.")
def build_attention_is_causal(ns: Namespace) -> None:
    module = _build_module(ns, 16, 2, load_from=_reference_layer(16, 2, seed=20)).eval()
    x = seeded_randn(1, 6, 16, seed=21)
    changed = x.clone()
    changed[:, 4:] = seeded_randn(1, 2, 16, seed=22)
    with torch.no_grad():
        expect_close(_run_module(module, changed)[:, :4], _run_module(module, x)[:, :4],
                     "outputs at positions 0-3 after changing tokens 4 and 5 (they must not change)")


@chapter.check(_BUILD, points=1, hint="Build everything from differentiable tensor operations (no .item(), no numpy, "
               "no in-place changes of tensors that need gradients), so that backward reaches x and every weight.")
def build_attention_gradients(ns: Namespace) -> None:
    reference = _reference_layer(16, 4, seed=30)
    module = _build_module(ns, 16, 4, load_from=reference).eval()
    x = seeded_randn(2, 5, 16, seed=31)
    weight = seeded_randn(2, 5, 16, seed=32)
    x_ref, x_mine = x.clone().requires_grad_(), x.clone().requires_grad_()
    (_sdpa_reference(reference, x_ref) * weight).sum().backward()
    (_run_module(module, x_mine) * weight).sum().backward()
    expect_close(x_mine.grad, x_ref.grad, "the gradient with respect to x", atol=1e-5)
    mine = dict(module.named_parameters())
    for name, p in reference.named_parameters():
        if mine[name].grad is None:
            raise CheckFailed(f"{name} got no gradient: is it used in forward?")
        expect_close(mine[name].grad, p.grad, f"the gradient of {name}", atol=1e-5)


@chapter.check(_BUILD, points=1, hint="Grouped keys and values: with n_kv_heads < n_heads, query head i uses key/value "
               "head i // (n_heads // n_kv_heads); repeat each key/value head that many times in a row (repeat_kv).")
def build_attention_grouped_heads(ns: Namespace) -> None:
    for n_kv_heads, seed in [(2, 40), (1, 50)]:
        reference = _reference_layer(32, 4, n_kv_heads, seed=seed)
        module = _build_module(ns, 32, 4, n_kv_heads, load_from=reference).eval()
        x = seeded_randn(2, 6, 32, seed=seed + 1)
        with torch.no_grad():
            expect_close(_run_module(module, x), _sdpa_reference(reference, x),
                         f"the output with 4 query heads and {n_kv_heads} key/value head(s)", atol=1e-5)


@chapter.check(_BUILD, points=1, hint="Apply dropout (nn.Dropout(dropout)) to the attention weights after the softmax: "
               "it is active in training mode (model.train()) and does nothing in eval mode.")
def build_attention_dropout(ns: Namespace) -> None:
    reference = _reference_layer(16, 2, seed=60)
    module = _build_module(ns, 16, 2, dropout=0.5, load_from=reference)
    x = seeded_randn(1, 8, 16, seed=61)
    with torch.no_grad():
        module.eval()
        expect_close(_run_module(module, x), _sdpa_reference(reference, x), "the eval-mode output with dropout=0.5")
        module.train()
        torch.manual_seed(0)
        first = _run_module(module, x)
        torch.manual_seed(1)
        second = _run_module(module, x)
    if torch.allclose(first, second) or torch.allclose(first, _sdpa_reference(reference, x)):
        raise CheckFailed("in training mode with dropout=0.5, two calls gave the same output: dropout is not applied")
    no_dropout = _build_module(ns, 16, 2, dropout=0.0, load_from=reference).train()
    with torch.no_grad():
        expect_close(_run_module(no_dropout, x), _sdpa_reference(reference, x), "the training-mode output with dropout=0")


# --------------------------------------------------------------------------- attention_entropy (an experiment)

def _entropy_estimate(d_k: int, scaled: bool, n_keys: int, n_samples: int, seed: int) -> float:
    """The mean entropy of softmax over n_keys random scores, via H = logsumexp(s) - sum_j softmax(s)_j s_j."""
    q = seeded_randn(n_samples, d_k, seed=seed, dtype=torch.float64)
    k = seeded_randn(n_samples, n_keys, d_k, seed=seed + 1, dtype=torch.float64)
    s = torch.einsum("nd,nkd->nk", q, k)
    if scaled:
        s = s / math.sqrt(d_k)
    return float((torch.logsumexp(s, -1) - (torch.softmax(s, -1) * s).sum(-1)).mean())


def _learner_entropy(ns: Namespace, d_k: int, scaled: bool, n_keys: int = 16, n_queries: int = 2000) -> float:
    got = call(ns, "attention_entropy", d_k, scaled, n_keys, n_queries)
    value = as_number(got, f"attention_entropy({d_k}, scaled={scaled}, n_keys={n_keys})")
    if not math.isfinite(value):
        raise CheckFailed(f"attention_entropy({d_k}, scaled={scaled}, n_keys={n_keys}) is {value}. A weight that "
                          f"underflows to exactly 0 gives 0 * log 0 = nan; it should count as 0 (use the log of "
                          f"the weights from torch.log_softmax, or torch.special.xlogy).")
    return value


@chapter.check("attention_entropy", points=1, hint="For each query draw its own n_keys keys (torch.randn, mean 0, "
               "variance 1), score them by dot products (divided by sqrt(d_k) only when scaled), softmax over the "
               "keys, and take the entropy -sum(w * log w) with the natural log. Return the mean over the queries.")
def attention_entropy_matches_a_fresh_estimate(ns: Namespace) -> None:
    for d_k, scaled, n_keys in [(4, False, 16), (4, True, 16), (64, False, 8), (64, True, 8)]:
        expected = _entropy_estimate(d_k, scaled, n_keys, 8000, seed=140 + d_k + n_keys)
        got = _learner_entropy(ns, d_k, scaled, n_keys)
        expect(abs(got - expected) < 0.12, f"attention_entropy({d_k}, scaled={scaled}, n_keys={n_keys}) is "
               f"{got:.3f} nats, but an estimate from 8000 random queries gives {expected:.3f}.")


@chapter.check("attention_entropy", points=1, hint="Without the division the scores' variance is d_k, so for large d_k "
               "one key takes nearly all the weight and the entropy falls towards 0. The entropy of weights over "
               "n_keys keys always lies between 0 and log(n_keys).")
def attention_entropy_collapses_without_scaling(ns: Namespace) -> None:
    values = [_learner_entropy(ns, d_k, False, 16, 1000) for d_k in (4, 64, 512)]
    for d_k, value in zip((4, 64, 512), values):
        expect(0.0 <= value <= math.log(16) + 1e-6, f"attention_entropy({d_k}, scaled=False) is {value:.3f}, "
               f"outside [0, log 16] = [0, {math.log(16):.3f}], where every entropy over 16 keys lies.")
    expect(values[0] > values[1] > values[2], "without scaling the entropy should fall as d_k grows (4, 64, 512); got "
           f"{[round(v, 3) for v in values]}.")
    expect(values[2] < 0.3, f"without scaling, at d_k = 512 softmax should be nearly one-hot (entropy below 0.3 "
           f"nats), got {values[2]:.3f}.")


@chapter.check("attention_entropy", points=1, hint="With the division by sqrt(d_k) the scores have variance 1 "
               "whatever d_k is, so the entropy should hardly change between d_k = 4 and d_k = 512, and stay "
               "well above 2 nats for 16 keys (log 16 = 2.77 would be uniform).")
def attention_entropy_stays_put_with_scaling(ns: Namespace) -> None:
    small, large = _learner_entropy(ns, 4, True, 16, 2000), _learner_entropy(ns, 512, True, 16, 1000)
    for d_k, value in ((4, small), (512, large)):
        expect(2.0 < value <= math.log(16) + 1e-6, f"attention_entropy({d_k}, scaled=True) is {value:.3f}; with "
               f"scaling, 16 keys should keep an entropy between 2 and log 16 = {math.log(16):.3f} nats.")
    expect(abs(small - large) < 0.12, f"with scaling the entropy should not depend on d_k, but it is {small:.3f} at "
           f"d_k = 4 and {large:.3f} at d_k = 512.")


# --------------------------------------------------------------------------- attention_grads (a derivation)


def _attention_inputs(lead: tuple[int, ...], q_len: int, k_len: int, d_k: int, d_v: int, seed: int,
                      dtype: torch.dtype = torch.float32, scale: float = 1.0):
    return (seeded_randn(*lead, q_len, d_k, seed=seed, dtype=dtype) * scale,
            seeded_randn(*lead, k_len, d_k, seed=seed + 1, dtype=dtype) * scale,
            seeded_randn(*lead, k_len, d_v, seed=seed + 2, dtype=dtype),
            seeded_randn(*lead, q_len, d_v, seed=seed + 3, dtype=dtype))


def _attention_grads_reference(q, k, v, grad_out):
    """torch.autograd through PyTorch's own fused attention."""
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return torch.autograd.grad(out, (q, k, v), grad_out)


def _learner_grads(ns: Namespace, q, k, v, grad_out, what: str):
    with forbid_autograd("attention_grads"):
        got = call(ns, "attention_grads", q.clone(), k.clone(), v.clone(), grad_out.clone())
    return expect_tensors(got, [q.shape, k.shape, v.shape], ["the gradient for q", "the gradient for k",
                          "the gradient for v"], what)


@chapter.check("attention_grads", points=1, hint="The output is O = P V with P the attention weights, so each value "
               "v_j reaches the output through the weights w_ij of every query: dL/dV = P^T (dL/dO).")
def attention_grads_value(ns: Namespace) -> None:
    q, k, v, grad_out = _attention_inputs((), 3, 5, 4, 2, seed=150)
    expected = _attention_grads_reference(q, k, v, grad_out)[2]
    got = _learner_grads(ns, q, k, v, grad_out, "attention_grads for 3 queries and 5 keys")[2]
    expect_close(got, expected, "the gradient for v (3 queries, 5 keys, d_k = 4, d_v = 2)")


@chapter.check("attention_grads", points=1, hint="Go back one step at a time: dL/dP = (dL/dO) V^T; through each "
               "row's softmax dL/dS = P * (dL/dP - the row's sum of P * dL/dP); then S = Q K^T / sqrt(d_k) gives "
               "dL/dQ and dL/dK, each with the 1/sqrt(d_k).")
def attention_grads_query_key(ns: Namespace) -> None:
    q, k, v, grad_out = _attention_inputs((), 3, 5, 4, 2, seed=151)
    expected = _attention_grads_reference(q, k, v, grad_out)
    got = _learner_grads(ns, q, k, v, grad_out, "attention_grads for 3 queries and 5 keys")
    expect_close(got[0], expected[0], "the gradient for q (3 queries, 5 keys, d_k = 4, d_v = 2)")
    expect_close(got[1], expected[1], "the gradient for k (3 queries, 5 keys, d_k = 4, d_v = 2)")


@chapter.check("attention_grads", points=1, hint="Leading dimensions (batch, heads) are just carried along: transpose "
               "only the last two dimensions (transpose(-2, -1), not .T), reduce over the last one, and keep the "
               "inputs' dtype.")
def attention_grads_batched_float64(ns: Namespace) -> None:
    q, k, v, grad_out = _attention_inputs((2, 3), 6, 7, 8, 5, seed=152, dtype=torch.float64, scale=2.0)
    expected = _attention_grads_reference(q, k, v, grad_out)
    got = _learner_grads(ns, q, k, v, grad_out, "attention_grads for a (2, 3) batch of heads in float64")
    for g, e, name in zip(got, expected, "qkv"):
        if g.dtype != torch.float64:
            raise CheckFailed(f"the gradient for {name} is {g.dtype}; it should keep the inputs' dtype torch.float64.")
        expect_close(g, e, f"the gradient for {name} (a (2, 3) batch of heads, 6 queries, 7 keys, float64)",
                     atol=1e-10, rtol=1e-9)


# --------------------------------------------------------------------------- lstm_cell_step (CNNs and LSTMs next to attention)

_LSTM_BUILTINS = [(torch, "lstm_cell", "torch.lstm_cell"), (torch.nn.LSTMCell, "forward", "nn.LSTMCell"),
                  (torch.nn.LSTM, "forward", "nn.LSTM")]


def _torch_lstm_cell(d_in: int, d: int, seed: int) -> torch.nn.LSTMCell:
    """PyTorch's own LSTM cell with seeded weights: the independent reference."""
    torch.manual_seed(seed)
    return torch.nn.LSTMCell(d_in, d).double()


def _cell_weights(cell: torch.nn.LSTMCell) -> tuple[torch.Tensor, ...]:
    return tuple(p.detach().clone() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))


def _learner_lstm_step(ns: Namespace, x, h, c, weights, what: str):
    with forbid("lstm_cell_step", _LSTM_BUILTINS):
        got = call(ns, "lstm_cell_step", x, h, c, *weights)
    return expect_tensors(got, [h.shape, c.shape], ["the new hidden state h", "the new cell state c"], what)


@chapter.check("lstm_cell_step", points=1, hint="Split x W_ih^T + b_ih + h W_hh^T + b_hh into four blocks in PyTorch's "
               "order: input gate i, forget gate f, candidate g, output gate o. Sigmoid for i, f and o, tanh for g; "
               "then c_new = f * c + i * g and h_new = o * tanh(c_new). Return (h_new, c_new).")
def lstm_cell_step_matches_torch(ns: Namespace) -> None:
    cell = _torch_lstm_cell(5, 4, seed=170)
    x, h, c = (seeded_randn(3, n, seed=171 + i, dtype=torch.float64) for i, n in enumerate((5, 4, 4)))
    with torch.no_grad():
        expected_h, expected_c = cell(x, (h, c))
    got_h, got_c = _learner_lstm_step(ns, x, h, c, _cell_weights(cell), "lstm_cell_step for a batch of 3")
    expect_close(got_c, expected_c, "the new cell state c (batch 3, 5 inputs, 4 hidden) vs nn.LSTMCell", atol=1e-10)
    expect_close(got_h, expected_h, "the new hidden state h (batch 3, 5 inputs, 4 hidden) vs nn.LSTMCell", atol=1e-10)


@chapter.check("lstm_cell_step", points=1, hint="Run over a sequence, each step feeds its h and c to the next: "
               "the outputs must equal nn.LSTM's. Keep the leading (batch) dimensions and use the weights as "
               "PyTorch stores them, (4 * hidden, inputs): multiply by their transpose.")
def lstm_cell_step_runs_a_sequence(ns: Namespace) -> None:
    torch.manual_seed(180)
    lstm = torch.nn.LSTM(3, 6, batch_first=True).double()
    xs = seeded_randn(2, 7, 3, seed=181, dtype=torch.float64)
    with torch.no_grad():
        expected, (h_n, c_n) = lstm(xs)
    weights = tuple(p.detach().clone() for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                                                  lstm.bias_hh_l0))
    h = c = torch.zeros(2, 6, dtype=torch.float64)
    outputs = []
    for t in range(7):
        h, c = _learner_lstm_step(ns, xs[:, t], h, c, weights, f"lstm_cell_step at position {t}")
        outputs.append(h)
    expect_close(torch.stack(outputs, dim=1), expected, "the hidden states over 7 positions vs nn.LSTM", atol=1e-10)
    expect_close(c, c_n[0], "the cell state after 7 positions vs nn.LSTM", atol=1e-10)


@chapter.check("lstm_cell_step", points=1, hint="The gates do what their names say: a forget gate near 1 with an input "
               "gate near 0 keeps the old cell state c unchanged, and an output gate near 0 hides it (h near 0). "
               "The second block of rows is the forget gate, the fourth the output gate.")
def lstm_cell_step_gates_do_their_jobs(ns: Namespace) -> None:
    d_in, d = 3, 4
    x, h = seeded_randn(2, d_in, seed=190, dtype=torch.float64), seeded_randn(2, d, seed=191, dtype=torch.float64)
    c = seeded_randn(2, d, seed=192, dtype=torch.float64)
    w_ih = seeded_randn(4 * d, d_in, seed=193, dtype=torch.float64) * 0.1
    w_hh = seeded_randn(4 * d, d, seed=194, dtype=torch.float64) * 0.1
    b_hh = torch.zeros(4 * d, dtype=torch.float64)
    keep = torch.zeros(4 * d, dtype=torch.float64)
    keep[:d], keep[d:2 * d], keep[3 * d:] = -40.0, 40.0, 40.0      # input closed, forget open, output open
    got_h, got_c = _learner_lstm_step(ns, x, h, c, (w_ih, w_hh, keep, b_hh), "lstm_cell_step with the gates set")
    expect_close(got_c, c, "the cell state with the forget gate open and the input gate closed (it must be kept)",
                 atol=1e-9)
    expect_close(got_h, torch.tanh(c), "h with the output gate open (it must be tanh of the kept cell state)", atol=1e-9)
    hide = keep.clone()
    hide[3 * d:] = -40.0                                           # output gate closed
    got_h, got_c = _learner_lstm_step(ns, x, h, c, (w_ih, w_hh, hide, b_hh), "lstm_cell_step with the output closed")
    expect_close(got_h, torch.zeros_like(h), "h with the output gate closed (it must be 0)", atol=1e-9)
    expect_close(got_c, c, "the cell state with the output gate closed (the output gate does not change c)", atol=1e-9)


# --------------------------------------------------------------------------- causal_conv1d


def _causal_conv_by_index(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          dilation: int) -> torch.Tensor:
    """out[b, o, t] = bias[o] + sum over i, j of weight[o, i, j] * x[b, i, t - (k - 1 - j) * dilation], one t at a time."""
    batch, _, seq = x.shape
    k = weight.shape[-1]
    out = torch.zeros(batch, weight.shape[0], seq, dtype=x.dtype)
    for t in range(seq):
        for j in range(k):
            source = t - (k - 1 - j) * dilation
            if source >= 0:
                out[:, :, t] += x[:, :, source] @ weight[:, :, j].T
    return out if bias is None else out + bias[:, None]


def _learner_conv(ns: Namespace, x, weight, bias, dilation, what: str) -> torch.Tensor:
    got = call(ns, "causal_conv1d", x, weight, bias, dilation)
    return expect_shape(got, (x.shape[0], weight.shape[0], x.shape[-1]), what)


@chapter.check("causal_conv1d", points=1, hint="Pad (k - 1) * dilation zeros on the LEFT of the sequence only (F.pad(x, "
               "(left, 0))), then convolve without padding: n outputs for n tokens, output t made from inputs t - (k-1) * "
               "dilation ... t. nn.Conv1d(padding=p) pads both sides; its first n outputs are the causal ones.")
def causal_conv1d_matches_conv1d_trimmed(ns: Namespace) -> None:
    x = seeded_randn(2, 3, 9, seed=200, dtype=torch.float64)
    weight, bias = seeded_randn(4, 3, 3, seed=201, dtype=torch.float64), seeded_randn(4, seed=202, dtype=torch.float64)
    expected = F.conv1d(x, weight, bias, padding=2)[..., :9]
    expect_close(_learner_conv(ns, x, weight, bias, 1, "causal_conv1d of (2, 3, 9) with kernel 3"), expected,
                 "causal_conv1d (kernel 3, dilation 1) vs nn.Conv1d(padding=2) with its last 2 outputs cut", atol=1e-10)
    expect_close(_learner_conv(ns, x, weight, None, 1, "causal_conv1d without a bias"), expected - bias[:, None],
                 "causal_conv1d with bias=None", atol=1e-10)


@chapter.check("causal_conv1d", points=1, hint="With a dilation d, tap j of the kernel reads the input (k - 1 - j) * d "
               "steps back, so the left padding is (k - 1) * d. Any kernel size works, k = 1 too (no padding at all).")
def causal_conv1d_dilations_and_kernels(ns: Namespace) -> None:
    for k, dilation, c_in, c_out, seq, seed in [(2, 3, 2, 2, 10, 210), (4, 2, 3, 1, 12, 220), (1, 1, 2, 3, 5, 230),
                                                (3, 4, 1, 2, 6, 240)]:
        x = seeded_randn(1, c_in, seq, seed=seed, dtype=torch.float64)
        weight = seeded_randn(c_out, c_in, k, seed=seed + 1, dtype=torch.float64)
        bias = seeded_randn(c_out, seed=seed + 2, dtype=torch.float64)
        expect_close(_learner_conv(ns, x, weight, bias, dilation, f"causal_conv1d with kernel {k}, dilation {dilation}"),
                     _causal_conv_by_index(x, weight, bias, dilation),
                     f"causal_conv1d with kernel {k}, dilation {dilation}, {seq} tokens", atol=1e-10)


@chapter.check("causal_conv1d", points=1, hint="Causal means blind to the future: changing token t may change outputs t, "
               "t+1, ... but never an earlier one. Padding on the right (or both sides) lets outputs see later tokens.")
def causal_conv1d_never_looks_ahead(ns: Namespace) -> None:
    x = seeded_randn(1, 2, 10, seed=250, dtype=torch.float64)
    weight = seeded_randn(2, 2, 3, seed=251, dtype=torch.float64)
    changed = x.clone()
    changed[..., 6] += 4.0
    before = _learner_conv(ns, x, weight, None, 2, "causal_conv1d with dilation 2")
    after = _learner_conv(ns, changed, weight, None, 2, "causal_conv1d with dilation 2, token 6 changed")
    expect_close(after[..., :6], before[..., :6], "outputs 0-5 after changing token 6 (they must not change)", atol=1e-12)
    moved = (after - before).abs().amax(dim=1)[0]
    expect(bool(moved[6] > 0 and moved[8] > 0 and moved[7] == 0 and moved[9] == 0),
           "with kernel 3 and dilation 2, changing token 6 should change outputs 6 and 8 (and not 7 or 9); the "
           f"changes were {[round(v, 3) for v in moved.tolist()]}")
