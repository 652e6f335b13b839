"""Batching: many requests through one model at once (chapter 11).

**Padded batching.** Prompts of different lengths become one (batch, seq) tensor by *left* padding: pad ids
go before each prompt, so every row's newest token sits in the last column, where the next token is read off.
An attention mask keeps real tokens from attending to pads, and positions count from each row's first real
token, so every row computes what it would compute alone. A row that produced its stop token is finished: it
gets pads from then on, and the batch stops when every row has finished.

**Static vs continuous batching.** A static batch admits requests together and releases them together, so
short answers wait for the longest one. Continuous batching (Orca's iteration-level scheduling) looks at the
batch every decode step: finished requests leave and waiting ones take their slots at once.
:func:`simulate` plays both policies on a request stream with a per-step cost model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(ids, mask) of shape (batch, longest): each prompt right-aligned after pads; mask True on real tokens."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, longest - len(prompt):] = torch.tensor(prompt)
            mask[row, longest - len(prompt):] = True
    return ids, mask


def masked_forward(model: nn.Module, ids: Tensor, mask: Tensor, past: list | None = None):
    """A course GPT's forward pass for a left-padded batch: (logits, present).

    ``mask`` (batch, past_len + seq) marks real tokens among all positions so far. Positions count real tokens
    only; a query may attend to real keys at or before it (and to itself, so a pad row is never empty).
    """
    past_len = 0 if past is None else past[0][0].shape[-2]
    seq = ids.shape[1]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
    x = model.wte(ids) + model.wpe.table(positions)
    causal = torch.ones(seq, past_len + seq, dtype=torch.bool).tril(diagonal=past_len)
    itself = torch.zeros(seq, past_len + seq, dtype=torch.bool)
    itself[torch.arange(seq), past_len + torch.arange(seq)] = True
    allowed = (causal & mask[:, None, :]) | itself                                  # (batch, seq, k_len)
    present = []
    for i, block in enumerate(model.blocks):
        out, kv = block.attn(block.ln_1(x), mask=allowed[:, None], past_kv=None if past is None else past[i],
                             use_cache=True)
        x = x + out
        x = x + block.mlp(block.ln_2(x))
        present.append(kv)
    return model.lm_head(model.ln_f(x)), present


@torch.no_grad()
def generate_batch(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, pad_id: int = 0,
                   stop_id: int | None = None) -> list[list[int]]:
    """Greedy generation for several prompts at once (left padding, masks, a KV cache, per-row stopping).
    Returns each prompt's new tokens, ending at (and including) its stop token if it produced one."""
    model.eval()
    ids, mask = left_pad(prompts, pad_id)
    logits, past = masked_forward(model, ids, mask)
    new: list[list[int]] = [[] for _ in prompts]
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(max_new_tokens):
        token = logits[:, -1].argmax(-1)
        for row in range(len(prompts)):
            if not finished[row]:
                new[row].append(int(token[row]))
        if stop_id is not None:
            finished |= token == stop_id
        if bool(finished.all()):
            break
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        mask = torch.cat([mask, ~finished[:, None]], dim=1)
        logits, past = masked_forward(model, token[:, None], mask, past)
    return new


@torch.no_grad()
def generate_alone(model: nn.Module, prompt: list[int], max_new_tokens: int, stop_id: int | None = None) -> list[int]:
    """The reference: one prompt, greedy, with the model's own KV cache; stops after ``stop_id``."""
    model.eval()
    logits, past = model(torch.tensor([prompt]), use_cache=True)
    new = []
    for _ in range(max_new_tokens):
        token = int(logits[0, -1].argmax())
        new.append(token)
        if token == stop_id or len(new) == max_new_tokens:
            break
        logits, past = model(torch.tensor([[token]]), past_kv=past, use_cache=True)
    return new


# --------------------------------------------------------------------------- scheduling a request stream

@dataclass(frozen=True)
class Request:
    """A request arriving at ``arrival`` (seconds) that needs ``new_tokens`` decode steps."""

    arrival: float
    new_tokens: int


def request_stream(n: int, rate: float, shortest: int, longest: int, seed: int = 0) -> list[Request]:
    """``n`` requests with exponential gaps (``rate`` per second) and uniform answer lengths, seeded."""
    gen = torch.Generator().manual_seed(seed)
    gaps = torch.empty(n).exponential_(rate, generator=gen)
    lengths = torch.randint(shortest, longest + 1, (n,), generator=gen)
    times = gaps.cumsum(0) - gaps[0]
    return [Request(float(t), int(k)) for t, k in zip(times, lengths)]


def simulate(requests: list[Request], max_batch: int, policy: str, step_time: tuple[float, float]) -> dict:
    """Play a request stream through one model replica. A decode step over b requests takes
    ``step_time[0] + step_time[1] * b`` seconds; a third number, if given, is added at every step that
    admits requests (the extra pass that prefills their prompts). ``policy``: "static" (admit a new batch only when
    the whole previous one has finished) or "continuous" (refill free slots every step).

    Returns per-request finish times and latencies, the throughput (tokens/s), and the timeline
    (start time, batch size) of every step."""
    if policy not in ("static", "continuous"):
        raise ValueError(f"policy must be 'static' or 'continuous', got {policy!r}")
    if len(step_time) not in (2, 3) or min(step_time) < 0 or sum(step_time) <= 0:
        raise ValueError(f"step_time must be (fixed, per_row) or (fixed, per_row, per_prefill) seconds >= 0, "
                         f"not all 0; got {step_time!r}")
    fixed, per_row, per_prefill = (*step_time, 0.0)[:3]
    waiting = sorted(range(len(requests)), key=lambda i: requests[i].arrival)
    left: dict[int, int] = {}
    finish = [0.0] * len(requests)
    now, timeline, position = 0.0, [], 0
    while position < len(waiting) or left:
        admitted = 0
        if policy == "continuous" or not left:
            while position < len(waiting) and len(left) < max_batch and requests[waiting[position]].arrival <= now:
                left[waiting[position]] = requests[waiting[position]].new_tokens
                position += 1
                admitted += 1
        if not left:  # idle until the next arrival
            now = requests[waiting[position]].arrival
            continue
        duration = fixed + per_row * len(left) + per_prefill * (admitted > 0)
        timeline.append((now, len(left)))
        now += duration
        for i in list(left):
            left[i] -= 1
            if left[i] == 0:
                finish[i] = now
                del left[i]
    latency = [finish[i] - requests[i].arrival for i in range(len(requests))]
    tokens = sum(r.new_tokens for r in requests)
    return {"finish": finish, "latency": latency, "mean_latency": sum(latency) / len(latency),
            "throughput": tokens / (max(finish) - min(r.arrival for r in requests)), "timeline": timeline,
            "steps": len(timeline)}


__all__ = ["Request", "generate_alone", "generate_batch", "left_pad", "masked_forward", "request_stream", "simulate"]
