"""Common mistakes in chapter 04's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- one_hot_embed


def embed_one_hot_sized_by_the_ids(ids, weight):
    """Lets F.one_hot guess the number of classes from the largest id present."""
    return F.one_hot(ids).to(weight.dtype) @ weight


def embed_with_transposed_table(ids, weight):
    """Multiplies by weight.T, as if the table were (dim, vocab_size)."""
    return F.one_hot(ids, weight.shape[1]).to(weight.dtype) @ weight.T


def embed_float32_one_hot(ids, weight):
    """Makes the one-hot matrix float32 and the result too, losing a float64 table's precision."""
    return F.one_hot(ids, weight.shape[0]).float() @ weight.float()


def embed_flattens_the_batch(ids, weight):
    """Flattens a batch of ids and forgets to restore its shape."""
    return F.one_hot(ids.flatten(), weight.shape[0]).to(weight.dtype) @ weight


def embed_detached(ids, weight):
    """Detaches the table, so no gradient reaches it."""
    return F.one_hot(ids, weight.shape[0]).to(weight.dtype) @ weight.detach()


def embed_with_builtin(ids, weight):
    """Calls the built-in the exercise asks you to write."""
    return F.embedding(ids, weight)


# --------------------------------------------------------------------------- cosine_similarity


def cosine_without_normalising(a, b):
    """Returns the dot product: forgets to divide by the lengths."""
    return (a * b).sum(dim=-1)


def cosine_divides_by_squared_lengths(a, b):
    """Divides by the squared lengths instead of the lengths."""
    return (a * b).sum(dim=-1) / ((a * a).sum(dim=-1) * (b * b).sum(dim=-1))


def cosine_normalises_only_a(a, b):
    """Divides by |a| only."""
    return (a * b).sum(dim=-1) / a.norm(dim=-1)


def cosine_sums_the_wrong_dimension(a, b):
    """Reduces over the first dimension instead of the last."""
    return (a * b).sum(dim=0) / (a.norm(dim=0) * b.norm(dim=0))


def cosine_with_builtin(a, b):
    """Calls the built-in the exercise asks you to write."""
    return F.cosine_similarity(a, b, dim=-1)


# --------------------------------------------------------------------------- sinusoidal_encoding


def _table(angles_for: Callable[[torch.Tensor, int], torch.Tensor], n: int, d: int, interleave: bool = True,
           swap: bool = False, start: int = 0) -> torch.Tensor:
    pos = torch.arange(start, start + n, dtype=torch.float64)[:, None]
    angles = angles_for(pos, d)
    first, second = (torch.cos(angles), torch.sin(angles)) if swap else (torch.sin(angles), torch.cos(angles))
    if interleave:
        return torch.stack([first, second], dim=-1).flatten(1).float()
    return torch.cat([first, second], dim=-1).float()


def _pair_frequencies(pos, d):
    return pos * 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)


