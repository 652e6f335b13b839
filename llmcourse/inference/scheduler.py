"""A real scheduler: static and continuous batching of a request stream through a GPT (chapter 11).

:func:`llmcourse.inference.batching.simulate` plays the two policies with a cost model. :class:`Scheduler`
does the work: requests (arrival time, prompt ids, how many new tokens at most, an optional stop id) come in
over time, and every **step** it

1. *admits* waiting requests that have arrived into free slots: under ``"continuous"`` at every step, under
   ``"static"`` only when the whole previous batch has finished;
2. *prefills* the newly admitted prompts (one left-padded pass) and reads their first token;
3. *decodes* one token for every request admitted earlier, all in one batched pass;
4. *retires* requests that produced their stop token or their last allowed token.

Every request keeps its own KV cache: a slot of a contiguous cache (:class:`SlotCache`, a whole context
reserved per request) or blocks of a :class:`~llmcourse.inference.paged_cache.PagedKVCache`
(:class:`PagedSlots`). A decode step reads the running requests' caches padded to the longest and runs
:func:`~llmcourse.inference.batching.masked_forward`, whose mask hides the padding, so every request gets
exactly its own answer whoever shares the batch with it.

Time is a virtual clock: each step advances it by the step's measured duration (``step_time=None``) or by
a cost model ``fixed + per_row * batch [+ per_prefill if it prefills]`` (the simulator's, for runs that are the
same on every machine); an
idle server jumps to the next arrival. No step ever sleeps.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.inference.batching import Request, left_pad, masked_forward, request_stream
from llmcourse.inference.paged_cache import PagedKVCache

POLICIES = ("static", "continuous")
CACHES = ("contiguous", "paged")


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt arriving at ``arrival`` (seconds) that wants up to ``max_new_tokens`` greedy tokens, stopping
    early after ``stop_id`` if given."""

    arrival: float
    prompt: tuple[int, ...]
    max_new_tokens: int
    stop_id: int | None = None


@dataclass
class Served:
    """What happened to one request: its tokens, and when it was admitted, got its first token and finished."""

    request: GenerationRequest
    tokens: list[int] = field(default_factory=list)
    admitted: float = math.nan
    first_token: float = math.nan
    finished: float = math.nan

    @property
    def latency(self) -> float:
        """Seconds from arrival to the last token."""
        return self.finished - self.request.arrival

    @property
    def time_to_first_token(self) -> float:
        """Seconds from arrival to the first token (waiting in the queue plus the prefill step)."""
        return self.first_token - self.request.arrival


@dataclass
class _Running:
    index: int
    served: Served
    length: int = 0                                   # positions in this request's cache


# --------------------------------------------------------------------------- where the keys and values live

