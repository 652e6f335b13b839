"""Common mistakes in chapter 11's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

# --------------------------------------------------------------------------- arithmetic_intensity


def intensity_without_the_add(m, k, n, bytes_per_value):
    """Counts one FLOP per multiply-add instead of two."""
    return m * k * n / (bytes_per_value * (m * k + k * n + m * n))


def intensity_forgets_the_output(m, k, n, bytes_per_value):
    """Counts the bytes of the inputs only."""
    return 2 * m * k * n / (bytes_per_value * (m * k + k * n))


def intensity_in_values(m, k, n, bytes_per_value):
    """FLOPs per value moved, not per byte."""
    return 2 * m * k * n / (m * k + k * n + m * n)


# --------------------------------------------------------------------------- gather_blocks


def gather_sorted_blocks(pool, block_table, length):
    """Reads the blocks in pool order instead of the table's order."""
    blocks = pool[torch.as_tensor(sorted(int(b) for b in block_table))]
    n, heads, size, dim = blocks.shape
    return blocks.permute(1, 0, 2, 3).reshape(heads, n * size, dim)[:, :length]


def gather_without_moving_heads(pool, block_table, length):
    """Reshapes (n_blocks, heads, block_size, dim) directly: tokens of different heads get mixed."""
    blocks = pool[torch.as_tensor(block_table, dtype=torch.long)]
    n, heads, size, dim = blocks.shape
    return blocks.reshape(heads, n * size, dim)[:, :length]


def gather_whole_blocks(pool, block_table, length):
    """Forgets to cut the partly filled last block."""
    blocks = pool[torch.as_tensor(block_table, dtype=torch.long)]
    n, heads, size, dim = blocks.shape
    return blocks.permute(1, 0, 2, 3).reshape(heads, n * size, dim)


# --------------------------------------------------------------------------- paged_attention


def _gather(pool, table, length):
    blocks = pool[torch.as_tensor(table, dtype=torch.long)]
    n, heads, size, dim = blocks.shape
    return blocks.permute(1, 0, 2, 3).reshape(heads, n * size, dim)[:, :length]


def paged_attention_reads_padding(q, k_pool, v_pool, block_table, length):
    """Attends over whole blocks, including the empty slots after the last token."""
    k = _gather(k_pool, block_table, 10 ** 9)
    v = _gather(v_pool, block_table, 10 ** 9)
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v


