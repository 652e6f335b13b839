"""Graded checks of chapter 11, "Inference and serving".

Seven exercises, each checked on seeded inputs against an independent reference: hand-counted FLOPs and
PyTorch's ``FlopCounterMode``; keys and values laid out contiguously; ``F.scaled_dot_product_attention`` on the
contiguous cache (attention read through a block table); hand-padded batches; the package's scheduler simulator
(``llmcourse.inference.batching.simulate``) and hand-played schedules; and ``torch.quantize_per_channel`` /
``torch.quantize_per_tensor`` for the integers.

Then a class to build, ``PagedKVCache``: the checks replay add / append / fork / free calls and compare every
sequence's keys and values, returned by ``gather`` and read from the pools through the block tables, with the
same tokens kept in one tensor per sequence, exactly; they count the blocks in use after each call (ceil(length /
block_size) per sequence, shared after a fork, copied on the first write into a shared partly filled block,
returned by ``free_sequence`` and reused) and expect a ``MemoryError`` from a full pool.

``speculative_accept`` (one round of sampled speculative decoding, with the uniform draws given) is checked on
hand-made cases and by enumeration: evaluated in the middle of every interval of the draws where a correct answer
cannot change, over every draft, the exact distribution of each emitted token must equal the target's ``p``.
``online_attention`` (keys in tiles, running maximum and sum) is compared with ``F.scaled_dot_product_attention``,
also on scores that overflow a plain ``exp``, and run under the lesson's allocation counter
(``llmcourse.inference.tiled_attention.memory_use``) and ``FlopCounterMode``: no tensor larger than 2 tiles of
scores, at most 12 tiles alive at once, and no more matrix-product FLOPs than one pass. No check needs another
exercise's function.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    beside_the_learner,
    call,
    call_method,
    expect,
    expect_close,
    expect_shape,
    get_function,
    run_learner,
    seeded_generator,
    seeded_randn,
)
from llmcourse.inference.batching import Request, simulate

chapter = Chapter("11", "Inference and serving")

Namespace = Mapping[str, Any]


def _torch_quantize(kind: str, *args):
    with warnings.catch_warnings():  # PyTorch announces that quantized tensors will move to another package
        warnings.simplefilter("ignore")
        return getattr(torch, kind)(*args).int_repr()


def _pair(value: Any, what: str, names: tuple[str, ...]) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) != len(names):
        raise CheckFailed(f"{what} should return a tuple ({', '.join(names)}), got {type(value).__name__}.")
    return tuple(value)


# --------------------------------------------------------------------------- arithmetic_intensity

@chapter.check("arithmetic_intensity", points=1, hint="A (m, k) @ (k, n) product does m·n dot products of length "
               "k: k multiplies and k adds each, 2·m·k·n FLOPs. Divide by the bytes of both inputs and the output.")
def intensity_by_hand(ns: Namespace) -> None:
    for (m, k, n, b), want in [((1, 4, 4, 4), 32 / (4 * 24)), ((2, 3, 5, 2), 60 / (2 * 31)),
                               ((8, 8, 8, 1), 1024 / 192)]:
        got = as_number(call(ns, "arithmetic_intensity", m, k, n, b), f"arithmetic_intensity({m}, {k}, {n}, {b})")
        expect(math.isclose(got, want, rel_tol=1e-9),
               f"arithmetic_intensity({m}, {k}, {n}, {b}) = {got:.6g}, expected {want:.6g} FLOPs per byte.")


@chapter.check("arithmetic_intensity", points=1, hint="Count FLOPs as PyTorch's FlopCounterMode does (2·m·k·n) and "
               "bytes as m·k + k·n + m·n values of bytes_per_value each: one token against a big weight matrix "
               "does about 1 FLOP per byte in bf16, a 2,048-token prompt about a thousand.")
def intensity_matches_flop_counter(ns: Namespace) -> None:
    for m, k, n in [(1, 512, 512), (64, 256, 128), (2048, 1024, 1024)]:
        with FlopCounterMode(display=False) as counter:
            torch.empty(m, k) @ torch.empty(k, n)
        want = counter.get_total_flops() / (2 * (m * k + k * n + m * n))
        got = as_number(call(ns, "arithmetic_intensity", m, k, n, 2), f"arithmetic_intensity({m}, {k}, {n}, 2)")
        expect(math.isclose(got, want, rel_tol=1e-9),
               f"arithmetic_intensity({m}, {k}, {n}, 2) = {got:.6g}, expected {want:.6g}.")


# --------------------------------------------------------------------------- gather_blocks

def _scattered(lengths: list[int], block_size: int, heads: int = 2, dim: int = 4, seed: int = 0):
    """A pool with each sequence's blocks at shuffled places, and each sequence's contiguous keys."""
    gen = torch.Generator().manual_seed(seed)
    n_blocks = [math.ceil(n / block_size) for n in lengths]
    order = torch.randperm(sum(n_blocks) + 3, generator=gen).tolist()
    pool = torch.randn(sum(n_blocks) + 3, heads, block_size, dim, generator=gen)  # + 3 blocks nobody owns
    tables, contiguous, start = [], [], 0
    for n, count in zip(lengths, n_blocks):
        table = order[start:start + count]
        start += count
        tables.append(table)
        contiguous.append(torch.cat([pool[b] for b in table], dim=1)[:, :n])
    return pool, tables, contiguous


@chapter.check("gather_blocks", points=1, hint="pool[block_table] picks the blocks in the table's order: "
               "(n_blocks, heads, block_size, dim). Move the heads first, join blocks along the token axis "
               "(reshape to (heads, n_blocks * block_size, dim)), then keep the first `length` tokens.")
def gather_in_table_order(ns: Namespace) -> None:
    pool, tables, contiguous = _scattered([7, 12, 1, 4], block_size=4)
    for table, want in zip(tables, contiguous):
        got = call(ns, "gather_blocks", pool.clone(), list(table), want.shape[1])
        expect_close(got, want, f"gather_blocks(pool, {table}, {want.shape[1]})", atol=0, rtol=0)


@chapter.check("gather_blocks", points=1, hint="The last block is usually only partly filled: cut the joined "
               "tokens at `length`. A block table may also be a tensor of block ids.")
def gather_cuts_the_last_block(ns: Namespace) -> None:
    pool, tables, contiguous = _scattered([5, 8, 3], block_size=8, seed=1)
    for table, want in zip(tables, contiguous):
        got = call(ns, "gather_blocks", pool.clone(), torch.tensor(table), want.shape[1])
        expect_close(got, want, f"gather_blocks(pool, tensor({table}), {want.shape[1]})", atol=0, rtol=0)


# --------------------------------------------------------------------------- paged_attention

chapter.time_budget("paged_attention", 20)


def _reference_attention(q, k, v):
    q_len, n = q.shape[-2], k.shape[-2]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(q_len, n, dtype=torch.bool).tril(n - q_len))


@chapter.check("paged_attention", points=2, hint="Read the sequence's keys and values through its block table "
               "(as in gather_blocks), then attend: softmax(q·kᵀ / √head_dim) · v over the `length` tokens.")
def paged_attention_one_query(ns: Namespace) -> None:
    k_pool, tables, ks = _scattered([9, 16, 2], block_size=4, heads=3, dim=8, seed=2)
    v_pool, _, vs = _scattered([9, 16, 2], block_size=4, heads=3, dim=8, seed=2)
    v_pool = v_pool * -0.5 + 1  # the same layout, other numbers
    vs = [v * -0.5 + 1 for v in vs]
    for i, (table, k, v) in enumerate(zip(tables, ks, vs)):
        q = seeded_randn(3, 1, 8, seed=10 + i)
        got = call(ns, "paged_attention", q, k_pool, v_pool, list(table), k.shape[1])
        expect_close(got, _reference_attention(q, k, v),
                     f"paged_attention for one new query over {k.shape[1]} cached tokens", atol=1e-5)


@chapter.check("paged_attention", points=1, hint="With q_len > 1 queries (the last q_len positions, as in a "
               "prefill), query i may see the keys up to position length - q_len + i: a causal mask shifted by "
               "length - q_len.")
def paged_attention_several_queries(ns: Namespace) -> None:
    k_pool, tables, ks = _scattered([11, 6], block_size=4, heads=2, dim=4, seed=3)
    v_pool = k_pool.flip(-1)
    for i, (table, k) in enumerate(zip(tables, ks)):
        v = torch.cat([v_pool[b] for b in table], dim=1)[:, :k.shape[1]]
        q = seeded_randn(2, 4, 4, seed=20 + i)
        got = call(ns, "paged_attention", q, k_pool, v_pool, list(table), k.shape[1])
        expect_close(got, _reference_attention(q, k, v),
                     f"paged_attention for the last 4 queries of {k.shape[1]} tokens", atol=1e-5)


# --------------------------------------------------------------------------- left_pad

def _expect_pad(ns: Namespace, prompts, pad_id, ids, mask) -> None:
    got = call(ns, "left_pad", prompts, pad_id)
    got_ids, got_mask = _pair(got, f"left_pad({prompts}, {pad_id})", ("ids", "mask"))
    got_ids = expect_shape(got_ids, tuple(ids.shape), f"left_pad({prompts}, {pad_id}) ids")
    got_mask = expect_shape(got_mask, tuple(mask.shape), f"left_pad({prompts}, {pad_id}) mask")
    expect(got_ids.tolist() == ids.tolist(),
           f"left_pad({prompts}, {pad_id}) ids are {got_ids.tolist()}, expected {ids.tolist()}.")
    expect(got_mask.bool().tolist() == mask.tolist(),
           f"left_pad({prompts}, {pad_id}) mask is {got_mask.tolist()}, expected {mask.tolist()}.")


@chapter.check("left_pad", points=1, hint="Every row is as long as the longest prompt; the pads go BEFORE the "
               "prompt, so every prompt ends in the last column. The mask is True on real tokens.")
def left_pad_by_hand(ns: Namespace) -> None:
    _expect_pad(ns, [[4, 5], [6], [7, 8, 9]], 0, torch.tensor([[0, 4, 5], [0, 0, 6], [7, 8, 9]]),
                torch.tensor([[False, True, True], [False, False, True], [True, True, True]]))


@chapter.check("left_pad", points=1, hint="Use pad_id for the pads, not 0, and mark by position, not by value: a "
               "prompt may itself contain the pad id.")
def left_pad_mask_by_position(ns: Namespace) -> None:
    _expect_pad(ns, [[3, 3], [1, 3, 2, 2]], 3, torch.tensor([[3, 3, 3, 3], [1, 3, 2, 2]]),
                torch.tensor([[False, False, True, True], [True, True, True, True]]))


# --------------------------------------------------------------------------- continuous_finish_steps

def _reference_steps(new_tokens: list[int], max_batch: int) -> list[int]:
    result = simulate([Request(0.0, n) for n in new_tokens], max_batch, "continuous", (1.0, 0.0))
    return [int(round(t)) for t in result["finish"]]


@chapter.check("continuous_finish_steps", points=2, hint="Keep a batch of at most max_batch running requests. "
               "Before every step, admit waiting requests in order into free slots; each step gives every "
               "running request one token; a request whose last token came at step s finishes at s (steps "
               "count from 1) and frees its slot for the next step.")
def continuous_by_hand(ns: Namespace) -> None:
    for tokens, batch, want in [([1, 3, 2], 2, [1, 3, 3]), ([2, 2, 2, 2], 2, [2, 2, 4, 4]), ([5], 3, [5]),
                                ([1, 1, 1], 1, [1, 2, 3])]:
        got = call(ns, "continuous_finish_steps", list(tokens), batch)
        expect(list(got) == want, f"continuous_finish_steps({tokens}, {batch}) = {list(got)}, expected {want}.")


@chapter.check("continuous_finish_steps", points=1, hint="A freed slot is refilled at the very next step, not "
               "when the whole batch has finished (that would be static batching).")
def continuous_matches_the_simulator(ns: Namespace) -> None:
    gen = torch.Generator().manual_seed(4)
    for batch in [3, 8]:
        tokens = torch.randint(1, 30, (25,), generator=gen).tolist()
        got = call(ns, "continuous_finish_steps", list(tokens), batch)
        want = _reference_steps(tokens, batch)
        expect(list(got) == want, f"continuous_finish_steps for 25 requests, max_batch={batch}: first differences "
               f"at request {next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))} "
               f"(got {list(got)[:8]}..., expected {want[:8]}...).")


# --------------------------------------------------------------------------- absmax_quantize

@chapter.check("absmax_quantize", points=1, hint="scale = max|w| / (2^(bits-1) - 1), q = round(w / scale) as "
               "int8. With dim=None one scale covers the whole tensor (return it as a one-element tensor).")
def absmax_per_tensor(ns: Namespace) -> None:
    w = seeded_randn(6, 10, seed=5)
    q, scale = _pair(call(ns, "absmax_quantize", w.clone(), 8, None), "absmax_quantize(w, 8, None)", ("q", "scale"))
    want_scale = w.abs().max() / 127
    expect_close(as_number(scale, "absmax_quantize's scale"), want_scale, "absmax_quantize(w, 8, None) scale")
    q = expect_shape(q, (6, 10), "absmax_quantize(w, 8, None) q")
    expect(q.dtype == torch.int8, f"q should be int8, got {q.dtype}.")
    want = _torch_quantize("quantize_per_tensor", w, float(want_scale), 0, torch.qint8)
    expect(torch.equal(q, want), "absmax_quantize(w, 8, None) integers differ from torch.quantize_per_tensor's "
           f"(first row {q[0].tolist()}, expected {want[0].tolist()}).")


@chapter.check("absmax_quantize", points=2, hint="With dim=0 each output row gets its own scale: take max|w| over "
               "every other dimension with keepdim=True, so scale has shape (rows, 1) and divides row by row.")
def absmax_per_channel(ns: Namespace) -> None:
    w = seeded_randn(8, 16, seed=6) * torch.logspace(-2, 1, 8)[:, None]  # rows of very different sizes
    q, scale = _pair(call(ns, "absmax_quantize", w.clone(), 8, 0), "absmax_quantize(w, 8, 0)", ("q", "scale"))
    want_scale = w.abs().amax(dim=1, keepdim=True) / 127
    expect_close(scale, want_scale, "absmax_quantize(w, 8, 0) scale (one per row, shape (8, 1))")
    want = _torch_quantize("quantize_per_channel", w, want_scale[:, 0].double(), torch.zeros(8, dtype=torch.long), 0,
                           torch.qint8)
    q = expect_shape(q, (8, 16), "absmax_quantize(w, 8, 0) q")
    expect(torch.equal(q.to(torch.int8), want), "absmax_quantize(w, 8, 0) integers differ from "
           "torch.quantize_per_channel's.")


@chapter.check("absmax_quantize", points=1, hint="For 4 bits the integers run from -7 to 7: scale = max|w| / 7.")
def absmax_four_bits(ns: Namespace) -> None:
    w = seeded_randn(4, 8, seed=7)
    q, scale = _pair(call(ns, "absmax_quantize", w.clone(), 4, 0), "absmax_quantize(w, 4, 0)", ("q", "scale"))
    want_scale = w.abs().amax(dim=1, keepdim=True) / 7
    expect_close(scale, want_scale, "absmax_quantize(w, 4, 0) scale")
    q = expect_shape(q, (4, 8), "absmax_quantize(w, 4, 0) q").to(torch.int64)
    expect(q.tolist() == torch.round(w / want_scale).to(torch.int64).tolist() and int(q.abs().max()) == 7,
           "absmax_quantize(w, 4, 0) integers are wrong: each row's largest |w| must map to ±7.")


# --------------------------------------------------------------------------- zero_point_quantize

@chapter.check("zero_point_quantize", points=2, hint="low = min(w.min(), 0), high = max(w.max(), 0); scale = "
               "(high - low) / (2^bits - 1); zero_point = round(-low / scale); q = round(w / scale) + zero_point, "
               "clamped to 0 .. 2^bits - 1, as uint8.")
def zero_point_matches_torch(ns: Namespace) -> None:
    for seed, shift in [(8, 0.7), (9, -0.3), (10, 0.0)]:
        w = seeded_randn(5, 12, seed=seed) + shift
        out = _pair(call(ns, "zero_point_quantize", w.clone(), 8), "zero_point_quantize(w, 8)",
                    ("q", "scale", "zero_point"))
        low, high = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
        want_scale = (high - low) / 255
        want_zero = round(-low / want_scale)
        expect_close(as_number(out[1], "the scale"), want_scale, f"zero_point_quantize scale (w shifted by {shift})")
        expect(int(as_number(out[2], "the zero point")) == want_zero,
               f"zero_point_quantize zero_point is {as_number(out[2], 'the zero point')}, expected {want_zero}.")
        want = _torch_quantize("quantize_per_tensor", w, want_scale, want_zero, torch.quint8)
        q = expect_shape(out[0], (5, 12), "zero_point_quantize q").to(torch.int64)
        expect(torch.equal(q, want.to(torch.int64)), f"zero_point_quantize(w shifted by {shift}) integers differ "
               "from torch.quantize_per_tensor's (quint8).")


@chapter.check("zero_point_quantize", points=1, hint="The zero point is an integer level: 0.0 must come back as "
               "exactly 0.0 after scale · (q - zero_point), and all-positive weights still use low = 0.")
def zero_point_keeps_zero(ns: Namespace) -> None:
    w = torch.tensor([[0.0, 0.5, 1.0, 3.0], [0.2, 0.0, 2.0, 1.5]])
    q, scale, zero = _pair(call(ns, "zero_point_quantize", w.clone(), 8), "zero_point_quantize(w, 8)",
                           ("q", "scale", "zero_point"))
    back = as_number(scale, "the scale") * (torch.as_tensor(q).double() - as_number(zero, "the zero point"))
    expect(float(back[0, 0]) == 0.0 and float(back[1, 1]) == 0.0, "0.0 does not come back as exactly 0.0.")
    expect_close(back, w, "zero_point_quantize then dequantize of [[0, .5, 1, 3], [.2, 0, 2, 1.5]]", atol=3 / 255)
    positive = torch.tensor([[0.5, 1.0, 3.0], [0.2, 2.0, 1.5]])
    q, scale, zero = _pair(call(ns, "zero_point_quantize", positive.clone(), 8), "zero_point_quantize(w, 8)",
                           ("q", "scale", "zero_point"))
    expect(as_number(zero, "the zero point") == 0.0, f"for weights that are all positive the range is [0, max], so "
           f"the zero point is 0; got {as_number(zero, 'the zero point')}.")


# --------------------------------------------------------------------------- PagedKVCache (build the class)

_CACHE = "PagedKVCache"
_HEADS, _DIM = 2, 3


class _Run:
    """Drives the learner's cache and, beside it, each sequence's keys and values kept contiguously."""

    def __init__(self, ns: Namespace, num_blocks: int, block_size: int, seed: int):
        from llmcourse.inference.paged_cache import PagedKVCache as PackageCache

        self.num_blocks, self.block_size = num_blocks, block_size
        self.cache = call(ns, _CACHE, num_blocks, block_size, _HEADS, _DIM)
        if isinstance(self.cache, PackageCache):
            raise CheckFailed(f"`{_CACHE}` must be written here, not taken from llmcourse.inference.paged_cache.")
        self.shown = f"{_CACHE}(num_blocks={num_blocks}, block_size={block_size}, n_heads={_HEADS}, head_dim={_DIM})"
        for name in ("k_pool", "v_pool"):
            pool = getattr(self.cache, name, None)
            expect(isinstance(pool, torch.Tensor), f"your `{_CACHE}` needs a tensor `{name}` of shape (num_blocks, "
                                                   f"n_heads, block_size, head_dim), got {type(pool).__name__}")
            expect_shape(pool, (num_blocks, _HEADS, block_size, _DIM), f"`{self.shown}.{name}`")
        self.gen = seeded_generator(seed)
        self.k: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}
        self.done: list[str] = []  # what happened so far, for the messages

    def history(self) -> str:
        steps = self.done if len(self.done) <= 6 else ["..."] + self.done[-5:]
        return f"{self.shown}, then " + ", ".join(steps)

    def add(self, seq: str) -> None:
        call_method(self.cache, _CACHE, "add_sequence", seq)
        self.k[seq], self.v[seq] = torch.zeros(_HEADS, 0, _DIM), torch.zeros(_HEADS, 0, _DIM)
        self.done.append(f"add_sequence({seq!r})")

    def append(self, seq: str, t: int) -> None:
        k, v = torch.randn(2, _HEADS, t, _DIM, generator=self.gen)
        call_method(self.cache, _CACHE, "append", seq, k.clone(), v.clone())
        self.k[seq], self.v[seq] = torch.cat([self.k[seq], k], 1), torch.cat([self.v[seq], v], 1)
        self.done.append(f"append({seq!r}, {t} token{'s' * (t > 1)})")

    def fork(self, parent: str, child: str) -> None:
        call_method(self.cache, _CACHE, "fork", parent, child)
        self.k[child], self.v[child] = self.k[parent], self.v[parent]
        self.done.append(f"fork({parent!r}, {child!r})")

    def free(self, seq: str) -> None:
        call_method(self.cache, _CACHE, "free_sequence", seq)
        del self.k[seq], self.v[seq]
        self.done.append(f"free_sequence({seq!r})")

    def in_use(self) -> int:
        missing = object()
        value = run_learner(f"`{_CACHE}.blocks_in_use`", lambda: getattr(self.cache, "blocks_in_use", missing))
        if value is missing:
            raise CheckFailed(f"your `{_CACHE}` has no `blocks_in_use` (the number of blocks taken from the pool)")
        if callable(value):
            value = run_learner(f"`{_CACHE}.blocks_in_use()`", value)
        return int(as_number(value, f"`{_CACHE}.blocks_in_use`"))

    def expect_in_use(self, want: int, why: str) -> None:
        got = self.in_use()
        expect(got == want, f"after {self.history()}: blocks_in_use is {got}, expected {want} ({why}).")

    def table(self, seq: str) -> list[int]:
        tables = getattr(self.cache, "tables", None)
        if not isinstance(tables, Mapping):
            raise CheckFailed(f"your `{_CACHE}` needs a dict `tables` (sequence -> its block table, a list of block "
                              f"ids), got {type(tables).__name__}")
        expect(seq in tables, f"after {self.history()}: tables has no entry for {seq!r}.")
        try:
            table = [int(b) for b in torch.as_tensor(tables[seq], dtype=torch.long).reshape(-1)]
        except (TypeError, ValueError, RuntimeError):
            raise CheckFailed(f"tables[{seq!r}] should be a list of block ids, got {tables[seq]!r:.80}") from None
        bad = [b for b in table if not 0 <= b < self.num_blocks]
        expect(not bad, f"after {self.history()}: tables[{seq!r}] = {table} names blocks {bad} that the pool of "
                        f"{self.num_blocks} blocks does not have.")
        return table

    def expect_contents(self, seq: str) -> None:
        """gather(seq) and the pools read through tables[seq] equal the contiguous keys and values, exactly."""
        n = self.k[seq].shape[1]
        got = call_method(self.cache, _CACHE, "gather", seq)
        got_k, got_v = _pair(got, f"`{_CACHE}.gather({seq!r})`", ("k", "v"))
        when = f"after {self.history()}"
        expect_close(got_k, self.k[seq], f"{when}: the keys gather({seq!r}) returns ({n} tokens)", atol=0, rtol=0)
        expect_close(got_v, self.v[seq], f"{when}: the values gather({seq!r}) returns ({n} tokens)", atol=0, rtol=0)
        table = self.table(seq)
        expect(len(table) * self.block_size >= n, f"{when}: tables[{seq!r}] = {table} has too few blocks for {n} "
                                                  f"tokens in blocks of {self.block_size}.")
        for name, want in (("k_pool", self.k[seq]), ("v_pool", self.v[seq])):
            pool = getattr(self.cache, name)
            through = torch.cat([pool[b] for b in table], dim=1)[:, :n] if table else pool[:0, :, :0].sum(0)
            expect_close(through, want, f"{when}: {name} read through tables[{seq!r}] = {table} (token t in block "
                                        f"table[t // block_size], slot t % block_size)", atol=0, rtol=0)


def _round_robin(chunks: dict[str, list[int]]):
    """(sequence, tokens) in interleaved order: every sequence's next chunk in turn."""
    for i in range(max(map(len, chunks.values()))):
        for seq, sizes in chunks.items():
            if i < len(sizes):
                yield seq, sizes[i]


