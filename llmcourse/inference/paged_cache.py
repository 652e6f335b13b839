"""The KV cache as memory to manage: a paged cache (chapter 11).

A contiguous cache gives each request one slab of ``max_len`` slots, reserved up front because nobody knows how
long the answer will be. A paged cache (vLLM's PagedAttention) cuts the memory into fixed-size *blocks* of
``block_size`` token slots, hands a sequence a new block only when its last one is full, and keeps a *block
table* per sequence: the list of physical blocks that hold its tokens in order. Sequences that share a prompt
prefix can point at the same physical blocks (a reference count says how many do); the first write into a
shared, partly filled block copies it first (copy on write).

Attention reads the keys and values through the block table. Gathering them gives exactly the tensors a
contiguous cache holds, so the attention is exactly the same.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PagedKVCache:
    """Keys and values of many sequences in one pool of blocks, for every layer of a model.

    ``k_pool`` and ``v_pool`` have shape (n_layers, num_blocks, n_heads, block_size, head_dim).
    """

    def __init__(self, num_blocks: int, block_size: int, n_heads: int, head_dim: int, n_layers: int = 1,
                 dtype: torch.dtype = torch.float32):
        if min(num_blocks, block_size, n_heads, head_dim, n_layers) < 1:
            raise ValueError("num_blocks, block_size, n_heads, head_dim and n_layers must all be >= 1")
        shape = (n_layers, num_blocks, n_heads, block_size, head_dim)
        self.k_pool, self.v_pool = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        self.block_size, self.num_blocks = block_size, num_blocks
        self.free: list[int] = list(range(num_blocks))
        self.refcount = [0] * num_blocks
        self.tables: dict[str, list[int]] = {}
        self.lengths: dict[str, int] = {}

    # ------------------------------------------------------------------ bookkeeping
    def _take_block(self) -> int:
        if not self.free:
            raise MemoryError(f"the cache's {self.num_blocks} blocks are all in use: finish or evict a sequence")
        block = self.free.pop(0)
        self.refcount[block] = 1
        return block

    def _release(self, block: int) -> None:
        self.refcount[block] -= 1
        if self.refcount[block] == 0:
            self.free.append(block)

    def add_sequence(self, seq: str) -> None:
        """Start an empty sequence (no blocks yet)."""
        if seq in self.tables:
            raise ValueError(f"sequence {seq!r} already exists")
        self.tables[seq], self.lengths[seq] = [], 0

    def fork(self, parent: str, child: str) -> None:
        """A new sequence that shares every block of ``parent`` (its prefix) without copying it."""
        self.add_sequence(child)
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        for block in self.tables[child]:
            self.refcount[block] += 1

    def free_sequence(self, seq: str) -> None:
        """Forget a finished sequence; blocks nobody else uses go back to the free list."""
        for block in self.tables.pop(seq):
            self._release(block)
        del self.lengths[seq]

    @property
    def blocks_in_use(self) -> int:
        return self.num_blocks - len(self.free)

    # ------------------------------------------------------------------ writing and reading
    def append(self, seq: str, k: Tensor, v: Tensor) -> None:
        """Append keys and values (n_layers, n_heads, t, head_dim) of ``t`` new tokens to ``seq``."""
        table = self.tables[seq]
        for t in range(k.shape[-2]):
            slot = self.lengths[seq] % self.block_size
            if slot == 0:
                table.append(self._take_block())
            elif self.refcount[table[-1]] > 1:  # the last block is shared: copy it before writing into it
                shared, copy = table[-1], self._take_block()
                self.k_pool[:, copy], self.v_pool[:, copy] = self.k_pool[:, shared], self.v_pool[:, shared]
                self._release(shared)
                table[-1] = copy
            self.k_pool[:, table[-1], :, slot] = k[:, :, t]
            self.v_pool[:, table[-1], :, slot] = v[:, :, t]
            self.lengths[seq] += 1

    def gather(self, seq: str, layer: int = 0) -> tuple[Tensor, Tensor]:
        """The sequence's keys and values (n_heads, length, head_dim), read through its block table."""
        return (gather_blocks(self.k_pool[layer], self.tables[seq], self.lengths[seq]),
                gather_blocks(self.v_pool[layer], self.tables[seq], self.lengths[seq]))