def sinusoidal_counts_columns_not_pairs(n_positions, d_model):
    """Forgets the 2 in the exponent: w_i = 10000^(-i/d), so the frequencies fall too slowly."""
    return _table(lambda pos, d: pos * 10000.0 ** (-torch.arange(d // 2, dtype=torch.float64) / d),
                  n_positions, d_model)


def sinusoidal_sin_cos_swapped(n_positions, d_model):
    """Puts cosines in the even columns and sines in the odd ones."""
    return _table(_pair_frequencies, n_positions, d_model, swap=True)


def sinusoidal_halves_not_interleaved(n_positions, d_model):
    """Puts all sines first, then all cosines (another layout, not the one asked for)."""
    return _table(_pair_frequencies, n_positions, d_model, interleave=False)


def sinusoidal_positions_from_one(n_positions, d_model):
    """Numbers the positions from 1."""
    return _table(_pair_frequencies, n_positions, d_model, start=1)


def sinusoidal_positive_exponent(n_positions, d_model):
    """Multiplies by 10000^(2i/d) instead of dividing."""
    return _table(lambda pos, d: pos * 10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d),
                  n_positions, d_model)


# --------------------------------------------------------------------------- rope_rotate


def _rope_angles(positions, head_dim, base):
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return positions.to(torch.float64)[:, None] * theta[None, :]


def rope_interleaved_pairs(x, positions, base=10000.0):
    """Pairs coordinates (2i, 2i+1), the paper's layout, instead of LLaMA's (i, i + head_dim/2)."""
    angles = _rope_angles(positions, x.shape[-1], base).repeat_interleave(2, dim=-1)
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * angles.cos().to(x.dtype) + turned * angles.sin().to(x.dtype)


def rope_turns_the_other_way(x, positions, base=10000.0):
    """Rotates by -angle: rotate_half with the sign on the wrong half."""
    half = x.shape[-1] // 2
    angles = _rope_angles(positions, x.shape[-1], base)
    angles = torch.cat([angles, angles], dim=-1)
    turned = torch.cat([x[..., half:], -x[..., :half]], dim=-1)
    return x * angles.cos().to(x.dtype) + turned * angles.sin().to(x.dtype)


def rope_ignores_positions(x, positions, base=10000.0):
    """Uses 0, 1, 2, ... instead of the positions given."""
    half = x.shape[-1] // 2
    angles = _rope_angles(torch.arange(x.shape[-2]), x.shape[-1], base)
    angles = torch.cat([angles, angles], dim=-1)
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos().to(x.dtype) + turned * angles.sin().to(x.dtype)


def rope_ignores_base(x, positions, base=10000.0):
    """Hard-codes 10000 as the base."""
    half = x.shape[-1] // 2
    angles = _rope_angles(positions, x.shape[-1], 10000.0)
    angles = torch.cat([angles, angles], dim=-1)
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos().to(x.dtype) + turned * angles.sin().to(x.dtype)


def rope_angles_not_repeated(x, positions, base=10000.0):
    """Computes one angle per coordinate (theta over all head_dim columns) instead of one per pair."""
    half = x.shape[-1] // 2
    head_dim = x.shape[-1]
    theta = base ** (-torch.arange(head_dim, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * theta[None, :]
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos().to(x.dtype) + turned * angles.sin().to(x.dtype)


def rope_float32_angles(x, positions, base=10000.0):
    """Computes in float32 and returns float32 even for float64 input."""
    half = x.shape[-1] // 2
    angles = _rope_angles(positions, x.shape[-1], base).float()
    angles = torch.cat([angles, angles], dim=-1)
    x = x.float()
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos() + turned * angles.sin()


# --------------------------------------------------------------------------- alibi_slopes


def slopes_formula_for_every_count(n_heads):
    """Uses 2^(-8(h+1)/n) for every n, also when n is not a power of two."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_heads) for h in range(n_heads)])


def slopes_start_at_one(n_heads):
    """Starts the sequence at h = 0, so the first slope is 1."""
    return torch.tensor([2.0 ** (-8.0 * h / n_heads) for h in range(n_heads)])


def slopes_smallest_first(n_heads):
    """Lists the slopes from the smallest to the largest."""
    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = [2.0 ** (-8.0 * (h + 1) / p) for h in range(p)]
    slopes += [2.0 ** (-8.0 * (h + 1) / (2 * p)) for h in range(2 * p)][0::2][: n_heads - p]
    return torch.tensor(slopes[::-1])


def slopes_fill_with_the_wrong_half(n_heads):
    """Fills the extra heads with the 2nd, 4th, ... slopes of 2p heads instead of the 1st, 3rd, ..."""
    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = [2.0 ** (-8.0 * (h + 1) / p) for h in range(p)]
    slopes += [2.0 ** (-8.0 * (h + 1) / (2 * p)) for h in range(2 * p)][1::2][: n_heads - p]
    return torch.tensor(slopes)


# --------------------------------------------------------------------------- alibi_bias


def _slopes(n_heads):
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_heads) for h in range(n_heads)])


def _distance(seq_len):
    return (torch.arange(seq_len)[:, None] - torch.arange(seq_len)[None, :]).float()


def bias_positive(n_heads, seq_len):
    """Adds +slope * distance: a reward for looking far back instead of a penalty."""
    d = _distance(seq_len)
    return (_slopes(n_heads)[:, None, None] * d).masked_fill(d < 0, float("-inf"))


def bias_without_mask(n_heads, seq_len):
    """Forgets the causal mask: a symmetric -slope * |i - j| everywhere."""
    return -_slopes(n_heads)[:, None, None] * _distance(seq_len).abs()


def bias_masks_with_zero(n_heads, seq_len):
    """Leaves 0 (instead of -inf) for the future."""
    d = _distance(seq_len)
    return (-_slopes(n_heads)[:, None, None] * d).clamp(max=0.0)


def bias_key_minus_query(n_heads, seq_len):
    """Uses j - i for the distance, so the past gets a positive bias and the mask lands on the wrong side."""
    d = -_distance(seq_len)
    return (-_slopes(n_heads)[:, None, None] * d).masked_fill(d < 0, float("-inf"))


def bias_slopes_reversed(n_heads, seq_len):
    """Gives head 0 the smallest slope."""
    d = _distance(seq_len)
    return (-_slopes(n_heads).flip(0)[:, None, None] * d).masked_fill(d < 0, float("-inf"))


def bias_slopes_start_at_one(n_heads, seq_len):
    """Uses 2^(-8h/n), so head 0 gets slope 1."""
    slopes = torch.tensor([2.0 ** (-8.0 * h / n_heads) for h in range(n_heads)])
    d = _distance(seq_len)
    return (-slopes[:, None, None] * d).masked_fill(d < 0, float("-inf"))


# --------------------------------------------------------------------------- alibi_look_back


def _look_back_weights(slope, seq_len, sign=-1.0):
    distance = torch.arange(seq_len - 1, -1, -1, dtype=torch.float64)  # keys 0 .. i, seen from query i = seq_len - 1
    return torch.softmax(sign * slope * distance, dim=0), distance


def look_back_from_the_first_query(n_heads, seq_len, head):
    """Uses the first query's row, which sees only itself, instead of the last query's."""
    return 0.0


def look_back_with_a_reward_for_distance(n_heads, seq_len, head):
    """Adds +slope * distance, so the far past gets the largest weight."""
    weights, distance = _look_back_weights(2.0 ** (-8.0 * (head + 1) / n_heads), seq_len, sign=1.0)
    return float((weights * distance).sum())


def look_back_without_softmax(n_heads, seq_len, head):
    """Normalises the bias itself into weights (bias / its sum) instead of taking its softmax."""
    slope = 2.0 ** (-8.0 * (head + 1) / n_heads)
    distance = torch.arange(seq_len - 1, -1, -1, dtype=torch.float64)
    bias = -slope * distance
    weights = bias / bias.sum() if seq_len > 1 else torch.ones(1, dtype=torch.float64)
    return float((weights * distance).sum())


def look_back_slopes_from_one(n_heads, seq_len, head):
    """Uses the slope 2^(-8h/n), so head 0 gets slope 1 and every head looks less far back than it should."""
    weights, distance = _look_back_weights(2.0 ** (-8.0 * head / n_heads), seq_len)
    return float((weights * distance).sum())


def look_back_averaged_over_queries(n_heads, seq_len, head):
    """Averages the mean distance over every query row instead of taking the last query's."""
    slope = 2.0 ** (-8.0 * (head + 1) / n_heads)
    rows = []
    for i in range(seq_len):
        weights, distance = _look_back_weights(slope, i + 1)
        rows.append(float((weights * distance).sum()))
    return sum(rows) / len(rows)


# --------------------------------------------------------------------------- skipgram_grads


def _logit_gradient(center_table, context_table, center_ids, context_ids):
    probs = torch.softmax(center_table[center_ids] @ context_table.T, dim=-1)
    return probs - F.one_hot(context_ids, context_table.shape[0]).to(probs.dtype)


def skipgram_grads_summed_not_averaged(center_table, context_table, center_ids, context_ids):
    """Sums the gradients of the pairs and forgets to divide by the batch size."""
    g = _logit_gradient(center_table, context_table, center_ids, context_ids)
    grad_center = torch.zeros_like(center_table).index_add_(0, center_ids, g @ context_table)
    return grad_center, g.T @ center_table[center_ids]


def skipgram_grads_without_the_softmax(center_table, context_table, center_ids, context_ids):
    """Takes -onehot(o) as the logits' gradient: forgets the softmax's p, so only the context row is pushed."""
    g = -F.one_hot(context_ids, context_table.shape[0]).to(center_table.dtype) / len(center_ids)
    grad_center = torch.zeros_like(center_table).index_add_(0, center_ids, g @ context_table)
    return grad_center, g.T @ center_table[center_ids]


def skipgram_grads_center_rows_overwritten(center_table, context_table, center_ids, context_ids):
    """Writes each pair's gradient into its center row with assignment, so a repeated center keeps only one."""
    g = _logit_gradient(center_table, context_table, center_ids, context_ids) / len(center_ids)
    grad_center = torch.zeros_like(center_table)
    grad_center[center_ids] = g @ context_table
    return grad_center, g.T @ center_table[center_ids]


def skipgram_grads_in_float32(center_table, context_table, center_ids, context_ids):
    """Computes everything in float32, losing a float64 table's precision."""
    center_table, context_table = center_table.float(), context_table.float()
    g = _logit_gradient(center_table, context_table, center_ids, context_ids) / len(center_ids)
    grad_center = torch.zeros_like(center_table).index_add_(0, center_ids, g @ context_table)
    return grad_center, g.T @ center_table[center_ids]


WRONG: dict[str, list[Callable]] = {
    "one_hot_embed": [embed_one_hot_sized_by_the_ids, embed_with_transposed_table, embed_float32_one_hot,
                      embed_flattens_the_batch, embed_detached, embed_with_builtin],
    "cosine_similarity": [cosine_without_normalising, cosine_divides_by_squared_lengths, cosine_normalises_only_a,
                          cosine_sums_the_wrong_dimension, cosine_with_builtin],
    "sinusoidal_encoding": [sinusoidal_counts_columns_not_pairs, sinusoidal_sin_cos_swapped,
                            sinusoidal_halves_not_interleaved, sinusoidal_positions_from_one,
                            sinusoidal_positive_exponent],
    "rope_rotate": [rope_interleaved_pairs, rope_turns_the_other_way, rope_ignores_positions, rope_ignores_base,
                    rope_angles_not_repeated, rope_float32_angles],
    "alibi_slopes": [slopes_formula_for_every_count, slopes_start_at_one, slopes_smallest_first,
                     slopes_fill_with_the_wrong_half],
    "alibi_bias": [bias_positive, bias_without_mask, bias_masks_with_zero, bias_key_minus_query,
                   bias_slopes_reversed, bias_slopes_start_at_one],
    "alibi_look_back": [look_back_from_the_first_query, look_back_with_a_reward_for_distance,
                        look_back_without_softmax, look_back_slopes_from_one, look_back_averaged_over_queries],
    "skipgram_grads": [skipgram_grads_summed_not_averaged, skipgram_grads_without_the_softmax,
                       skipgram_grads_center_rows_overwritten, skipgram_grads_in_float32],
}