@chapter.check(_CACHE, points=1, hint="append writes token t of a sequence into block tables[seq][t // block_size] at "
               "slot t % block_size of k_pool and v_pool (num_blocks, n_heads, block_size, head_dim); gather reads the "
               "blocks back in table order, lays them end to end along the token axis and cuts at the length.")
def cache_equals_contiguous(ns: Namespace) -> None:
    run = _Run(ns, num_blocks=24, block_size=4, seed=30)
    chunks = {"a": [5, 1, 1, 1, 2, 1], "b": [3, 1, 6, 1, 1], "c": [9, 1, 1, 1, 1, 1, 1, 1], "d": [1, 1, 1, 1, 4, 1]}
    for seq in chunks:
        run.add(seq)
    for i, (seq, t) in enumerate(_round_robin(chunks)):
        run.append(seq, t)
        if i % 4 == 3:
            for other in chunks:
                run.expect_contents(other)
    for seq in chunks:
        run.expect_contents(seq)


@chapter.check(_CACHE, points=1, hint="Take a block from the free list only when the sequence's last block is full "
               "(its length is a multiple of block_size), never per append call: n tokens hold ceil(n / block_size) "
               "blocks, an empty sequence none, and no block belongs to two sequences that were not forked.")
def cache_takes_blocks_as_needed(ns: Namespace) -> None:
    run = _Run(ns, num_blocks=20, block_size=3, seed=31)
    chunks = {"x": [1, 1, 1, 1, 2, 1, 1], "y": [4, 1, 1, 1, 1, 3], "z": [2, 1, 6, 1]}
    for seq in chunks:
        run.add(seq)
    run.expect_in_use(0, "sequences without tokens hold no blocks")
    for seq, t in _round_robin(chunks):
        run.append(seq, t)
        owned = []
        for other in chunks:
            table, n = run.table(other), run.k[other].shape[1]
            want = math.ceil(n / 3)
            expect(len(table) == want, f"after {run.history()}: tables[{other!r}] has {len(table)} blocks for {n} "
                                       f"tokens; blocks of 3 tokens need ceil({n} / 3) = {want}.")
            owned += table
        expect(len(set(owned)) == len(owned), f"after {run.history()}: two sequences share a block (tables "
                                              f"{ {s: run.table(s) for s in chunks} }) though none was forked.")
        run.expect_in_use(len(owned), "the blocks in the tables")
    for seq in chunks:
        run.expect_contents(seq)


