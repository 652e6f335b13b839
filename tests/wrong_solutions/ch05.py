"""Common mistakes in chapter 05's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

# --------------------------------------------------------------------------- attention_scores


def scores_unscaled(q, k):
    """Forgets to divide by sqrt(d_k)."""
    return q @ k.transpose(-2, -1)


def scores_divided_by_d_k(q, k):
    """Divides by d_k instead of its square root."""
    return q @ k.transpose(-2, -1) / q.shape[-1]


def scores_scaled_by_sequence_length(q, k):
    """Scales by the number of keys, following the "there are N^2 results" explanation of the scaling."""
    return q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2])


def scores_keys_against_queries(q, k):
    """Multiplies in the wrong order: one row per key instead of one per query."""
    return k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])


# --------------------------------------------------------------------------- causal_mask


def mask_without_diagonal(seq_len):
    """Strictly lower triangle: a token may not even look at itself (the first row is empty)."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool).tril(diagonal=-1)


def mask_upper_triangle(seq_len):
    """Allows the future and hides the past."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool).triu()


def mask_as_floats(seq_len):
    """Returns 1.0 / 0.0 floats instead of booleans (as an additive mask that means "add 0 or 1")."""
    return torch.ones(seq_len, seq_len).tril()


def mask_true_means_hidden(seq_len):
    """Uses nn.MultiheadAttention's convention, True = hidden, where True = may attend was asked for."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool).triu(diagonal=1)


# --------------------------------------------------------------------------- attention


def _masked(scores, mask):
    return scores if mask is None else scores.masked_fill(~mask, float("-inf"))


def attention_unscaled(q, k, v, mask=None):
    """Forgets the 1/sqrt(d_k)."""
    return torch.softmax(_masked(q @ k.transpose(-2, -1), mask), dim=-1) @ v


def attention_softmax_over_queries(q, k, v, mask=None):
    """Normalises each column (over the queries) instead of each row (over the keys)."""
    scores = _masked(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), mask)
    return torch.softmax(scores, dim=-2).nan_to_num() @ v


def attention_zeroes_weights_after_softmax(q, k, v, mask=None):
    """Masks after the softmax, so the remaining weights no longer sum to 1."""
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v


def attention_masks_with_zero(q, k, v, mask=None):
    """Sets hidden scores to 0 instead of -inf: exp(0) = 1 still gives them weight."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, 0.0)
    return torch.softmax(scores, dim=-1) @ v


def attention_inverted_mask(q, k, v, mask=None):
    """Hides the keys where the mask is True."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention_naive_exp(q, k, v, mask=None):
    """Writes softmax as exp / sum(exp) without subtracting the maximum: overflows on large scores."""
    scores = _masked(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), mask)
    e = torch.exp(scores)
    return (e / e.sum(dim=-1, keepdim=True)) @ v


# --------------------------------------------------------------------------- split_heads


