"""Attention that never holds the whole score matrix: the online softmax and tiled attention (chapter 11).

Plain attention forms the ``(q_len, k_len)`` score matrix, softmaxes it and multiplies by the values. For long
sequences that matrix is the largest thing in memory. The **online softmax** reads scores a few at a time and keeps
only a running maximum ``m`` and a running sum ``l`` of ``exp(score - m)``; when a larger maximum arrives, the sum so
far is rescaled by ``exp(m_old - m_new)``. Applied to attention (FlashAttention's idea), the weighted sum of values is
rescaled the same way, so queries and keys can be visited in tiles of ``block_q x block_k`` scores, and tiles that
the causal mask (or a sliding window) hides entirely are never computed.

Masks follow the course's convention (:func:`~llmcourse.transformer.attention.causal_mask`): queries are the last
``q_len`` of ``k_len`` positions, so query ``i`` sits at position ``k_len - q_len + i``.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode


def online_softmax_steps(scores: list[float]) -> list[tuple[float, float]]:
    """The running (maximum, sum of exp(score - maximum)) after each score, read one at a time."""
    m, total, steps = -math.inf, 0.0, []
    for s in scores:
        new_m = max(m, s)
        total = total * math.exp(m - new_m) + math.exp(s - new_m)
        m = new_m
        steps.append((m, total))
    return steps


def online_softmax(scores: list[float]) -> list[float]:
    """Softmax of ``scores`` from one pass of running statistics and one pass to normalise."""
    m, total = online_softmax_steps(scores)[-1]
    return [math.exp(s - m) / total for s in scores]


def allowed(q_len: int, k_len: int, causal: bool = False, window: int | None = None,
            rows: slice = slice(None), cols: slice = slice(None)) -> Tensor:
    """Bool (q_len, k_len): True where a query may attend to a key. ``window``: only the ``window`` latest keys
    up to the query's own position (the query included). ``rows``/``cols``: just that block of the matrix."""
    if window is not None and window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    query_pos = torch.arange(k_len - q_len, k_len)[rows, None]
    key_pos = torch.arange(k_len)[None, cols]
    ok = torch.ones(query_pos.shape[0], key_pos.shape[1], dtype=torch.bool)
    if causal or window is not None:
        ok &= key_pos <= query_pos
    if window is not None:
        ok &= key_pos > query_pos - window
    return ok