@chapter.check(_CACHE, points=1, hint="free_sequence gives the sequence's blocks back to the free list (a block shared "
               "after a fork only when its last user lets go), so that later sequences reuse them: a full pool "
               "freed and filled again holds exactly its num_blocks blocks.")
def cache_free_returns_blocks(ns: Namespace) -> None:
    run = _Run(ns, num_blocks=6, block_size=4, seed=32)
    for seq, t in (("a", 8), ("b", 12), ("c", 4)):
        run.add(seq)
        run.append(seq, t)
    run.expect_in_use(6, "2 + 3 + 1 blocks: the pool is full")
    freed = set(run.table("b"))
    run.free("b")
    run.expect_in_use(3, "b's 3 blocks went back to the pool")
    run.add("d")
    run.append("d", 10)
    expect(set(run.table("d")) == freed, f"after {run.history()}: d got blocks {run.table('d')}, but the only free "
                                         f"blocks were b's {sorted(freed)}.")
    for seq in ("a", "c", "d"):
        run.expect_contents(seq)
    for seq in ("a", "c", "d"):
        run.free(seq)
    run.expect_in_use(0, "every sequence was freed")
    run.add("e")
    run.append("e", 24)
    run.expect_in_use(6, "24 tokens in blocks of 4, in a pool that was freed")
    run.expect_contents("e")


