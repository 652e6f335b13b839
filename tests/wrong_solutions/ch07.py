"""Common mistakes in chapter 07's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

from typing import Callable

import torch

# --------------------------------------------------------------------------- softmax_with_temperature


def temperature_multiplies(logits, temperature):
    """Multiplies by the temperature instead of dividing: high T then sharpens."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return torch.softmax(logits * temperature, dim=-1)


def temperature_overflows(logits, temperature):
    """exp without subtracting the maximum: inf / inf = nan for large logits."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    e = torch.exp(logits / temperature)
    return e / e.sum(dim=-1, keepdim=True)


def temperature_over_the_batch(logits, temperature):
    """Normalises along dim 0 (the batch) instead of the vocabulary."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return torch.softmax(logits / temperature, dim=0)


def temperature_unchecked(logits, temperature):
    """Right values, but temperature 0 silently gives nan or a one-hot instead of an error."""
    return torch.softmax(logits / temperature, dim=-1)


# --------------------------------------------------------------------------- top_k_filter


def top_k_returns_values(logits, k):
    """Returns the k best logits themselves (shape (..., k)) instead of a filtered copy of the full row."""
    return torch.topk(logits, k, dim=-1).values


def top_k_zeroes(logits, k):
    """Sets removed logits to 0, which softmax still turns into a sizeable probability."""
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return torch.where(logits < kth, torch.zeros_like(logits), logits)


def top_k_off_by_one(logits, k):
    """Keeps k - 1 tokens (compares with <= the k-th largest)."""
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, float("-inf"))


def top_k_crashes_on_large_k(logits, k):
    """torch.topk with k larger than the vocabulary raises."""
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


# --------------------------------------------------------------------------- top_p_filter


def top_p_drops_the_crossing_token(logits, p):
    """Keeps only tokens whose cumulative probability INCLUDING themselves is <= p (may keep nothing)."""
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    remove_sorted = torch.cumsum(sorted_probs, dim=-1) > p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def top_p_forgets_to_unsort(logits, p):
    """Decides in sorted order and applies the decision to the tokens in their original order."""
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
    remove = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= p
    return logits.masked_fill(remove, float("-inf"))