def gather_blocks(pool: Tensor, block_table: list[int] | Tensor, length: int) -> Tensor:
    """Rows of ``pool`` (num_blocks, n_heads, block_size, head_dim) listed in ``block_table``, laid end to end
    along the token axis and cut at ``length``: (n_heads, length, head_dim)."""
    blocks = pool[torch.as_tensor(block_table, dtype=torch.long)]           # (n_blocks, H, bs, D)
    n_blocks, heads, block_size, dim = blocks.shape
    return blocks.permute(1, 0, 2, 3).reshape(heads, n_blocks * block_size, dim)[:, :length]


def paged_attention(q: Tensor, k_pool: Tensor, v_pool: Tensor, block_table: list[int] | Tensor,
                    length: int) -> Tensor:
    """Causal attention of the last ``q_len`` positions ``q`` (n_heads, q_len, head_dim) of a sequence whose
    ``length`` keys and values live in the pools' blocks listed by ``block_table``."""
    k, v = gather_blocks(k_pool, block_table, length), gather_blocks(v_pool, block_table, length)
    q_len = q.shape[-2]
    allowed = torch.ones(q_len, length, dtype=torch.bool).tril(diagonal=length - q_len)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


@torch.no_grad()
def generate_with_paged_cache(model: nn.Module, ids: Tensor, max_new_tokens: int, cache: PagedKVCache,
                              seq: str = "request") -> Tensor:
    """Greedy generation for one prompt ``ids`` (seq,) with the keys and values stored in ``cache``'s blocks:
    the model's own cache is rebuilt from the block table before each step and its newest entry written back."""
    model.eval()
    cache.add_sequence(seq)
    logits, present = model(ids[None], use_cache=True)
    cache.append(seq, torch.stack([k[0] for k, _ in present]), torch.stack([v[0] for _, v in present]))
    out = ids.tolist()
    for step in range(max_new_tokens):
        token = int(logits[0, -1].argmax())
        out.append(token)
        if step == max_new_tokens - 1:
            break
        past = [tuple(t[None] for t in cache.gather(seq, layer)) for layer in range(len(present))]
        logits, present = model(torch.tensor([[token]]), past_kv=past, use_cache=True)
        cache.append(seq, torch.stack([k[0, :, -1:] for k, _ in present]),
                     torch.stack([v[0, :, -1:] for _, v in present]))
    return torch.tensor(out)


def contiguous_slots(lengths: list[int], max_len: int) -> int:
    """Token slots a contiguous cache reserves: ``max_len`` per request, whatever its length turns out to be."""
    return len(lengths) * max_len


def paged_slots(lengths: list[int], block_size: int) -> int:
    """Token slots a paged cache holds: whole blocks, so at most ``block_size - 1`` unused per request."""
    return sum(math.ceil(n / block_size) * block_size for n in lengths)


def waste(lengths: list[int], reserved: int) -> float:
    """Share of the reserved slots that hold no token."""
    return 1 - sum(lengths) / reserved


def requests_that_fit(lengths: list[int], total_slots: int, max_len: int | None = None,
                      block_size: int | None = None) -> int:
    """How many of the requests (taken in order) fit in ``total_slots`` token slots: contiguous (``max_len``
    each) or paged (whole blocks of ``block_size``). Give exactly one of the two."""
    if (max_len is None) == (block_size is None):
        raise ValueError("give max_len (contiguous) or block_size (paged), not both")
    used = 0
    for count, n in enumerate(lengths):
        need = max_len if max_len is not None else math.ceil(n / block_size) * block_size
        if used + need > total_slots:
            return count
        used += need
    return len(lengths)


def request_lengths(n: int, shortest: int = 16, longest: int = 2048, seed: int = 0) -> list[int]:
    """A seeded mix of request lengths (prompt + answer), log-uniform between ``shortest`` and ``longest``."""
    gen = torch.Generator().manual_seed(seed)
    logs = torch.empty(n).uniform_(math.log(shortest), math.log(longest), generator=gen)
    return [int(x) for x in logs.exp().round()]


__all__ = ["PagedKVCache", "contiguous_slots", "gather_blocks", "generate_with_paged_cache", "paged_attention",
           "paged_slots", "request_lengths", "requests_that_fit", "waste"]