def _expect_memory_error(run: _Run, seq: str, t: int) -> None:
    k = v = torch.zeros(_HEADS, t, _DIM)
    shown = f"`{_CACHE}.append({seq!r}, ...)` with every block in use (after {run.history()})"
    try:
        run.cache.append(seq, k, v)
    except MemoryError:
        return
    except NotImplementedError:
        raise CheckFailed(f"`{_CACHE}.append` (or a function it calls) is not written yet: replace `raise "
                          f"NotImplementedError` with your code.") from None
    except Exception as exc:
        raise CheckFailed(f"{shown} raised {type(exc).__name__}: {exc}; it should raise a MemoryError that says the "
                          f"cache is out of blocks.") from None
    raise CheckFailed(f"{shown} did not raise: a full pool must refuse with a MemoryError, not grow or overwrite "
                      f"another sequence's block (blocks_in_use is now {run.in_use()} of {run.num_blocks}).")


@chapter.check(_CACHE, points=1, hint="When a sequence needs a new block and the free list is empty, raise "
               "MemoryError with a message (e.g. 'all 3 blocks are in use'); never grow the pool or hand out a block "
               "that another sequence owns.")
def cache_full_pool_raises(ns: Namespace) -> None:
    run = _Run(ns, num_blocks=3, block_size=4, seed=33)
    run.add("a")
    run.append("a", 12)
    run.expect_in_use(3, "12 tokens in blocks of 4")
    run.add("b")
    _expect_memory_error(run, "b", 1)
    _expect_memory_error(run, "a", 1)
    got = run.in_use()
    expect(got <= 3, f"after the refused appends blocks_in_use is {got}, more than the pool's 3 blocks.")
    run.expect_contents("a")
    run.free("a")
    run.add("c")
    run.append("c", 8)
    run.expect_contents("c")


