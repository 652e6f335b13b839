"""Tests of chapter 11's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub, and are quick and deterministic."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from check_contract import contract_tests
from wrong_solutions.ch11 import _Cache as _Build11  # the correct cache the wrong ones break

from llmcourse.grading.chapters.ch11 import chapter
from llmcourse.grading.checks import run_checks
from llmcourse.inference import batching, costs, paged_cache, quantization, speculative, tiled_attention

# --------------------------------------------------------------------------- correct solutions, written here


def _arithmetic_intensity(m, k, n, bytes_per_value):
    return (m * n * (2 * k)) / float((m * k + k * n + m * n) * bytes_per_value)


def _gather_blocks(pool, block_table, length):
    return torch.cat([pool[int(b)] for b in block_table], dim=1)[:, :length]


def _paged_attention(q, k_pool, v_pool, block_table, length):
    k, v = _gather_blocks(k_pool, block_table, length), _gather_blocks(v_pool, block_table, length)
    q_len = q.shape[1]
    rows = []
    for i in range(q_len):  # one query at a time, each over the keys it may see
        visible = length - q_len + i + 1
        rows.append(F.scaled_dot_product_attention(q[:, i:i + 1], k[:, :visible], v[:, :visible]))
    return torch.cat(rows, dim=1)


def _left_pad(prompts, pad_id):
    width = max(map(len, prompts))
    ids = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    mask = [[False] * (width - len(p)) + [True] * len(p) for p in prompts]
    return torch.tensor(ids), torch.tensor(mask)


def _continuous_finish_steps(new_tokens, max_batch):
    # event by event: each slot is a queue; a request goes to the slot that frees first
    free_at = [0] * max_batch
    finish = []
    for n in new_tokens:
        slot = min(range(max_batch), key=lambda s: free_at[s])
        free_at[slot] += n
        finish.append(free_at[slot])
    return finish


def _absmax_quantize(w, bits, dim):
    top = 2 ** (bits - 1) - 1
    if dim is None:
        scale = w.abs().max() / top
    else:
        scale = w.abs().transpose(0, dim).reshape(w.shape[dim], -1).max(dim=1).values / top
        scale = scale.reshape([-1 if d == dim else 1 for d in range(w.dim())])
    return torch.round(w / scale).to(torch.int8), scale


def _zero_point_quantize(w, bits):
    low, high = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = (high - low) / (2 ** bits - 1)
    zero = round(-low / scale)
    return torch.clamp(torch.round(w / scale) + zero, 0, 2 ** bits - 1).to(torch.uint8), scale, zero


def _speculative_accept(p, q, draft, u):
    # written with the rows as NumPy-free Python floats: kept drafts, then one draw by inverse CDF with u[k]
    k, vocab = q.shape
    out, dist = [], p[k].tolist()
    for i in range(k):
        x = int(draft[i])
        if float(u[i]) * float(q[i, x]) < float(p[i, x]):
            out.append(x)
            continue
        residual = [max(a - b, 0.0) for a, b in zip(p[i].tolist(), q[i].tolist())]
        dist = [r / sum(residual) for r in residual]
        break
    total, token = 0.0, vocab - 1
    for j, w in enumerate(dist):
        total += w
        if float(u[k]) < total:
            token = j
            break
    return out + [token]


def _online_attention(q, k, v, block_k):
    # the log-sum-exp form: keep m and log(l) instead of l, and acc already divided by l
    scale = q.shape[-1] ** -0.5
    lse = torch.full(q.shape[:-1], float("-inf"))
    out = torch.zeros(*q.shape[:-1], v.shape[-1])
    for kt, vt in zip(k.split(block_k, dim=-2), v.split(block_k, dim=-2)):
        s = torch.matmul(q, kt.transpose(-1, -2)) * scale
        tile_lse = torch.logsumexp(s, dim=-1)
        new_lse = torch.logaddexp(lse, tile_lse)
        out = out * torch.exp(lse - new_lse)[..., None] + torch.exp(s - new_lse[..., None]) @ vt
        lse = new_lse
    return out


CORRECT = {
    "speculative_accept": _speculative_accept,
    "online_attention": _online_attention,
    "PagedKVCache": _Build11,
    "arithmetic_intensity": _arithmetic_intensity,
    "gather_blocks": _gather_blocks,
    "paged_attention": _paged_attention,
    "left_pad": _left_pad,
    "continuous_finish_steps": _continuous_finish_steps,
    "absmax_quantize": _absmax_quantize,
    "zero_point_quantize": _zero_point_quantize,
}


class _PackageCache:
    """The package's cache (one layer here) behind the exercise's interface: k and v of shape (heads, t, dim)."""

    def __init__(self, num_blocks, block_size, n_heads, head_dim):
        self._cache = paged_cache.PagedKVCache(num_blocks, block_size, n_heads, head_dim, n_layers=1)
        self.tables = self._cache.tables
        self.add_sequence, self.fork, self.free_sequence = (self._cache.add_sequence, self._cache.fork,
                                                            self._cache.free_sequence)

    k_pool = property(lambda self: self._cache.k_pool[0])
    v_pool = property(lambda self: self._cache.v_pool[0])
    blocks_in_use = property(lambda self: self._cache.blocks_in_use)

    def append(self, seq, k, v):
        self._cache.append(seq, k[None], v[None])

    def gather(self, seq):
        return self._cache.gather(seq, 0)


def _package_finish_steps(new_tokens, max_batch):
    result = batching.simulate([batching.Request(0.0, n) for n in new_tokens], max_batch, "continuous", (1.0, 0.0))
    return [round(t) for t in result["finish"]]


def _package_speculative_accept(p, q, draft, u):
    k, out = q.shape[0], []
    dist = p[k]
    for i in range(k):
        x = int(draft[i])
        if u[i] < speculative.accept_probability(p[i, x], q[i, x]):
            out.append(x)
        else:
            dist = speculative.residual_distribution(p[i], q[i])
            break
    return out + [min(int(torch.searchsorted(dist.cumsum(0), u[k], right=True)), dist.shape[0] - 1)]


PACKAGE = {
    "speculative_accept": _package_speculative_accept,
    "online_attention": lambda q, k, v, block_k: tiled_attention.tiled_attention(q, k, v, block_q=q.shape[-2],
                                                                                  block_k=block_k),
    "PagedKVCache": _PackageCache,
    "arithmetic_intensity": costs.arithmetic_intensity,
    "gather_blocks": paged_cache.gather_blocks,
    "paged_attention": paged_cache.paged_attention,
    "left_pad": batching.left_pad,
    "continuous_finish_steps": _package_finish_steps,
    "absmax_quantize": quantization.absmax_quantize,
    "zero_point_quantize": lambda w, bits: quantization.zero_point_quantize(w, bits),
}


def _stub(*args, **kwargs):
    raise NotImplementedError


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "11", CORRECT, PACKAGE, at_least=10)


def test_an_untouched_stub_fails_every_check():
    results = run_checks(chapter, {name: _stub for name in CORRECT})
    assert results and not any(r.passed for r in results)


def test_static_batching_is_told_apart_from_continuous():
    failed = [r.name for r in run_checks(chapter, {"continuous_finish_steps": lambda t, b: [
        sum(max(t[j:j + b]) for j in range(0, i - i % b, b)) + t[i] for i in range(len(t))]},
        "continuous_finish_steps") if not r.passed]
    assert failed == ["continuous_by_hand", "continuous_matches_the_simulator"]