def naive_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, window: int | None = None) -> Tensor:
    """softmax(q kᵀ / √d, masked) v with the full (…, q_len, k_len) score matrix in memory."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed(q.shape[-2], k.shape[-2], causal, window).to(q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def tile_plan(q_len: int, k_len: int, block_q: int, block_k: int, causal: bool = False,
              window: int | None = None) -> Tensor:
    """Int (query tiles, key tiles): 0 = skipped (every score masked), 1 = partly masked, 2 = fully computed."""
    nq, nk = -(-q_len // block_q), -(-k_len // block_k)
    plan = torch.zeros(nq, nk, dtype=torch.long)
    for i in range(nq):
        for j in range(nk):
            tile = allowed(q_len, k_len, causal, window, slice(i * block_q, (i + 1) * block_q),
                           slice(j * block_k, (j + 1) * block_k))
            plan[i, j] = 2 if bool(tile.all()) else int(bool(tile.any()))
    return plan


def tiled_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, block_q: int = 64, block_k: int = 64,
                    window: int | None = None, stats: dict | None = None) -> Tensor:
    """Attention by tiles with the online softmax: equal to :func:`naive_attention` (and to
    ``F.scaled_dot_product_attention``) without forming more than a (…, block_q, block_k) block of scores.

    q (…, q_len, d), k and v (…, k_len, d). Tiles that the mask hides entirely are skipped. If ``stats`` is a dict,
    it receives ``tiles_computed``, ``tiles_total`` and ``largest_scores`` (elements of the largest score block).
    """
    if block_q < 1 or block_k < 1:
        raise ValueError(f"tile sizes must be positive, got block_q={block_q}, block_k={block_k}")
    q_len, k_len, scale = q.shape[-2], k.shape[-2], 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    computed = total = largest = 0
    for i0 in range(0, q_len, block_q):
        qi = q[..., i0:i0 + block_q, :] * scale
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype, device=q.device)   # running maximum per query
        l = torch.zeros_like(m)                                                          # running sum of exp
        acc = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)  # running weighted values
        for j0 in range(0, k_len, block_k):
            total += 1
            tile_ok = allowed(q_len, k_len, causal, window, slice(i0, i0 + block_q),
                              slice(j0, j0 + block_k)).to(q.device)          # only this tile's mask is formed
            if not bool(tile_ok.any()):
                continue
            computed += 1
            s = qi @ k[..., j0:j0 + block_k, :].transpose(-2, -1)                         # (…, bq, bk)
            largest = max(largest, s.numel())
            s = s.masked_fill(~tile_ok, float("-inf"))
            new_m = torch.maximum(m, s.amax(-1))
            safe_m = torch.where(torch.isinf(new_m), torch.zeros_like(new_m), new_m)    # rows with nothing yet
            p = torch.exp(s - safe_m[..., None])
            correction = torch.exp(m - safe_m)
            l = l * correction + p.sum(-1)
            acc = acc * correction[..., None] + p @ v[..., j0:j0 + block_k, :]
            m = new_m
        out[..., i0:i0 + block_q, :] = acc / l[..., None]
    if stats is not None:
        stats.update(tiles_computed=computed, tiles_total=total, largest_scores=largest)
    return out


class _AllocationCounter(TorchDispatchMode):
    """Sees every tensor an operation creates: its bytes while it lives, the peak of the living, the largest one."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.largest = 0
        self.owners: dict[int, int] = {}      # storage address -> tensors alive that use it

    def _release(self, address: int, nbytes: int) -> None:
        self.owners[address] -= 1
        if self.owners[address] == 0:
            del self.owners[address]
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in [*args, *(kwargs or {}).values()] if isinstance(a, Tensor)}
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                address, nbytes = storage.data_ptr(), storage.nbytes()
                if address in inputs and address not in self.owners:    # a view or an in-place result of an input
                    continue
                if address not in self.owners:
                    self.owners[address] = 0
                    self.live += nbytes
                    self.peak, self.largest = max(self.peak, self.live), max(self.largest, nbytes)
                self.owners[address] += 1
                weakref.finalize(t, self._release, address, nbytes)
        return out


def memory_use(fn, *args, **kwargs) -> dict[str, int]:
    """Bytes that ``fn(*args, **kwargs)`` allocates, counted by intercepting every tensor operation
    (``torch.utils._python_dispatch.TorchDispatchMode``): ``peak`` (most bytes alive at once, the result
    included, the inputs not) and ``largest`` (the largest single tensor created)."""
    counter = _AllocationCounter()
    with counter:
        result = fn(*args, **kwargs)
    peak, largest = counter.peak, counter.largest
    del result
    return {"peak": peak, "largest": largest}


def windowed_forward(model: nn.Module, ids: Tensor, window: int | None) -> Tensor:
    """A course GPT's logits (batch, seq, vocab) when every layer attends only to the ``window`` latest tokens
    (sliding-window attention); ``None`` is the model's full causal attention."""
    seq = ids.shape[1]
    mask = allowed(seq, seq, causal=True, window=window).to(ids.device)
    x = model.wpe(model.wte(ids))
    for block in model.blocks:
        x = x + block.attn(block.ln_1(x), mask=mask)
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.ln_f(x))


@torch.no_grad()
def windowed_loss(model: nn.Module, ids: Tensor, window: int | None, context: int, n_windows: int) -> float:
    """Mean next-token cross-entropy (nats) over ``n_windows`` non-overlapping stretches of ``context`` tokens of
    ``ids``, with sliding-window attention of ``window`` tokens in every layer."""
    model.eval()
    starts = torch.arange(n_windows) * context
    x = torch.stack([ids[s:s + context] for s in starts])
    y = torch.stack([ids[s + 1:s + context + 1] for s in starts])
    logits = windowed_forward(model, x, window)
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)))


__all__ = ["allowed", "naive_attention", "online_softmax", "online_softmax_steps", "memory_use",
           "tile_plan", "tiled_attention", "windowed_forward", "windowed_loss"]