@chapter.check(_CACHE, points=1, hint="fork(parent, child) copies the parent's block table, not its blocks, and adds "
               "1 to each block's reference count; free_sequence subtracts 1 and returns a block to the free list "
               "only at 0, so a child outlives its parent.")
def cache_fork_shares_blocks(ns: Namespace) -> None:
    run = _Run(ns, num_blocks=5, block_size=4, seed=34)
    run.add("p")
    run.append("p", 10)
    run.fork("p", "c")
    run.expect_in_use(3, "a fork shares the parent's 3 blocks and copies none")
    run.expect_contents("c")
    run.free("p")
    run.expect_in_use(3, "the child still uses the parent's blocks")
    run.expect_contents("c")
    run.add("x")
    run.append("x", 8)
    run.expect_in_use(5, "the child's 3 blocks and x's 2")
    for seq in ("c", "x"):
        run.expect_contents(seq)
    run.free("c")
    run.expect_in_use(2, "the last user of the shared blocks let go")


@chapter.check(_CACHE, points=1, hint="Before writing into a sequence's last, partly filled block, look at its "
               "reference count: if another sequence shares it, take a new block, copy the shared one into it, "
               "release the shared one and write into the copy (copy on write). Full blocks stay shared; a block "
               "only one sequence uses is written in place.")
