"""The output layer: from logits to the next token (chapter 07).

A language model ends with one score per vocabulary entry, the *logits*. This
module turns them into a choice, read top to bottom:

1. :func:`softmax_with_temperature`: divide by a temperature T, then softmax.
   T < 1 sharpens the distribution, T > 1 flattens it; T -> 0 is the arg max.
2. :func:`greedy`: always the most likely token.
3. :func:`top_k_filter` and :func:`top_p_filter`: remove the unlikely tail
   (keep the k best tokens, or the smallest set whose probability reaches p) by
   setting their logits to -inf, so that softmax gives them probability 0.
4. :func:`sample_next`: temperature, then top-k, then top-p, then one draw from
   the distribution (with an optional ``torch.Generator`` for reproducibility).
5. :func:`beam_search`: keep the ``num_beams`` best partial sequences, scored by
   their total log-probability divided by GNMT's length penalty
   ``((5 + length) / 6) ** alpha`` (:func:`length_penalty`).

Invalid settings raise ``ValueError`` with a message that says what is allowed:
temperature must be > 0, top_k >= 1, top_p in (0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

# --------------------------------------------------------------------------- checking the settings


def check_sampling_params(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """Raise ``ValueError`` unless temperature > 0, top_k is None or an int >= 1, top_p is None or in (0, 1]."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; for the most likely token "
                         f"every time use greedy decoding (top_k=1) instead of temperature 0")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None (no limit) or a whole number >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be None (no limit) or a probability in (0, 1], got {top_p!r}")


# --------------------------------------------------------------------------- temperature


def softmax_with_temperature(logits: Tensor, temperature: float = 1.0, dim: int = -1) -> Tensor:
    """softmax(logits / T) along ``dim``: T = 1 is the model's own distribution."""
    check_sampling_params(temperature)
    return torch.softmax(logits / temperature, dim=dim)


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy -sum p log p in nats (0 for a certain choice, log V for a uniform one)."""
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(dim)


# --------------------------------------------------------------------------- greedy, top-k, top-p


def greedy(logits: Tensor) -> Tensor:
    """The index of the largest logit along the last dimension (the first one on ties)."""
    return logits.argmax(dim=-1)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th), set the others to -inf.

    ``k`` larger than the vocabulary keeps everything.
    """
    check_sampling_params(top_k=k)
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: Tensor, p: float, temperature: float = 1.0) -> Tensor:
    """Nucleus filtering: keep the fewest most likely tokens whose probabilities add up to at least p.

    Sort the probabilities (of ``softmax(logits / temperature)``) from largest to
    smallest; a token is kept when the tokens ranked before it sum to less than
    p. The most likely token is always kept. The others' logits become -inf.
    """
    check_sampling_params(temperature=temperature, top_p=p)
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # probability of the better-ranked tokens
    remove_sorted = mass_before >= p
    remove_sorted[..., 0] = False
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    """logits / T, then top-k, then top-p (the order ``transformers`` uses): the logits to sample from."""
    check_sampling_params(temperature, top_k, top_p)
    if not torch.isfinite(logits).any(dim=-1).all():
        raise ValueError("the logits hold no finite value in some row (NaN or infinite weights?): a model "
                         "that diverged in training cannot be sampled from")
    scaled = logits / temperature
    if bool((torch.isinf(scaled) & torch.isfinite(logits)).any()):
        # a tiny temperature overflows: shift each row's best logit to 0 first (softmax is unchanged by a shift)
        scaled = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    logits = scaled
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return logits


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row of ``logits`` (..., vocab): returns ids of shape (...).

    ``top_k=1`` is greedy decoding: only the best token is left to draw.
    """
    filtered = filter_logits(logits, temperature, top_k, top_p)
    probs = torch.softmax(filtered.float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


# --------------------------------------------------------------------------- step-by-step decoding

StepFunction = Callable[[Tensor], Tensor]  # ids (batch, seq) -> next-token logits (batch, vocab)


def greedy_decode(step_fn: StepFunction, ids: Tensor, max_new_tokens: int, eos_id: int | None = None) -> Tensor:
    """Append the arg-max token ``max_new_tokens`` times (stop early after ``eos_id``); ids is 1-D."""
    ids = ids.clone()
    for _ in range(max_new_tokens):
        token = greedy(step_fn(ids[None])[0])
        ids = torch.cat([ids, token.reshape(1)])
        if eos_id is not None and int(token) == eos_id:
            break
    return ids


def sequence_log_prob(step_fn: StepFunction, prompt: Tensor, continuation: Tensor) -> float:
    """log P(continuation | prompt) = sum of the log-probabilities of each continuation token."""
    total = 0.0
    ids = prompt.clone()
    for token in continuation.tolist():
        log_probs = torch.log_softmax(step_fn(ids[None])[0].double(), dim=-1)
        total += float(log_probs[token])
        ids = torch.cat([ids, torch.tensor([token], dtype=ids.dtype)])
    return total


# --------------------------------------------------------------------------- beam search


def length_penalty(length: int | float, alpha: float) -> float:
    """GNMT's length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14).

    A beam's score is log P(Y) / lp(Y). Log-probabilities are negative and only
    fall as a sequence grows, so with alpha = 0 (no penalty) short sequences win;
    alpha > 0 divides long sequences' scores by more, making them less negative.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    return ((5.0 + length) / 6.0) ** alpha