def split_heads_view_without_transpose(x, n_heads):
    """Reshapes straight to (batch, heads, seq, head_dim), which cuts the sequence into pieces."""
    batch, seq, d = x.shape
    return x.view(batch, n_heads, seq, d // n_heads)


def split_heads_interleaved(x, n_heads):
    """Gives head h every n_heads-th feature instead of a contiguous slice."""
    batch, seq, d = x.shape
    return x.view(batch, seq, d // n_heads, n_heads).permute(0, 3, 1, 2)


def split_heads_forgets_transpose(x, n_heads):
    """Stops at (batch, seq, heads, head_dim)."""
    batch, seq, d = x.shape
    return x.view(batch, seq, n_heads, d // n_heads)


# --------------------------------------------------------------------------- merge_heads


def merge_heads_without_transpose(x):
    """Reshapes (batch, heads, seq, head_dim) directly, mixing positions of different heads."""
    batch, heads, seq, head_dim = x.shape
    return x.reshape(batch, seq, heads * head_dim)


def merge_heads_interleaved(x):
    """Interleaves the heads' features instead of concatenating them."""
    batch, heads, seq, head_dim = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, seq, heads * head_dim)


def merge_heads_view_after_transpose(x):
    """Calls .view on the transposed (non-contiguous) tensor, which raises."""
    batch, heads, seq, head_dim = x.shape
    return x.transpose(1, 2).view(batch, seq, heads * head_dim)


# --------------------------------------------------------------------------- repeat_kv


def repeat_kv_tiles(x, n_rep):
    """Tiles the whole stack (0, 1, 0, 1, ...) instead of repeating each head in a row (0, 0, 1, 1, ...)."""
    return x.repeat(1, n_rep, 1, 1)


def repeat_kv_along_sequence(x, n_rep):
    """Repeats along the sequence instead of the heads."""
    return x.repeat_interleave(n_rep, dim=2)


def repeat_kv_only_first_head(x, n_rep):
    """Gives every query head the first key/value head (MQA by accident)."""
    batch, kv, seq, head_dim = x.shape
    return x[:, :1].expand(batch, kv * n_rep, seq, head_dim)


# --------------------------------------------------------------------------- kv_cache_bytes


def kv_bytes_keys_only(n_layers, n_kv_heads, head_dim, bytes_per_value=2):
    """Forgets that the values are cached too."""
    return n_layers * n_kv_heads * head_dim * bytes_per_value


def kv_bytes_counts_numbers(n_layers, n_kv_heads, head_dim, bytes_per_value=2):
    """Counts numbers, not bytes."""
    return 2 * n_layers * n_kv_heads * head_dim


def kv_bytes_float32_default(n_layers, n_kv_heads, head_dim, bytes_per_value=4):
    """Assumes 4-byte floats by default."""
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_value


def kv_bytes_in_bits(n_layers, n_kv_heads, head_dim, bytes_per_value=2):
    """Returns bits instead of bytes."""
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_value * 8



# --------------------------------------------------------------------------- CausalSelfAttention (build the module)

from torch import nn  # noqa: E402


class _Attention(nn.Module):
    """A correct layer whose subclasses each break one thing."""
    scale, causal, use_dropout, interleave, bias = True, True, True, True, False

    def __init__(self, d_model, n_heads, n_kv_heads=None, dropout=0.0):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=self.bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=self.bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=self.bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=self.bias)
        self.dropout = nn.Dropout(dropout if self.use_dropout else 0.0)

    def split(self, t, n):
        batch, seq, _ = t.shape
        return t.view(batch, seq, n, self.head_dim).transpose(1, 2)

    def forward(self, x):
        batch, seq, d_model = x.shape
        q = self.split(self.q_proj(x), self.n_heads)
        k, v = self.split(self.k_proj(x), self.n_kv_heads), self.split(self.v_proj(x), self.n_kv_heads)
        n_rep = self.n_heads // self.n_kv_heads
        if self.interleave:
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        else:
            k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
        scores = q @ k.transpose(-2, -1)
        if self.scale:
            scores = scores / math.sqrt(self.head_dim)
        if self.causal:
            scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.o_proj((weights @ v).transpose(1, 2).reshape(batch, seq, d_model))


class AttentionUnscaled(_Attention):
    """Forgets to divide the scores by sqrt(head_dim)."""
    scale = False


class AttentionWithoutMask(_Attention):
    """Lets every position look at the future."""
    causal = False


class AttentionWithoutDropout(_Attention):
    """Accepts dropout= and ignores it."""
    use_dropout = False


class AttentionTilesKeyValueHeads(_Attention):
    """Repeats the key/value heads as a block (0, 1, 0, 1) instead of in a row (0, 0, 1, 1)."""
    interleave = False


class AttentionWithBiases(_Attention):
    """Gives the projections biases (the layer to load has none)."""
    bias = True


class AttentionSplitsHeadsWrongly(_Attention):
    """Reshapes straight to (batch, heads, seq, head_dim), mixing positions into heads."""

    def split(self, t, n):
        batch, seq, _ = t.shape
        return t.reshape(batch, n, seq, self.head_dim)


# --------------------------------------------------------------------------- attention_entropy


def _random_scores(d_k, n_keys, n_queries):
    q, k = torch.randn(n_queries, 1, d_k), torch.randn(n_queries, n_keys, d_k)
    return (q @ k.transpose(-2, -1)).squeeze(1)   # (n_queries, n_keys)


def entropy_in_bits(d_k, scaled=True, n_keys=16, n_queries=2000):
    """Measures the entropy with log2 (bits) instead of the natural log (nats)."""
    s = _random_scores(d_k, n_keys, n_queries) / (math.sqrt(d_k) if scaled else 1.0)
    log_w = torch.log_softmax(s, dim=-1)
    return float(-(log_w.exp() * log_w / math.log(2)).sum(-1).mean())


def entropy_always_scaled(d_k, scaled=True, n_keys=16, n_queries=2000):
    """Ignores `scaled` and always divides by sqrt(d_k), so it never sees the collapse."""
    log_w = torch.log_softmax(_random_scores(d_k, n_keys, n_queries) / math.sqrt(d_k), dim=-1)
    return float(-(log_w.exp() * log_w).sum(-1).mean())


def entropy_divided_by_d_k(d_k, scaled=True, n_keys=16, n_queries=2000):
    """Scales by 1/d_k instead of 1/sqrt(d_k), which makes the weights nearly uniform."""
    log_w = torch.log_softmax(_random_scores(d_k, n_keys, n_queries) / (d_k if scaled else 1.0), dim=-1)
    return float(-(log_w.exp() * log_w).sum(-1).mean())


def entropy_of_underflowing_weights(d_k, scaled=True, n_keys=16, n_queries=2000):
    """Takes log of the weights themselves: a weight that underflows to 0 gives 0 * log 0 = nan."""
    w = torch.softmax(_random_scores(d_k, n_keys, n_queries) / (math.sqrt(d_k) if scaled else 1.0), dim=-1)
    return float(-(w * torch.log(w)).sum(-1).mean())


# --------------------------------------------------------------------------- attention_grads


def _forward(q, k, v, scale):
    p = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
    return p, p @ v


def grads_without_the_scale(q, k, v, grad_out):
    """Forgets the 1/sqrt(d_k) of the scores in the gradients for q and k."""
    p, _ = _forward(q, k, v, 1 / math.sqrt(q.shape[-1]))
    dp = grad_out @ v.transpose(-2, -1)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return ds @ k, ds.transpose(-2, -1) @ q, p.transpose(-2, -1) @ grad_out


def grads_without_the_softmax_correction(q, k, v, grad_out):
    """Treats softmax as if each weight depended on its own score only: dL/dS = P * dL/dP."""
    scale = 1 / math.sqrt(q.shape[-1])
    p, _ = _forward(q, k, v, scale)
    ds = p * (grad_out @ v.transpose(-2, -1))
    return ds @ k * scale, ds.transpose(-2, -1) @ q * scale, p.transpose(-2, -1) @ grad_out


def grads_with_dot_t(q, k, v, grad_out):
    """Transposes with .T, which is right for matrices but reverses every dimension of a batch of heads."""
    scale = 1 / math.sqrt(q.shape[-1])
    p = torch.softmax(q @ k.mT * scale, dim=-1)
    dp = grad_out @ v.mT
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    if q.dim() == 2:
        return ds @ k * scale, ds.T @ q * scale, p.T @ grad_out
    # what .T does to a 4-d tensor: (b, h, s, t) -> (t, s, h, b)
    return ds @ k * scale, ds.permute(3, 2, 1, 0) @ q * scale, p.permute(3, 2, 1, 0) @ grad_out


def grads_value_from_the_scores(q, k, v, grad_out):
    """Uses the scores S instead of the weights P for the values' gradient: dL/dV = S^T dL/dO."""
    scale = 1 / math.sqrt(q.shape[-1])
    s = q @ k.transpose(-2, -1) * scale
    p = torch.softmax(s, dim=-1)
    dp = grad_out @ v.transpose(-2, -1)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return ds @ k * scale, ds.transpose(-2, -1) @ q * scale, s.transpose(-2, -1) @ grad_out


# --------------------------------------------------------------------------- lstm_cell_step


def _lstm_blocks(x, h, w_ih, w_hh, b_ih, b_hh):
    return (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)


def lstm_gates_in_ifog_order(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Reads the blocks as input, forget, output, candidate (another library's order), not PyTorch's i, f, g, o."""
    i, f, o, g = _lstm_blocks(x, h, w_ih, w_hh, b_ih, b_hh)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_without_tanh_on_the_output(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Shows the cell state itself, h = o * c, instead of o * tanh(c)."""
    i, f, g, o = _lstm_blocks(x, h, w_ih, w_hh, b_ih, b_hh)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * c, c


def lstm_candidate_through_sigmoid(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Squashes all four blocks with sigmoid, so the candidate can never be negative."""
    i, f, g, o = (torch.sigmoid(t) for t in _lstm_blocks(x, h, w_ih, w_hh, b_ih, b_hh))
    c = f * c + i * g
    return o * torch.tanh(c), c


def lstm_forget_gate_on_the_candidate(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Swaps the roles: the forget gate scales the new candidate and the input gate the old state."""
    i, f, g, o = _lstm_blocks(x, h, w_ih, w_hh, b_ih, b_hh)
    c = torch.sigmoid(i) * c + torch.sigmoid(f) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_output_from_the_old_state(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Computes h from the cell state before the update."""
    i, f, g, o = _lstm_blocks(x, h, w_ih, w_hh, b_ih, b_hh)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)


def lstm_drops_the_hidden_bias(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Uses only one of PyTorch's two bias vectors."""
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_returns_c_then_h(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Returns the two states in the wrong order, (c, h)."""
    i, f, g, o = _lstm_blocks(x, h, w_ih, w_hh, b_ih, b_hh)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)


# --------------------------------------------------------------------------- causal_conv1d


def conv_pads_both_sides(x, weight, bias=None, dilation=1):
    """Pads both sides and keeps the middle n outputs: a centred convolution, which sees the future."""
    import torch.nn.functional as F
    pad = (weight.shape[-1] - 1) * dilation
    out = F.conv1d(F.pad(x, (pad // 2, pad - pad // 2)), weight, bias, dilation=dilation)
    return out


def conv_pads_on_the_right(x, weight, bias=None, dilation=1):
    """Puts the zeros after the sequence: output t sees t .. t + (k-1) d, the future."""
    import torch.nn.functional as F
    return F.conv1d(F.pad(x, (0, (weight.shape[-1] - 1) * dilation)), weight, bias, dilation=dilation)


def conv_keeps_the_wrong_end(x, weight, bias=None, dilation=1):
    """Pads both sides like nn.Conv1d(padding=p), then cuts off the first p outputs instead of the last p."""
    import torch.nn.functional as F
    pad = (weight.shape[-1] - 1) * dilation
    return F.conv1d(x, weight, bias, padding=pad, dilation=dilation)[..., pad:]


def conv_ignores_the_dilation(x, weight, bias=None, dilation=1):
    """Reads the taps next to each other whatever the dilation."""
    import torch.nn.functional as F
    return F.conv1d(F.pad(x, (weight.shape[-1] - 1, 0)), weight, bias)


def conv_flips_the_kernel(x, weight, bias=None, dilation=1):
    """The textbook convolution with the kernel reversed; PyTorch's (and the lesson's) tap j reads (k-1-j) d back."""
    import torch.nn.functional as F
    return F.conv1d(F.pad(x, ((weight.shape[-1] - 1) * dilation, 0)), weight.flip(-1), bias, dilation=dilation)


def conv_pads_only_k_minus_one(x, weight, bias=None, dilation=1):
    """Pads k - 1 zeros whatever the dilation, so with a dilation it returns fewer outputs than tokens."""
    import torch.nn.functional as F
    return F.conv1d(F.pad(x, (weight.shape[-1] - 1, 0)), weight, bias, dilation=dilation)


WRONG: dict[str, list[Callable]] = {
    "CausalSelfAttention": [AttentionUnscaled, AttentionWithoutMask, AttentionWithoutDropout,
                            AttentionTilesKeyValueHeads, AttentionWithBiases, AttentionSplitsHeadsWrongly],
    "attention_scores": [scores_unscaled, scores_divided_by_d_k, scores_scaled_by_sequence_length,
                         scores_keys_against_queries],
    "causal_mask": [mask_without_diagonal, mask_upper_triangle, mask_as_floats, mask_true_means_hidden],
    "attention": [attention_unscaled, attention_softmax_over_queries, attention_zeroes_weights_after_softmax,
                  attention_masks_with_zero, attention_inverted_mask, attention_naive_exp],
    "split_heads": [split_heads_view_without_transpose, split_heads_interleaved, split_heads_forgets_transpose],
    "merge_heads": [merge_heads_without_transpose, merge_heads_interleaved, merge_heads_view_after_transpose],
    "repeat_kv": [repeat_kv_tiles, repeat_kv_along_sequence, repeat_kv_only_first_head],
    "kv_cache_bytes": [kv_bytes_keys_only, kv_bytes_counts_numbers, kv_bytes_float32_default, kv_bytes_in_bits],
    "attention_entropy": [entropy_in_bits, entropy_always_scaled, entropy_divided_by_d_k,
                          entropy_of_underflowing_weights],
    "attention_grads": [grads_without_the_scale, grads_without_the_softmax_correction, grads_with_dot_t,
                        grads_value_from_the_scores],
    "lstm_cell_step": [lstm_gates_in_ifog_order, lstm_without_tanh_on_the_output, lstm_candidate_through_sigmoid,
                       lstm_forget_gate_on_the_candidate, lstm_output_from_the_old_state, lstm_drops_the_hidden_bias,
                       lstm_returns_c_then_h],
    "causal_conv1d": [conv_pads_both_sides, conv_pads_on_the_right, conv_keeps_the_wrong_end, conv_ignores_the_dilation,
                      conv_flips_the_kernel, conv_pads_only_k_minus_one],
}