def paged_attention_unscaled(q, k_pool, v_pool, block_table, length):
    """Forgets the 1 / sqrt(head_dim)."""
    k, v = _gather(k_pool, block_table, length), _gather(v_pool, block_table, length)
    q_len = q.shape[-2]
    allowed = torch.ones(q_len, length, dtype=torch.bool).tril(diagonal=length - q_len)
    return torch.softmax((q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf")), -1) @ v


def paged_attention_unshifted_mask(q, k_pool, v_pool, block_table, length):
    """A causal mask that starts at key 0: the queries are the LAST positions, not the first."""
    k, v = _gather(k_pool, block_table, length), _gather(v_pool, block_table, length)
    q_len = q.shape[-2]
    allowed = torch.ones(q_len, length, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, -1) @ v


# --------------------------------------------------------------------------- left_pad


def right_pad(prompts, pad_id):
    """Pads after the prompt: the last column is then a pad for short prompts."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, :len(p)] = torch.tensor(p)
        mask[row, :len(p)] = True
    return ids, mask


def left_pad_with_zeros(prompts, pad_id):
    """Pads with 0 whatever pad_id is."""
    longest = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), longest), dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, longest - len(p):] = torch.tensor(p)
        mask[row, longest - len(p):] = True
    return ids, mask


def left_pad_mask_by_value(prompts, pad_id):
    """Marks real tokens as 'not the pad id': a prompt that contains the pad id loses tokens."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, longest - len(p):] = torch.tensor(p)
    return ids, ids != pad_id


# --------------------------------------------------------------------------- continuous_finish_steps


def static_finish_steps(new_tokens, max_batch):
    """Static batching: a new batch starts only when the whole previous one has finished."""
    finish, step = [0] * len(new_tokens), 0
    for start in range(0, len(new_tokens), max_batch):
        group = range(start, min(start + max_batch, len(new_tokens)))
        for i in group:
            finish[i] = step + new_tokens[i]
        step += max(new_tokens[i] for i in group)
    return finish


def continuous_refills_a_step_late(new_tokens, max_batch):
    """Checks for free slots before removing the requests that just finished: a slot is refilled a step late."""
    finish, running, waiting, step = [0] * len(new_tokens), {}, list(range(len(new_tokens))), 0
    while waiting or running:
        while waiting and len(running) < max_batch:
            r = waiting.pop(0)
            running[r] = new_tokens[r]
        running = {r: left for r, left in running.items() if left > 0}
        if not running:
            continue
        step += 1
        for r in running:
            running[r] -= 1
            if running[r] == 0:
                finish[r] = step
    return finish


def continuous_counts_from_zero(new_tokens, max_batch):
    """Steps counted from 0: every finish is one too early."""
    finish, running, waiting, step = [0] * len(new_tokens), {}, list(range(len(new_tokens))), 0
    while waiting or running:
        while waiting and len(running) < max_batch:
            r = waiting.pop(0)
            running[r] = new_tokens[r]
        for r in list(running):
            running[r] -= 1
            if running[r] == 0:
                finish[r] = step
                del running[r]
        step += 1
    return finish


# --------------------------------------------------------------------------- absmax_quantize


def absmax_over_128(w, bits, dim):
    """Divides max|w| by 2^(bits-1) = 128: the range -127..127 is never filled."""
    absmax = w.abs().max() if dim is None else w.abs().amax(dim=[d for d in range(w.dim()) if d != dim], keepdim=True)
    scale = absmax / 2 ** (bits - 1)
    return torch.round(w / scale).to(torch.int8), scale


def absmax_truncates(w, bits, dim):
    """Truncates towards zero instead of rounding."""
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().max() if dim is None else w.abs().amax(dim=[d for d in range(w.dim()) if d != dim], keepdim=True)
    scale = absmax / qmax
    return (w / scale).to(torch.int8), scale


def absmax_one_scale_always(w, bits, dim):
    """Ignores dim: one scale for the whole tensor even when one per row is asked for."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().max() / qmax
    return torch.round(w / scale).to(torch.int8), scale


def absmax_per_column(w, bits, dim):
    """Takes the maximum along dim instead of over the other dimensions: one scale per column."""
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().max() if dim is None else w.abs().amax(dim=dim, keepdim=True)
    scale = absmax / qmax
    return torch.round(w / scale).to(torch.int8), scale


# --------------------------------------------------------------------------- zero_point_quantize


def zero_point_without_zero(w, bits):
    """Uses [w.min(), w.max()] even when it does not contain 0."""
    levels = 2 ** bits - 1
    low, high = w.min(), w.max()
    scale = (high - low) / levels
    zero = torch.round(-low / scale)
    return (torch.round(w / scale) + zero).clamp(0, levels).to(torch.uint8), scale, zero


def zero_point_unrounded(w, bits):
    """A fractional zero point: 0.0 no longer maps to an integer level."""
    levels = 2 ** bits - 1
    low, high = w.min().clamp(max=0), w.max().clamp(min=0)
    scale = (high - low) / levels
    zero = -low / scale
    return torch.round(w / scale + zero).clamp(0, levels).to(torch.uint8), scale, zero


def zero_point_unclamped_wraps(w, bits):
    """Casts to uint8 without clamping, and divides by 2^bits: values wrap around."""
    low, high = w.min().clamp(max=0), w.max().clamp(min=0)
    scale = (high - low) / 2 ** bits
    zero = torch.round(-low / scale)
    return (torch.round(w / scale) + zero).to(torch.uint8), scale, zero


# --------------------------------------------------------------------------- PagedKVCache (build the class)


class _Cache:
    """A correct paged cache whose subclasses each break one thing (free blocks are taken from the end here)."""

    def __init__(self, num_blocks, block_size, n_heads, head_dim):
        shape = (num_blocks, n_heads, block_size, head_dim)
        self.k_pool, self.v_pool = torch.zeros(shape), torch.zeros(shape)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free = list(range(num_blocks))[::-1]
        self.refcount = [0] * num_blocks
        self.tables, self.lengths = {}, {}

    @property
    def blocks_in_use(self):
        return self.num_blocks - len(self.free)

    def _take_block(self):
        if not self.free:
            raise MemoryError(f"all {self.num_blocks} blocks are in use")
        block = self.free.pop()
        self.refcount[block] = 1
        return block

    def _release(self, block):
        self.refcount[block] -= 1
        if self.refcount[block] == 0:
            self.free.append(block)

    def _own_last_block(self, seq):
        table = self.tables[seq]
        if self.refcount[table[-1]] > 1:
            copy = self._take_block()
            self.k_pool[copy], self.v_pool[copy] = self.k_pool[table[-1]], self.v_pool[table[-1]]
            self._release(table[-1])
            table[-1] = copy

    def add_sequence(self, seq):
        self.tables[seq], self.lengths[seq] = [], 0

    def append(self, seq, k, v):
        for t in range(k.shape[1]):
            slot = self.lengths[seq] % self.block_size
            if slot == 0:
                self.tables[seq].append(self._take_block())
            else:
                self._own_last_block(seq)
            block = self.tables[seq][-1]
            self.k_pool[block, :, slot], self.v_pool[block, :, slot] = k[:, t], v[:, t]
            self.lengths[seq] += 1

    def gather(self, seq):
        n, table = self.lengths[seq], self.tables[seq]
        return (torch.cat([self.k_pool[b] for b in table], 1)[:, :n],
                torch.cat([self.v_pool[b] for b in table], 1)[:, :n])

    def fork(self, parent, child):
        self.tables[child], self.lengths[child] = list(self.tables[parent]), self.lengths[parent]
        for block in self.tables[child]:
            self.refcount[block] += 1

    def free_sequence(self, seq):
        for block in self.tables.pop(seq):
            self._release(block)
        del self.lengths[seq]


class CacheBlockPerAppend(_Cache):
    """Counts slots from the start of each append call: every call opens a new block, even when the last one has
    room."""

    def append(self, seq, k, v):
        for t in range(k.shape[1]):
            if t % self.block_size == 0:
                self.tables[seq].append(self._take_block())
            block, slot = self.tables[seq][-1], t % self.block_size
            self.k_pool[block, :, slot], self.v_pool[block, :, slot] = k[:, t], v[:, t]
        self.lengths[seq] += k.shape[1]


class CacheGatherWholeBlocks(_Cache):
    """Forgets to cut the last, partly filled block: the empty slots come back as tokens."""

    def gather(self, seq):
        table = self.tables[seq]
        return torch.cat([self.k_pool[b] for b in table], 1), torch.cat([self.v_pool[b] for b in table], 1)


class CacheFreeKeepsBlocks(_Cache):
    """free_sequence forgets the sequence but never gives its blocks back."""

    def free_sequence(self, seq):
        del self.tables[seq], self.lengths[seq]


class CacheGrowsThePool(_Cache):
    """When the free list is empty it quietly adds a block to the pool instead of refusing."""

    def _take_block(self):
        if not self.free:
            extra = torch.zeros_like(self.k_pool[:1])
            self.k_pool, self.v_pool = torch.cat([self.k_pool, extra]), torch.cat([self.v_pool, extra])
            self.refcount.append(0)
            self.free.append(self.num_blocks)
            self.num_blocks += 1
        return super()._take_block()


class CacheForkCopiesEverything(_Cache):
    """fork copies every block of the parent into new ones: correct contents, no memory saved."""

    def fork(self, parent, child):
        self.add_sequence(child)
        self.lengths[child] = self.lengths[parent]
        for block in self.tables[parent]:
            copy = self._take_block()
            self.k_pool[copy], self.v_pool[copy] = self.k_pool[block], self.v_pool[block]
            self.tables[child].append(copy)


class CacheFreeIgnoresSharing(_Cache):
    """free_sequence returns every block to the pool, even those a forked sequence still uses."""

    def free_sequence(self, seq):
        for block in self.tables.pop(seq):
            if block not in self.free:
                self.refcount[block] = 0
                self.free.append(block)
        del self.lengths[seq]


class CacheWithoutCopyOnWrite(_Cache):
    """Shares blocks on fork but writes into a shared, partly filled block: the two sequences overwrite each other."""

    def _own_last_block(self, seq):
        pass


# --------------------------------------------------------------------------- speculative_accept


def _draw(dist, u):
    return min(int((dist.cumsum(0) <= u).sum()), dist.shape[0] - 1)


def _speculative(p, q, draft, u, residual, keep_going=False, extra_row=None, bonus=True, ratio=None):
    """Speculative acceptance with one piece swappable; the defaults are the correct rule."""
    k, out = q.shape[0], []
    for i in range(k):
        x = int(draft[i])
        r = ratio(p[i, x], q[i, x]) if ratio else p[i, x] / q[i, x]
        if u[i] < r:
            out.append(x)
            continue
        out.append(_draw(residual(p[i], q[i]), u[k]))
        if not keep_going:
            return out
    if bonus:
        out.append(_draw(p[k if extra_row is None else extra_row(k)], u[k]))
    return out


def _normalised(p, q):
    r = (p - q).clamp(min=0)
    return r / r.sum()


def speculative_residual_is_p(p, q, draft, u):
    """After a rejection draws from the target's p instead of max(0, p - q): p(x) comes out too often."""
    return _speculative(p, q, draft, u, residual=lambda pi, qi: pi)


def speculative_residual_unnormalised(p, q, draft, u):
    """Draws from max(0, p - q) without dividing by its sum: the cumulative sums never reach 1."""
    return _speculative(p, q, draft, u, residual=lambda pi, qi: (pi - qi).clamp(min=0))


def speculative_residual_reversed(p, q, draft, u):
    """Draws from max(0, q - p): the tokens the draft over-proposed, not the ones it missed."""
    return _speculative(p, q, draft, u, residual=lambda pi, qi: _normalised(qi, pi))


def speculative_ratio_inverted(p, q, draft, u):
    """Keeps a draft when u < q / p instead of p / q."""
    return _speculative(p, q, draft, u, residual=_normalised, ratio=lambda pi, qi: qi / pi)


def speculative_checks_every_draft(p, q, draft, u):
    """Goes on checking the drafts after a rejection (and replaces each rejected one)."""
    return _speculative(p, q, draft, u, residual=_normalised, keep_going=True)


def speculative_no_bonus_token(p, q, draft, u):
    """Emits nothing more when every draft is kept: the target's last row goes unused."""
    return _speculative(p, q, draft, u, residual=_normalised, bonus=False)


def speculative_bonus_from_last_draft_row(p, q, draft, u):
    """Draws the extra token from p[k - 1], the row of the last draft, instead of p[k]."""
    return _speculative(p, q, draft, u, residual=_normalised, extra_row=lambda k: k - 1)


# --------------------------------------------------------------------------- online_attention


def _tiles(q, k, v, block_k, rescale_acc=True, use_max=True, scale=True):
    factor = 1 / math.sqrt(q.shape[-1]) if scale else 1.0
    m = torch.full(q.shape[:-1], float("-inf"))
    l = torch.zeros(q.shape[:-1])
    acc = torch.zeros(*q.shape[:-1], v.shape[-1])
    for j in range(0, k.shape[-2], block_k):
        s = q @ k[..., j:j + block_k, :].transpose(-2, -1) * factor
        new_m = torch.maximum(m, s.amax(-1)) if use_max else torch.zeros_like(m)
        w = torch.exp(s - new_m[..., None])
        c = torch.exp(m - new_m) if use_max else torch.ones_like(m)
        l = l * c + w.sum(-1)
        acc = (acc * c[..., None] if rescale_acc else acc) + w @ v[..., j:j + block_k, :]
        m = new_m
    return acc / l[..., None]


def online_forgets_to_rescale_values(q, k, v, block_k):
    """Rescales the running sum l when the maximum grows, but not the running weighted values acc."""
    return _tiles(q, k, v, block_k, rescale_acc=False)


def online_without_maximum(q, k, v, block_k):
    """Adds exp(score) without subtracting a running maximum: large scores overflow to inf."""
    return _tiles(q, k, v, block_k, use_max=False)


def online_unscaled(q, k, v, block_k):
    """Forgets the 1 / sqrt(d) of the scores."""
    return _tiles(q, k, v, block_k, scale=False)


def online_score_matrix(q, k, v, block_k):
    """Right answer, but with the whole (q_len, k_len) score matrix and torch.softmax: no tiles at all."""
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v


def online_two_passes(q, k, v, block_k):
    """Tile by tile, but two passes over the keys: the maximum and sum first, then the scores again for the
    weighted values (every score computed twice)."""
    factor = 1 / math.sqrt(q.shape[-1])
    m = torch.full(q.shape[:-1], float("-inf"))
    l = torch.zeros(q.shape[:-1])
    for j in range(0, k.shape[-2], block_k):
        s = q @ k[..., j:j + block_k, :].transpose(-2, -1) * factor
        new_m = torch.maximum(m, s.amax(-1))
        l = l * torch.exp(m - new_m) + torch.exp(s - new_m[..., None]).sum(-1)
        m = new_m
    out = torch.zeros(*q.shape[:-1], v.shape[-1])
    for j in range(0, k.shape[-2], block_k):
        s = q @ k[..., j:j + block_k, :].transpose(-2, -1) * factor
        out = out + torch.exp(s - m[..., None]) / l[..., None] @ v[..., j:j + block_k, :]
    return out


def online_keeps_every_tile(q, k, v, block_k):
    """One pass of matrix products, but every tile's scores are kept in a list until the end."""
    factor = 1 / math.sqrt(q.shape[-1])
    tiles = [q @ k[..., j:j + block_k, :].transpose(-2, -1) * factor for j in range(0, k.shape[-2], block_k)]
    m = torch.stack([t.amax(-1) for t in tiles]).amax(0)
    weights = [torch.exp(t - m[..., None]) for t in tiles]
    l = sum(w.sum(-1) for w in weights)
    return sum(w @ v[..., j * block_k:(j + 1) * block_k, :] for j, w in enumerate(weights)) / l[..., None]


WRONG: dict[str, list[Callable]] = {
    "PagedKVCache": [CacheBlockPerAppend, CacheGatherWholeBlocks, CacheFreeKeepsBlocks, CacheGrowsThePool,
                     CacheForkCopiesEverything, CacheFreeIgnoresSharing, CacheWithoutCopyOnWrite],
    "arithmetic_intensity": [intensity_without_the_add, intensity_forgets_the_output, intensity_in_values],
    "gather_blocks": [gather_sorted_blocks, gather_without_moving_heads, gather_whole_blocks],
    "paged_attention": [paged_attention_reads_padding, paged_attention_unscaled, paged_attention_unshifted_mask],
    "left_pad": [right_pad, left_pad_with_zeros, left_pad_mask_by_value],
    "continuous_finish_steps": [static_finish_steps, continuous_refills_a_step_late, continuous_counts_from_zero],
    "absmax_quantize": [absmax_over_128, absmax_truncates, absmax_one_scale_always, absmax_per_column],
    "zero_point_quantize": [zero_point_without_zero, zero_point_unrounded, zero_point_unclamped_wraps],
    "speculative_accept": [speculative_residual_is_p, speculative_residual_unnormalised, speculative_residual_reversed,
                           speculative_ratio_inverted, speculative_checks_every_draft, speculative_no_bonus_token,
                           speculative_bonus_from_last_draft_row],
    "online_attention": [online_forgets_to_rescale_values, online_without_maximum, online_unscaled,
                         online_score_matrix, online_two_passes, online_keeps_every_tile],
}