def cache_fork_copies_on_write(ns: Namespace) -> None:
    run = _Run(ns, num_blocks=12, block_size=4, seed=35)
    run.add("p")
    run.append("p", 6)
    run.fork("p", "c")
    run.append("c", 1)
    run.expect_in_use(3, "the child copied the shared, partly filled block before writing into it")
    for seq in ("p", "c"):
        run.expect_contents(seq)
    run.append("p", 1)
    run.expect_in_use(3, "the parent's last block is no longer shared, so it is written in place")
    for seq in ("p", "c"):
        run.expect_contents(seq)
    run.add("q")
    run.append("q", 8)
    run.fork("q", "r")
    run.append("r", 1)
    run.expect_in_use(6, "a fork at a block boundary shares both full blocks; the child's token takes a new one")
    run.append("q", 3)
    run.expect_in_use(7, "the parent's new tokens start a block of its own")
    for seq in ("q", "r"):
        run.expect_contents(seq)
    run.add("s")
    run.append("s", 5)
    run.fork("s", "t")
    run.append("s", 2)
    run.expect_in_use(10, "the parent wrote first, so the parent copied the shared block")
    run.append("t", 4)
    run.expect_in_use(11, "the child's last block was its own again: 3 tokens in place, 1 in a new block")
    for seq in ("p", "c", "q", "r", "s", "t"):
        run.expect_contents(seq)


# --------------------------------------------------------------------------- speculative_accept

def _emitted(ns: Namespace, p: torch.Tensor, q: torch.Tensor, draft: list[int], u: list[float]) -> list[int]:
    what = f"speculative_accept(p, q, draft={draft}, u=[{', '.join(f'{x:.10g}' for x in u)}])"
    got = call(ns, "speculative_accept", p.clone(), q.clone(), torch.tensor(draft), torch.tensor(u, dtype=p.dtype))
    if isinstance(got, torch.Tensor):
        got = got.reshape(-1).tolist()
    if isinstance(got, (list, tuple)):  # a token kept as a one-element integer tensor counts as its id
        got = [int(t) if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point() else t
               for t in got]
    if not isinstance(got, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in got):
        raise CheckFailed(f"{what} should return a list of token ids (ints), got {got!r:.80}")
    expect(1 <= len(got) <= len(draft) + 1, f"{what} returned {list(got)}: one round emits between 1 and k + 1 = "
                                            f"{len(draft) + 1} tokens.")
    expect(all(0 <= t < p.shape[-1] for t in got), f"{what} returned {list(got)}, but the vocabulary has "
                                                    f"{p.shape[-1]} tokens.")
    return list(got)


_P = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=torch.float64)
_Q = torch.tensor([[0.25, 0.5, 0.25], [0.4, 0.4, 0.2]], dtype=torch.float64)


@chapter.check("speculative_accept", points=1, hint="Go through the drafts in order: keep draft i while u[i] < p[i, "
               "x] / q[i, x]. At the first rejection stop and add one token drawn with u[k] from max(0, p[i] - q[i]) "
               "normalised to sum 1; if every draft is kept, add one drawn with u[k] from p[k], the row after the "
               "last draft. Drawing with u: the first token j whose cumulative probability exceeds u.")
def speculative_by_hand(ns: Namespace) -> None:
    # p = _P, q = _Q; ratios p/q of the drafts: token 0 at row 0: 2 (kept), token 1 at row 0: 0.6,
    # token 1 at row 1: 1.5 (kept), token 0 at row 1: 0.25
    cases = [
        ([0, 1], [0.9, 0.99, 0.3], [0, 1, 1], "both kept; u[2] = 0.3 falls in token 1 of p[2]'s cumulative [0.2, "
                                              "0.4, 1.0]"),
        ([0, 1], [0.0, 0.5, 0.95], [0, 1, 2], "both kept; u[2] = 0.95 falls in token 2 of p[2]"),
        ([1, 0], [0.7, 0.1, 0.9], [0], "0.7 >= 0.6 rejects token 1 at row 0; the residual max(0, p[0] - q[0]) = "
                                       "[0.25, 0, 0] normalises to [1, 0, 0]"),
        ([1, 0], [0.5, 0.3, 0.9], [1, 2], "token 1 kept (0.5 < 0.6), token 0 rejected (0.3 >= 0.25); the residual "
                                          "[0, 0.2, 0.1] normalises to [0, 2/3, 1/3] and u[2] = 0.9 picks token 2"),
        ([1, 0], [0.5, 0.3, 0.5], [1, 1], "as before, but u[2] = 0.5 picks token 1 of [0, 2/3, 1/3]"),
        ([1, 1], [0.59, 1 - 1e-9, 0.1], [1, 1, 0], "0.59 < 0.6 keeps token 1; a ratio of 1.5 keeps any u < 1"),
    ]
    for draft, u, want, why in cases:
        got = _emitted(ns, _P, _Q, draft, u)
        expect(got == want, f"speculative_accept(p, q, draft={draft}, u={u}) returned {got}, expected {want}: "
                            f"{why}. (p = {_P.tolist()}, q = {_Q.tolist()})")