def top_p_on_logits(logits, p):
    """Accumulates the raw logits instead of probabilities."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    remove_sorted = torch.cumsum(sorted_logits, dim=-1) - sorted_logits >= p
    remove_sorted[..., 0] = False
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


# --------------------------------------------------------------------------- greedy_decode


def greedy_last_token_only(step_fn, ids, n, eos_id=None):
    """Feeds only the latest token to the model, as if it had no memory of the rest."""
    ids = ids.clone()
    for _ in range(n):
        token = step_fn(ids[-1:][None])[0].argmax()
        ids = torch.cat([ids, token.reshape(1)])
        if eos_id is not None and int(token) == eos_id:
            break
    return ids


def greedy_new_tokens_only(step_fn, ids, n, eos_id=None):
    """Returns the new tokens without the prompt."""
    seq = ids.clone()
    for _ in range(n):
        token = step_fn(seq[None])[0].argmax()
        seq = torch.cat([seq, token.reshape(1)])
        if eos_id is not None and int(token) == eos_id:
            break
    return seq[len(ids):]


def greedy_ignores_eos(step_fn, ids, n, eos_id=None):
    """Keeps generating after the end-of-text token."""
    for _ in range(n):
        token = step_fn(ids[None])[0].argmax()
        ids = torch.cat([ids, token.reshape(1)])
    return ids


def greedy_drops_eos(step_fn, ids, n, eos_id=None):
    """Stops at end-of-text but leaves the eos token out of the output."""
    for _ in range(n):
        token = step_fn(ids[None])[0].argmax()
        if eos_id is not None and int(token) == eos_id:
            break
        ids = torch.cat([ids, token.reshape(1)])
    return ids


# --------------------------------------------------------------------------- length_penalty


def penalty_without_exponent(length, alpha):
    """Forgets the power alpha."""
    return (5 + length) / 6


def penalty_length_to_alpha(length, alpha):
    """Uses length ** alpha (the plain length normalisation, not GNMT's)."""
    return length ** alpha


def penalty_exponent_on_numerator(length, alpha):
    """Raises only the numerator to the power alpha."""
    return (5 + length) ** alpha / 6


# --------------------------------------------------------------------------- kv_cache_append


def kv_append_on_head_dim(past, new):
    """Concatenates along the last dimension (head_dim) instead of the sequence."""
    if past is None:
        return new
    return torch.cat([past[0], new[0]], dim=-1), torch.cat([past[1], new[1]], dim=-1)


def kv_append_new_first(past, new):
    """Puts the new tokens before the old ones."""
    if past is None:
        return new
    return torch.cat([new[0], past[0]], dim=-2), torch.cat([new[1], past[1]], dim=-2)


def kv_append_no_empty_cache(past, new):
    """Fails on the first step, when there is no cache yet."""
    return torch.cat([past[0], new[0]], dim=-2), torch.cat([past[1], new[1]], dim=-2)


def kv_append_keys_twice(past, new):
    """Appends the keys to both halves of the cache."""
    if past is None:
        return new
    keys = torch.cat([past[0], new[0]], dim=-2)
    return keys, keys



# --------------------------------------------------------------------------- GPT (build the model)

import math as _math  # noqa: E402

import torch.nn.functional as _F  # noqa: E402
from torch import nn as _nn  # noqa: E402


class _GPT(_nn.Module):
    """A correct GPT-2 whose subclasses each break one thing."""
    prenorm, causal, tanh_gelu, scale = True, True, True, True

    def __init__(self, vocab_size, context_length, d_model, n_layers, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.wte, self.wpe = _nn.Embedding(vocab_size, d_model), _nn.Embedding(context_length, d_model)
        self.blocks = _nn.ModuleList()
        for _ in range(n_layers):
            block = _nn.Module()
            block.ln_1, block.ln_2 = _nn.LayerNorm(d_model), _nn.LayerNorm(d_model)
            block.attn, block.mlp = _nn.Module(), _nn.Module()
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(block.attn, name, _nn.Linear(d_model, d_model))
            block.mlp.up, block.mlp.down = _nn.Linear(d_model, 4 * d_model), _nn.Linear(4 * d_model, d_model)
            self.blocks.append(block)
        self.ln_f = _nn.LayerNorm(d_model)
        self.lm_head = _nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def attention(self, a, x):
        b, t, d = x.shape
        heads = lambda y: y.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(a.q_proj(x)), heads(a.k_proj(x)), heads(a.v_proj(x))
        scores = q @ k.transpose(-2, -1) / (_math.sqrt(d // self.n_heads) if self.scale else 1.0)
        if self.causal:
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        return a.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for blk in self.blocks:
            gelu = lambda y: _F.gelu(y, approximate="tanh" if self.tanh_gelu else "none")  # noqa: E731
            if self.prenorm:
                x = x + self.attention(blk.attn, blk.ln_1(x))
                x = x + blk.mlp.down(gelu(blk.mlp.up(blk.ln_2(x))))
            else:
                x = blk.ln_1(x + self.attention(blk.attn, x))
                x = blk.ln_2(x + blk.mlp.down(gelu(blk.mlp.up(x))))
        return self.lm_head(self.ln_f(x))


class GPTPostNorm(_GPT):
    """Puts the norms after the residual additions (the original Transformer's order, not GPT-2's)."""
    prenorm = False


class GPTWithoutMask(_GPT):
    """Lets positions see the future."""
    causal = False


class GPTUnscaledScores(_GPT):
    """Forgets 1/sqrt(head_dim)."""
    scale = False


# --------------------------------------------------------------------------- the experiment: sampling_tail_share


def _zipf_draws(vocab_size, n_samples, seed, replacement=True, power=1.0):
    generator = torch.Generator().manual_seed(seed)
    weights = torch.arange(1, vocab_size + 1, dtype=torch.float64) ** -power
    return torch.multinomial(weights / weights.sum(), n_samples, replacement=replacement, generator=generator)


def tail_share_without_replacement(vocab_size, k, n_samples, seed):
    """Leaves torch.multinomial's default replacement=False: every token can be drawn once only."""
    return (_zipf_draws(vocab_size, n_samples, seed, replacement=False) >= k).double().mean().item()


def tail_share_inside_the_top_k(vocab_size, k, n_samples, seed):
    """Counts the draws inside the top k instead of outside it."""
    return (_zipf_draws(vocab_size, n_samples, seed) < k).double().mean().item()


def tail_share_of_a_uniform_vocabulary(vocab_size, k, n_samples, seed):
    """Forgets the 1 / rank weights and samples every token equally often."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, vocab_size, (n_samples,), generator=generator)
    return (draws >= k).double().mean().item()


def tail_share_off_by_one(vocab_size, k, n_samples, seed):
    """Counts ranks from 1 and keeps "rank > k" on ids, so the k-th token (id k) is counted as inside the top k."""
    return (_zipf_draws(vocab_size, n_samples, seed) > k).double().mean().item()


# --------------------------------------------------------------------------- the derivation: temperature_gradient


def _p_and_mean(logits, temperature):
    p = torch.softmax(logits / temperature, dim=-1)
    return p, (p * logits).sum(dim=-1, keepdim=True)


def temperature_gradient_one_power_of_t(logits, temperature):
    """Stops the chain rule early: divides by T once instead of by T squared."""
    p, mean = _p_and_mean(logits, temperature)
    return p * (mean - logits) / temperature


def temperature_gradient_sign_flipped(logits, temperature):
    """Differentiates z / T as if it were + z / T^2: the likeliest tokens gain as T rises."""
    p, mean = _p_and_mean(logits, temperature)
    return p * (logits - mean) / temperature**2


def temperature_gradient_plain_mean(logits, temperature):
    """Takes the plain average of the logits where the p-weighted average belongs."""
    p = torch.softmax(logits / temperature, dim=-1)
    return p * (logits.mean(dim=-1, keepdim=True) - logits) / temperature**2


def temperature_gradient_naive_softmax(logits, temperature):
    """Takes softmax with exp straight away, so logits near 1000 give inf / inf = nan."""
    e = torch.exp(logits / temperature)
    p = e / e.sum(dim=-1, keepdim=True)
    return p * ((p * logits).sum(dim=-1, keepdim=True) - logits) / temperature**2


def temperature_gradient_one_mean_for_all_rows(logits, temperature):
    """Averages the logits over the whole tensor instead of row by row."""
    p = torch.softmax(logits / temperature, dim=-1)
    return p * ((p * logits).sum() / p.sum() - logits) / temperature**2

# --------------------------------------------------------------------------- mask_tokens


def _chosen(ids, p, generator, special_ids, mask_id):
    specials = torch.tensor(sorted(set(special_ids) | {mask_id}))
    return ~torch.isin(ids, specials) & (torch.rand(ids.shape, generator=generator) < p), specials


def masking_always_masks(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    """Turns every chosen token into [MASK]: no random and no unchanged tokens."""
    chosen, _ = _chosen(ids, p, generator, special_ids, mask_id)
    return torch.where(chosen, torch.full_like(ids, mask_id), ids), torch.where(chosen, ids, torch.full_like(ids, -100))


def masking_labels_everywhere(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    """Keeps the original token as the label at every position, so the loss counts the visible tokens too."""
    chosen, specials = _chosen(ids, p, generator, special_ids, mask_id)
    fate = torch.rand(ids.shape, generator=generator)
    allowed = torch.arange(vocab_size)[~torch.isin(torch.arange(vocab_size), specials)]
    random_ids = allowed[torch.randint(0, len(allowed), ids.shape, generator=generator)]
    inputs = torch.where(chosen & (fate < 0.8), torch.full_like(ids, mask_id), ids)
    return torch.where(chosen & (fate >= 0.8) & (fate < 0.9), random_ids, inputs), ids.clone()


def masking_chooses_specials(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    """Chooses among all positions, [CLS], [SEP] and [PAD] included."""
    chosen = torch.rand(ids.shape, generator=generator) < p
    fate = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(0, vocab_size - len(special_ids), ids.shape, generator=generator)
    inputs = torch.where(chosen & (fate < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (fate >= 0.8) & (fate < 0.9), random_ids, inputs)
    return inputs, torch.where(chosen, ids, torch.full_like(ids, -100))


def masking_random_from_whole_vocabulary(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    """Draws the random replacement from every id, special ones included."""
    chosen, _ = _chosen(ids, p, generator, special_ids, mask_id)
    fate = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, ids.shape, generator=generator)
    inputs = torch.where(chosen & (fate < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (fate >= 0.8) & (fate < 0.9), random_ids, inputs)
    return inputs, torch.where(chosen, ids, torch.full_like(ids, -100))


def masking_labels_only_masks(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    """Puts a label only where [MASK] went in, so the random and unchanged tokens are never predicted."""
    chosen, specials = _chosen(ids, p, generator, special_ids, mask_id)
    fate = torch.rand(ids.shape, generator=generator)
    allowed = torch.arange(vocab_size)[~torch.isin(torch.arange(vocab_size), specials)]
    random_ids = allowed[torch.randint(0, len(allowed), ids.shape, generator=generator)]
    to_mask = chosen & (fate < 0.8)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (fate >= 0.8) & (fate < 0.9), random_ids, inputs)
    return inputs, torch.where(to_mask, ids, torch.full_like(ids, -100))


def masking_edits_in_place(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    """Writes [MASK] into ids itself and then reads the labels from the edited tensor."""
    chosen, specials = _chosen(ids, p, generator, special_ids, mask_id)
    fate = torch.rand(ids.shape, generator=generator)
    allowed = torch.arange(vocab_size)[~torch.isin(torch.arange(vocab_size), specials)]
    random_ids = allowed[torch.randint(0, len(allowed), ids.shape, generator=generator)]
    ids[chosen & (fate < 0.8)] = mask_id
    ids[chosen & (fate >= 0.8) & (fate < 0.9)] = random_ids[chosen & (fate >= 0.8) & (fate < 0.9)]
    return ids, torch.where(chosen, ids, torch.full_like(ids, -100))


def masking_unseeded(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    """Right rule, but draws from the global random state instead of the generator."""
    chosen, specials = _chosen(ids, p, None, special_ids, mask_id)
    fate = torch.rand(ids.shape)
    allowed = torch.arange(vocab_size)[~torch.isin(torch.arange(vocab_size), specials)]
    random_ids = allowed[torch.randint(0, len(allowed), ids.shape)]
    inputs = torch.where(chosen & (fate < 0.8), torch.full_like(ids, mask_id), ids)
    return torch.where(chosen & (fate >= 0.8) & (fate < 0.9), random_ids, inputs), \
        torch.where(chosen, ids, torch.full_like(ids, -100))


WRONG: dict[str, list[Callable]] = {
    "GPT": [GPTPostNorm, GPTWithoutMask, GPTUnscaledScores],
    "softmax_with_temperature": [temperature_multiplies, temperature_overflows, temperature_over_the_batch,
                                 temperature_unchecked],
    "top_k_filter": [top_k_returns_values, top_k_zeroes, top_k_off_by_one, top_k_crashes_on_large_k],
    "top_p_filter": [top_p_drops_the_crossing_token, top_p_forgets_to_unsort, top_p_on_logits],
    "greedy_decode": [greedy_last_token_only, greedy_new_tokens_only, greedy_ignores_eos, greedy_drops_eos],
    "length_penalty": [penalty_without_exponent, penalty_length_to_alpha, penalty_exponent_on_numerator],
    "kv_cache_append": [kv_append_on_head_dim, kv_append_new_first, kv_append_no_empty_cache, kv_append_keys_twice],
    "sampling_tail_share": [tail_share_without_replacement, tail_share_inside_the_top_k,
                            tail_share_of_a_uniform_vocabulary, tail_share_off_by_one],
    "temperature_gradient": [temperature_gradient_one_power_of_t, temperature_gradient_sign_flipped,
                             temperature_gradient_plain_mean, temperature_gradient_naive_softmax,
                             temperature_gradient_one_mean_for_all_rows],
    "mask_tokens": [masking_always_masks, masking_labels_everywhere, masking_chooses_specials,
                    masking_random_from_whole_vocabulary, masking_labels_only_masks, masking_edits_in_place,
                    masking_unseeded],
}