@dataclass
class Hypothesis:
    """A candidate continuation: its tokens, total log-probability and length-normalised score."""

    tokens: list[int]
    log_prob: float
    score: float


def beam_search(step_fn: StepFunction, ids: Tensor, num_beams: int, max_new_tokens: int,
                eos_id: int | None = None, alpha: float = 0.0,
                return_all: bool = False) -> tuple[Tensor, float] | list[Hypothesis]:
    """Beam search with GNMT's length penalty; ``ids`` is a 1-D prompt.

    Each step extends every live beam by every token and keeps the ``num_beams``
    candidates with the highest total log-probability. A candidate that ends in
    ``eos_id`` is finished: it is set aside (if it ranks among those kept) and
    not extended. After ``max_new_tokens`` steps the live beams are finished too.
    Every finished hypothesis is scored log P / length_penalty(new tokens, alpha).

    Returns ``(prompt + best continuation, best score)``, or with ``return_all=True``
    every finished :class:`Hypothesis`, best first.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"num_beams and max_new_tokens must be >= 1, got {num_beams} and {max_new_tokens}")
    if ids.dim() != 1:
        raise ValueError(f"beam_search takes one prompt of shape (seq,), got {tuple(ids.shape)}")
    live: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[Hypothesis] = []

    def finish(tokens: list[int], log_prob: float) -> None:
        finished.append(Hypothesis(tokens, log_prob, log_prob / length_penalty(len(tokens), alpha)))

    for _ in range(max_new_tokens):
        batch = torch.stack([torch.cat([ids, torch.tensor(t, dtype=ids.dtype)]) for t, _ in live])
        log_probs = torch.log_softmax(step_fn(batch).double(), dim=-1)  # (n_live, vocab)
        candidates = [(tokens + [token], score + float(log_probs[b, token]))
                      for b, (tokens, score) in enumerate(live) for token in range(log_probs.shape[-1])]
        candidates.sort(key=lambda c: c[1], reverse=True)  # stable: ties keep beam, then token order
        live = []
        for tokens, score in candidates:
            if eos_id is not None and tokens[-1] == eos_id:
                finish(tokens, score)
            else:
                live.append((tokens, score))
            if len(live) == num_beams:
                break
        if not live:
            break
    for tokens, score in live:
        finish(tokens, score)
    finished.sort(key=lambda h: h.score, reverse=True)
    if return_all:
        return finished
    best = finished[0]
    return torch.cat([ids, torch.tensor(best.tokens, dtype=ids.dtype)]), best.score


def brute_force_best(step_fn: StepFunction, ids: Tensor, vocab_size: int, max_new_tokens: int,
                     eos_id: int | None = None, alpha: float = 0.0) -> Hypothesis:
    """The best-scoring continuation found by trying every one (tiny vocabularies only).

    The candidates are those beam search can return: sequences that end at their
    first ``eos_id``, or that reach ``max_new_tokens`` without one.
    """
    best: Hypothesis | None = None

    def visit(tokens: list[int], log_prob: float) -> None:
        nonlocal best
        ended = eos_id is not None and tokens and tokens[-1] == eos_id
        if ended or len(tokens) == max_new_tokens:
            score = log_prob / length_penalty(len(tokens), alpha)
            if best is None or score > best.score:
                best = Hypothesis(list(tokens), log_prob, score)
            return
        prefix = torch.cat([ids, torch.tensor(tokens, dtype=ids.dtype)])
        log_probs = torch.log_softmax(step_fn(prefix[None])[0].double(), dim=-1)
        for token in range(vocab_size):
            visit(tokens + [token], log_prob + float(log_probs[token]))

    visit([], 0.0)
    assert best is not None
    return best


__all__ = [
    "check_sampling_params", "softmax_with_temperature", "entropy", "greedy", "top_k_filter", "top_p_filter",
    "filter_logits", "sample_next", "greedy_decode", "sequence_log_prob", "length_penalty", "Hypothesis",
    "beam_search", "brute_force_best", "StepFunction",
]