def _breakpoints(rows: list[torch.Tensor]) -> list[float]:
    """0, 1 and every cumulative probability of ``rows``: the learner's output is constant between them."""
    points = {0.0, 1.0}
    for row in rows:
        points |= {float(c) for c in row.cumsum(0)[:-1]}
    return sorted(x for x in points if 0.0 <= x <= 1.0)


def _enumerate_round(ns: Namespace, p: torch.Tensor, q: torch.Tensor) -> dict[tuple[int, ...], float]:
    """The exact probability of each emitted list, over drafts drawn from q and uniform u, by enumeration:
    the function is evaluated in the middle of every interval where its answer cannot change."""
    import itertools

    from llmcourse.inference.speculative import residual_distribution

    k, vocab = q.shape
    residuals = [residual_distribution(p[i], q[i]) for i in range(k)]
    extra_points = _breakpoints(residuals + [p[k]])
    outcomes: dict[tuple[int, ...], float] = {}
    for draft in itertools.product(range(vocab), repeat=k):
        weight = math.prod(float(q[i, x]) for i, x in enumerate(draft))
        if weight == 0:
            continue
        accept_intervals = []
        for i, x in enumerate(draft):
            ratio = min(1.0, float(p[i, x]) / float(q[i, x]))
            accept_intervals.append([(a, b) for a, b in ((0.0, ratio), (ratio, 1.0)) if b > a])
        for pieces in itertools.product(*accept_intervals, zip(extra_points, extra_points[1:])):
            width = math.prod(b - a for a, b in pieces)
            if width == 0:
                continue
            got = tuple(_emitted(ns, p, q, list(draft), [(a + b) / 2 for a, b in pieces]))
            outcomes[got] = outcomes.get(got, 0.0) + weight * width
    return outcomes