class SlotCache:
    """One contiguous slab per batch slot (section 2's contiguous cache): ``k`` and ``v`` of shape
    (n_layers, max_batch, n_heads, context_length, head_dim). A request writes its positions from 0 up in the
    slot it holds; a decode step reads the slots of the running requests up to the longest one."""

    def __init__(self, model: nn.Module, max_batch: int):
        cfg = model.config
        shape = (cfg.n_layers, max_batch, cfg.n_heads, cfg.context_length, cfg.d_model // cfg.n_heads)
        self.k, self.v = torch.zeros(shape), torch.zeros(shape)
        self.free = list(range(max_batch))
        self.slot: dict[int, int] = {}

    def add(self, index: int, k: Tensor, v: Tensor) -> None:
        """A new request's prompt: ``k``, ``v`` of shape (n_layers, n_heads, length, head_dim)."""
        slot = self.slot[index] = self.free.pop(0)
        self.k[:, slot, :, :k.shape[-2]], self.v[:, slot, :, :v.shape[-2]] = k, v

    def batch(self, indices: list[int], lengths: list[int]) -> list[tuple[Tensor, Tensor]]:
        """Every layer's (k, v) for these requests, (batch, n_heads, longest, head_dim), padded on the right."""
        slots = torch.tensor([self.slot[i] for i in indices])
        k = self.k[:, :, :, :max(lengths)].index_select(1, slots)
        v = self.v[:, :, :, :max(lengths)].index_select(1, slots)
        return list(zip(k, v))

    def append(self, indices: list[int], lengths: list[int], k: Tensor, v: Tensor) -> None:
        """One new position per request: ``k``, ``v`` (batch, n_layers, n_heads, head_dim) at index ``lengths``."""
        slots, at = torch.tensor([self.slot[i] for i in indices]), torch.tensor(lengths)
        self.k[:, slots, :, at], self.v[:, slots, :, at] = k, v

    def release(self, index: int) -> None:
        self.free.append(self.slot.pop(index))

    @property
    def in_use(self) -> int:
        """Token slots reserved: a whole context per running request."""
        return len(self.slot) * self.k.shape[3]


class PagedSlots:
    """The same interface over a :class:`~llmcourse.inference.paged_cache.PagedKVCache`: blocks are taken as a
    request grows and returned when it finishes; a decode step gathers each request through its block table."""

    def __init__(self, model: nn.Module, max_batch: int, block_size: int):
        cfg = model.config
        blocks = max_batch * math.ceil(cfg.context_length / block_size)
        self.pool = PagedKVCache(blocks, block_size, cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.n_layers)

    def add(self, index: int, k: Tensor, v: Tensor) -> None:
        self.pool.add_sequence(str(index))
        self.pool.append(str(index), k, v)

    def batch(self, indices: list[int], lengths: list[int]) -> list[tuple[Tensor, Tensor]]:
        longest, layers = max(lengths), self.pool.k_pool.shape[0]
        rows = [[F.pad(t, (0, 0, 0, longest - n)) for t in self.pool.gather(str(i), layer)]
                for i, n in zip(indices, lengths) for layer in range(layers)]
        k = torch.stack([r[0] for r in rows]).unflatten(0, (len(indices), layers)).transpose(0, 1)
        v = torch.stack([r[1] for r in rows]).unflatten(0, (len(indices), layers)).transpose(0, 1)
        return list(zip(k, v))

    def append(self, indices: list[int], lengths: list[int], k: Tensor, v: Tensor) -> None:
        for row, index in enumerate(indices):
            self.pool.append(str(index), k[row, :, :, None], v[row, :, :, None])

    def release(self, index: int) -> None:
        self.pool.free_sequence(str(index))

    @property
    def in_use(self) -> int:
        """Token slots reserved: whole blocks."""
        return self.pool.blocks_in_use * self.pool.block_size


class Scheduler:
    """Serve a stream of :class:`GenerationRequest` with a course GPT, ``max_batch`` at a time.

    ``policy``: ``"static"`` or ``"continuous"``. ``step_time``: ``None`` to advance the clock by each
    step's measured duration, or ``(fixed, per_row)`` or ``(fixed, per_row, per_prefill)`` seconds, as in
    :func:`~llmcourse.inference.batching.simulate`. ``cache``: ``"contiguous"`` (a whole context
    reserved per request) or ``"paged"`` (blocks of ``block_size`` in one shared pool).
    """

    def __init__(self, model: nn.Module, max_batch: int, policy: str = "continuous", pad_id: int = 0,
                 step_time: tuple[float, ...] | None = None, cache: str = "contiguous", block_size: int = 16):
        if policy not in POLICIES:
            raise ValueError(f"policy must be 'static' or 'continuous', got {policy!r}")
        if cache not in CACHES:
            raise ValueError(f"cache must be 'contiguous' or 'paged', got {cache!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
        if step_time is not None and (len(step_time) not in (2, 3) or min(step_time) < 0 or sum(step_time) <= 0):
            raise ValueError(f"step_time must be None (measure), (fixed, per_row) or (fixed, per_row, per_prefill) "
                             f"seconds >= 0, not all 0; got {step_time!r}")
        self.model, self.max_batch, self.policy, self.pad_id = model.eval(), max_batch, policy, pad_id
        self.step_time = None if step_time is None else (*step_time, 0.0)[:3]
        self.cache = SlotCache(model, max_batch) if cache == "contiguous" else PagedSlots(model, max_batch, block_size)
        self.now = 0.0
        self.waiting: deque[int] = deque()
        self.running: list[_Running] = []
        self.served: list[Served] = []
        self.timeline: list[tuple[float, int]] = []   # (start, batch size) of every step
        self.durations: list[float] = []              # seconds each step took on the clock
        self.prefills: list[int] = []                 # how many prompts each step prefilled
        self.peak_slots = 0                           # most token slots the cache held at once

    # ------------------------------------------------------------------ the loop
    def run(self, requests: list[GenerationRequest]) -> dict:
        """Serve every request; returns :meth:`report`."""
        context = self.model.config.context_length
        for i, r in enumerate(requests):
            if len(r.prompt) == 0 or r.max_new_tokens < 1:
                raise ValueError(f"request {i}: the prompt must have at least one token and max_new_tokens "
                                 f"must be >= 1 (got {len(r.prompt)} tokens, max_new_tokens={r.max_new_tokens})")
            if len(r.prompt) + r.max_new_tokens - 1 > context:
                raise ValueError(f"request {i}: prompt ({len(r.prompt)} tokens) + max_new_tokens "
                                 f"({r.max_new_tokens}) - 1 is more than the model's context length {context}")
        self.served = [Served(r) for r in requests]
        self.waiting = deque(sorted(range(len(requests)), key=lambda i: requests[i].arrival))
        with torch.no_grad():
            while self.waiting or self.running:
                self.step()
        return self.report()

    def step(self) -> None:
        """One iteration: admit, prefill the new prompts, decode one token for the others, retire."""
        if self.policy == "continuous" or not self.running:
            while (self.waiting and len(self.running) < self.max_batch
                   and self.served[self.waiting[0]].request.arrival <= self.now):
                index = self.waiting.popleft()
                self.running.append(_Running(index, self.served[index]))
                self.served[index].admitted = self.now
        if not self.running:                                   # idle: jump to the next arrival
            self.now = self.served[self.waiting[0]].request.arrival
            return
        start = time.perf_counter()
        new = [r for r in self.running if r.length == 0]      # admitted this step: nothing cached yet
        old = [r for r in self.running if r.length > 0]
        if new:
            self._prefill(new)
        if old:
            self._decode(old)
        measured = time.perf_counter() - start
        if self.step_time is None:
            duration = measured
        else:
            fixed, per_row, per_prefill = self.step_time
            duration = fixed + per_row * len(self.running) + (per_prefill if new else 0.0)
        self.timeline.append((self.now, len(self.running)))
        self.durations.append(duration)
        self.prefills.append(len(new))
        self.now += duration
        for r in new:
            r.served.first_token = self.now
        self.peak_slots = max(self.peak_slots, self.cache.in_use)
        for r in list(self.running):
            request, tokens = r.served.request, r.served.tokens
            if tokens[-1] == request.stop_id or len(tokens) == request.max_new_tokens:
                r.served.finished = self.now
                self.running.remove(r)
                self.cache.release(r.index)

    # ------------------------------------------------------------------ the two passes
    def _prefill(self, new: list[_Running]) -> None:
        """All new prompts in one left-padded pass; each request keeps its own positions' keys and values."""
        ids, mask = left_pad([list(r.served.request.prompt) for r in new], self.pad_id)
        logits, present = masked_forward(self.model, ids, mask)
        for row, r in enumerate(new):
            r.length = n = len(r.served.request.prompt)
            self.cache.add(r.index, torch.stack([k[row, :, -n:] for k, _ in present]),
                           torch.stack([v[row, :, -n:] for _, v in present]))
            r.served.tokens.append(int(logits[row, -1].argmax()))

    def _decode(self, old: list[_Running]) -> None:
        """The newest token of every running request in one pass over their caches. The caches are padded on
        the right to the longest; the mask hides the padding, so positions still count real tokens only."""
        indices, lengths = [r.index for r in old], [r.length for r in old]
        past = self.cache.batch(indices, lengths)
        mask = torch.arange(max(lengths) + 1)[None, :] < torch.tensor(lengths)[:, None]
        mask[:, -1] = True                                     # the new token itself
        last = torch.tensor([[r.served.tokens[-1]] for r in old])
        logits, present = masked_forward(self.model, last, mask, past)
        self.cache.append(indices, lengths, torch.stack([k[:, :, -1] for k, _ in present], 1),
                          torch.stack([v[:, :, -1] for _, v in present], 1))
        for row, r in enumerate(old):
            r.length += 1
            r.served.tokens.append(int(logits[row, -1].argmax()))

    # ------------------------------------------------------------------ what happened
    def report(self) -> dict:
        """Per-request records and times, and the totals, in the shape :func:`batching.simulate` returns
        (``finish``, ``latency``, ``mean_latency``, ``throughput``, ``timeline``, ``steps``) plus ``served``,
        ``tokens``, ``time_to_first_token``, ``mean_time_to_first_token``, ``durations``, ``prefills``,
        ``busy_s`` and ``peak_slots``."""
        served = self.served
        tokens = sum(len(s.tokens) for s in served)
        span = max(s.finished for s in served) - min(s.request.arrival for s in served)
        latency = [s.latency for s in served]
        ttft = [s.time_to_first_token for s in served]
        return {"served": served, "tokens": [list(s.tokens) for s in served],
                "finish": [s.finished for s in served], "latency": latency,
                "mean_latency": sum(latency) / len(latency), "time_to_first_token": ttft,
                "mean_time_to_first_token": sum(ttft) / len(ttft), "throughput": tokens / span,
                "timeline": list(self.timeline), "steps": len(self.timeline), "durations": list(self.durations),
                "prefills": list(self.prefills), "busy_s": sum(self.durations), "peak_slots": self.peak_slots}


def serve(model: nn.Module, requests: list[GenerationRequest], max_batch: int, policy: str = "continuous",
          step_time: tuple[float, float] | None = None, cache: str = "contiguous", pad_id: int = 0) -> dict:
    """Run a fresh :class:`Scheduler` over ``requests``; returns its report."""
    return Scheduler(model, max_batch, policy, pad_id=pad_id, step_time=step_time, cache=cache).run(requests)


def prompt_stream(prompts: list[list[int]], rate: float, shortest: int, longest: int, seed: int = 0,
                  stop_id: int | None = None) -> list[GenerationRequest]:
    """One request per prompt, with the arrival times and answer lengths of
    :func:`batching.request_stream` (same ``rate``, lengths and ``seed``), so the simulator can play the
    same stream."""
    stream = request_stream(len(prompts), rate, shortest, longest, seed)
    return [GenerationRequest(s.arrival, tuple(p), s.new_tokens, stop_id) for s, p in zip(stream, prompts)]


def as_simulated(report: dict) -> list[Request]:
    """The served stream as the simulator's requests: each arrival with the number of tokens it really got."""
    return [Request(s.request.arrival, len(s.tokens)) for s in report["served"]]


def fit_step_time(report: dict, prefill: bool = False) -> tuple[float, ...]:
    """Least-squares ``(fixed, per_row)`` seconds of a measured run's steps against their batch sizes; with
    ``prefill=True`` also ``per_prefill``, the extra seconds of a step that prefills new prompts (needs ``prefills``).
    No cost comes out negative (non-negative least squares)."""
    sizes = torch.tensor([b for _, b in report["timeline"]], dtype=torch.float64)
    durations = torch.tensor(report["durations"], dtype=torch.float64)
    columns = [torch.ones_like(sizes), sizes]
    if prefill:
        columns.append(torch.tensor([float(p > 0) for p in report["prefills"]], dtype=torch.float64))
    design = torch.stack(columns, dim=1)
    # a cost is never negative: a coefficient that comes out below zero (noise in the timings) is fixed at zero
    # and the others refitted without it
    keep = list(range(design.shape[1]))
    while True:
        solution = torch.linalg.lstsq(design[:, keep], durations[:, None]).solution[:, 0]
        if (solution >= 0).all() or len(keep) == 1:
            break
        del keep[int(solution.argmin())]
    coefficients = [0.0] * design.shape[1]
    for index, value in zip(keep, solution.clamp(min=0).tolist()):
        coefficients[index] = value
    return tuple(coefficients)


__all__ = ["CACHES", "GenerationRequest", "POLICIES", "PagedSlots", "Scheduler", "Served", "SlotCache", "as_simulated",
           "fit_step_time", "prompt_stream", "serve"]