def _random_pair(k: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target rows p (k + 1, vocab) and draft rows q (k, vocab) from small whole numbers (zeros included)."""
    gen = seeded_generator(seed)
    p = torch.randint(0, 5, (k + 1, vocab), generator=gen).double()
    q = torch.randint(0, 5, (k, vocab), generator=gen).double()
    p[:, 0] += 1  # no row without mass
    q[:, -1] += 1
    return p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)


@chapter.check("speculative_accept", points=1, hint="This is what makes speculative sampling exact: a kept draft "
               "x contributes q(x) · min(1, p(x) / q(x)) = min(p(x), q(x)), and a rejection adds the missing mass "
               "max(0, p - q), so the residual must be exactly max(0, p[i] - q[i]) of the row that rejected, "
               "normalised; the tokens after a rejection are never looked at.")
def speculative_gives_p(ns: Namespace) -> None:
    for case, (k, vocab, seed) in enumerate([(1, 3, 40), (1, 4, 41), (2, 3, 42), (2, 4, 43), (2, 4, 44)]):
        p, q = _random_pair(k, vocab, seed)
        outcomes = _enumerate_round(ns, p, q)
        total = sum(outcomes.values())
        expect(abs(total - 1) < 1e-9, f"the outcomes do not add up to 1 ({total:.6f}): does speculative_accept "
                                      f"use anything but p, q, draft and u?")
        kept = 1.0
        for j in range(k + 1):
            reach = sum(w for out, w in outcomes.items() if len(out) > j)  # a token j is emitted at all
            dist = torch.zeros(vocab, dtype=torch.float64)
            for out, w in outcomes.items():
                if len(out) > j:
                    dist[out[j]] += w / reach
            expect_close(dist, p[j], f"case {case + 1} (k = {k}, {vocab} tokens, p = {p.tolist()}, "
                                     f"q = {q.tolist()}): the distribution of emitted token {j}, computed exactly "
                                     f"over every draft and u, should be p[{j}]; it", atol=1e-9, rtol=0)
            expect(abs(reach - kept) < 1e-9, f"case {case + 1}: token {j} is emitted with probability {reach:.6f}, "
                                             f"but drafts are kept with probability sum(min(p, q)) per row, so it "
                                             f"should be {kept:.6f}.")
            if j < k:
                kept *= float(torch.minimum(p[j], q[j]).sum())


@chapter.check("speculative_accept", points=1, hint="If q equals p every ratio is 1, so every draft is kept for "
               "any u < 1 and the extra token comes from p[k]. A draft token that p gives no probability has ratio "
               "0: it is always rejected, and the residual max(0, p - q) is 0 there, so it can never come back.")
def speculative_edge_cases(ns: Namespace) -> None:
    gen = seeded_generator(45)
    p = torch.softmax(torch.randn(4, 5, generator=gen, dtype=torch.float64), -1)
    for trial in range(20):
        draft = torch.randint(0, 5, (3,), generator=gen).tolist()
        u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        u[trial % 3] = 1 - 1e-9
        got = _emitted(ns, p, p[:3], draft, u)
        want_extra = int(torch.searchsorted(p[3].cumsum(0), torch.tensor(u[3], dtype=torch.float64), right=True))
        shown_u = "[" + ", ".join(f"{x:.10g}" for x in u) + "]"
        expect(got == draft + [want_extra], f"with q equal to p (k = 3) every draft must be kept whatever u is, "
                                            f"then one token from p[3]: draft={draft}, u={shown_u} "
                                            f"should give {draft + [want_extra]}, got {got}.")
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.25, 0.25, 0.5]], dtype=torch.float64)
    for x, residual in ((2, [2 / 3, 1 / 3, 0, 0]), (3, [2 / 3, 1 / 3, 0, 0])):
        for u0, u1 in ((1e-6, 0.1), (1e-6, 0.9), (0.5, 0.6), (0.999, 0.7)):
            got = _emitted(ns, p, q, [x], [u0, u1])
            want = int(torch.searchsorted(torch.tensor(residual).cumsum(0), torch.tensor(u1), right=True))
            expect(got == [want], f"p[0] = [0.5, 0.5, 0, 0] gives draft token {x} no probability, so it is always "
                                  f"rejected and replaced from the residual max(0, p - q) normalised = {residual}: "
                                  f"u = [{u0}, {u1}] should give [{want}], got {got}.")


# --------------------------------------------------------------------------- online_attention

chapter.time_budget("online_attention", 20)  # the one-pass check counts every operation in Python

def _online(ns: Namespace, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_k: int, what: str):
    got = call(ns, "online_attention", q, k, v, block_k)
    expect_close(got, F.scaled_dot_product_attention(q, k, v), f"{what}, against F.scaled_dot_product_attention,",
                 atol=2e-5, rtol=1e-4)


@chapter.check("online_attention", points=1, hint="Keep per query a running maximum m (start at -inf), a running "
               "sum l of exp(score - m) and a running weighted sum acc of values. For each tile of keys: scores s = "
               "q·kᵀ / √d, m_new = max(m, max of s), then rescale the old l and acc by exp(m - m_new) before adding "
               "exp(s - m_new) (and its product with the tile's values). Divide acc by l at the end.")
def online_attention_matches_sdpa(ns: Namespace) -> None:
    for (shape_q, k_len, block_k, seed) in [((2, 5, 8), 37, 8, 50), ((2, 5, 8), 37, 64, 51), ((3, 1, 4), 9, 1, 52),
                                            ((2, 2, 6, 8), 30, 7, 53)]:
        gen = seeded_generator(seed)
        q = torch.randn(*shape_q, generator=gen)
        k = torch.randn(*shape_q[:-2], k_len, shape_q[-1], generator=gen)
        v = torch.randn(*shape_q[:-2], k_len, 5, generator=gen)
        _online(ns, q, k, v, block_k, f"online_attention(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
                                      f"block_k={block_k})")


@chapter.check("online_attention", points=1, hint="exp of a score of 100 overflows float32 (its largest value is "
               "about exp(88)): subtract the running maximum before exp, and when a later tile brings a larger "
               "maximum, multiply what you have summed so far by exp(m_old - m_new) (at most 1).")
def online_attention_large_scores(ns: Namespace) -> None:
    gen = seeded_generator(54)
    q = torch.randn(2, 4, 8, generator=gen) * 30
    k = torch.randn(2, 40, 8, generator=gen) * torch.linspace(0.2, 3, 40)[:, None]   # the largest scores come last
    v = torch.randn(2, 40, 8, generator=gen)
    _online(ns, q, k, v, 8, "online_attention with scores of several hundred, the largest in the last tiles")
    _online(ns, q, k.flip(-2), v.flip(-2), 8, "online_attention with scores of several hundred, the largest first")


_ONE_PASS = dict(heads=2, q_len=64, k_len=2048, head_dim=16, block_k=32)


def _flops_of(func, *args):
    """``func(*args)``, the names of the operators that did FLOPs, and the FLOPs (PyTorch's FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter:
        out = func(*args)
    ops = sorted({str(op).split(".")[-1] for op in counter.get_flop_counts().get("Global", {})})
    return out, ops, counter.get_total_flops()


@chapter.check("online_attention", points=1, hint="Visit the keys once, tile by tile (k[..., j:j + block_k, :] is "
               "a view, not a copy), and keep only m, l and acc between tiles: never the (q_len, k_len) score matrix, "
               "a list of the tiles' scores, or a second pass over the keys; and do not call "
               "F.scaled_dot_product_attention.")
def online_attention_one_pass(ns: Namespace) -> None:
    from llmcourse.inference.tiled_attention import memory_use

    h, n_q, n_k, d, block = (_ONE_PASS[key] for key in ("heads", "q_len", "k_len", "head_dim", "block_k"))
    gen = seeded_generator(55)
    q, k, v = (torch.randn(h, n, d, generator=gen) for n in (n_q, n_k, n_k))
    func = get_function(ns, "online_attention")
    expected = F.scaled_dot_product_attention(q, k, v)
    # the counters run beside the learner's code (in their kernel when grading), so they see its own products
    got, ops, flops = run_learner("`online_attention`", lambda: beside_the_learner(
        ns, _flops_of, func, q.clone(), k.clone(), v.clone(), block))
    shown = f"online_attention on {h} heads, {n_q} queries, {n_k} keys, head_dim {d}, block_k={block}"
    expect_close(got, expected, f"{shown}, against F.scaled_dot_product_attention,", atol=2e-5, rtol=1e-4)
    ops = set(ops)
    expect(ops <= {"mm", "bmm", "addmm", "baddbmm"}, f"{shown} runs {sorted(ops - {'mm', 'bmm'})}: write the tiles "
                                                     f"with matrix products, not F.scaled_dot_product_attention.")
    one_pass = 4 * h * n_q * n_k * d  # q·kᵀ and weights·v, each 2·h·q_len·k_len·d FLOPs
    expect(flops <= one_pass * 1.001, f"{shown}: its matrix products do {flops / 1e6:.1f} MFLOPs; one pass (each key "
                                      f"tile times the queries once, its weights times its values once) does "
                                      f"{one_pass / 1e6:.1f}. Scores computed twice mean a second pass.")
    tile = 4 * h * n_q * block  # bytes of one tile of float32 scores
    use = run_learner("`online_attention`", lambda: beside_the_learner(
        ns, memory_use, func, q.clone(), k.clone(), v.clone(), block))
    expect(use["largest"] <= 2 * tile, f"{shown} creates a tensor of {use['largest'] / 1024:.0f} KB; one tile of "
                                       f"scores is {tile / 1024:.0f} KB (the whole score matrix "
                                       f"{4 * h * n_q * n_k / 1024:.0f} KB). Allowed: 2 tiles.")
    expect(use["peak"] <= 12 * tile, f"{shown} holds up to {use['peak'] / 1024:.0f} KB of tensors at once; one tile "
                                     f"of scores is {tile / 1024:.0f} KB. Allowed: 12 tiles (keeping every tile's "
                                     f"scores takes {n_k // block}).")
