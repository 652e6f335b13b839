"""Evaluating a language model: held-out loss per token, bits per byte, multiple-choice tasks (chapter 08).

* :func:`token_nlls` scores every token of a held-out text once, with windows that slide by ``stride`` tokens, so
  each token is predicted from at least ``context_length - stride`` tokens before it (stride = context length:
  non-overlapping windows, where the first tokens of each window see little). Average the result over tokens.
* :func:`bits_per_byte` turns a total loss in nats into bits per byte of text: the one unit in which models with
  different tokenizers (or none) can be compared.
* :func:`multiple_choice_items` and :func:`multiple_choice_accuracy` make and score a small benchmark-style task:
  a passage of held-out text, its true continuation and continuations of the same length taken from elsewhere; the
  model picks the one it gives the highest log-likelihood (:func:`choice_log_likelihood`).
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _windows(n_tokens: int, context_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position) of each window over ``n_tokens`` ids; targets ``start + 1 .. end``."""
    plan, scored_to = [], 0            # targets up to (and excluding) index scored_to + 1 are scored already
    start = 0
    while scored_to < n_tokens - 1:
        end = min(start + context_length, n_tokens - 1)
        plan.append((start, end, scored_to - start))
        scored_to = end
        start += stride
    return plan


@torch.no_grad()
def token_nlls(model: nn.Module, ids: Tensor, context_length: int, stride: int | None = None,
               batch_size: int = 32) -> Tensor:
    """-log P(ids[t] | up to ``context_length`` tokens before it) for every t >= 1, in nats (float64).

    Windows of ``context_length`` inputs start every ``stride`` tokens (default: ``context_length``, no overlap);
    each window scores only the targets that no earlier window scored, so every token counts exactly once.
    """
    stride = context_length if stride is None else stride
    if not 1 <= stride <= context_length:
        raise ValueError(f"stride must be between 1 and context_length={context_length}, got {stride}")
    ids = torch.as_tensor(ids, dtype=torch.int64).flatten()
    if len(ids) < 2:
        raise ValueError("need at least two tokens: the first is only context")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(ids) - 1, dtype=torch.float64)
    plan = _windows(len(ids), context_length, stride)
    by_length: dict[int, list[tuple[int, int, int]]] = {}
    for window in plan:
        by_length.setdefault(window[1] - window[0], []).append(window)
    for length, windows in by_length.items():
        for i in range(0, len(windows), batch_size):
            group = windows[i:i + batch_size]
            x = torch.stack([ids[s:e] for s, e, _ in group]).to(device)
            y = torch.stack([ids[s + 1:e + 1] for s, e, _ in group]).to(device)
            nll = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none").double().cpu()
            for row, (s, e, keep) in zip(nll, group):
                out[s + keep:e] = row[keep:]
    model.train(was_training)
    return out


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    """A text's total loss (nats, summed over its tokens) as bits per byte of the text: ``total / (n_bytes ln 2)``."""
    if n_bytes < 1:
        raise ValueError(f"n_bytes must be >= 1, got {n_bytes}")
    return float(total_nats) / (n_bytes * math.log(2))


@torch.no_grad()
def choice_log_likelihood(model: nn.Module, context: Tensor, continuation: Tensor) -> float:
    """log P(continuation | context) under a GPT, summed over the continuation's tokens (nats), in one pass."""
    return float(choice_log_likelihoods(model, context, [continuation])[0])


@torch.no_grad()
def choice_log_likelihoods(model: nn.Module, context: Tensor, choices: Sequence[Tensor]) -> Tensor:
    """log P(choice | context) for choices of equal length, all in one batched pass (float64, nats)."""
    context = torch.as_tensor(context, dtype=torch.int64).flatten()
    choices = torch.stack([torch.as_tensor(c, dtype=torch.int64).flatten() for c in choices])
    if len(context) == 0 or choices.shape[1] == 0:
        raise ValueError("need at least one context token and one continuation token")
    whole = torch.cat([context.expand(len(choices), -1), choices], dim=1)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(whole[:, :-1].to(device)).double().cpu()
    model.train(was_training)
    log_probs = logits.log_softmax(-1)[:, len(context) - 1:]       # the positions that predict the choice
    return log_probs.gather(-1, choices[..., None])[..., 0].sum(-1)


def multiple_choice_items(ids: Tensor, n_items: int, context_tokens: int = 32, choice_tokens: int = 8,
                          n_choices: int = 4, seed: int = 0) -> list[dict]:
    """A multiple-choice task cut from a held-out id sequence: which continuation really follows the passage?

    Each item is a dict with ``context`` (``context_tokens`` ids), ``choices`` (``n_choices`` tensors of
    ``choice_tokens`` ids: the true continuation and spans from random other places, in a seeded random order)
    and ``answer`` (the index of the true one). All choices have the same number of tokens, so a summed
    log-likelihood does not favour short ones. Passages do not overlap.
    """
    ids = torch.as_tensor(ids, dtype=torch.int64).flatten()
    span = context_tokens + choice_tokens
    starts = list(range(0, len(ids) - span + 1, span))
    if len(starts) < n_items:
        raise ValueError(f"{len(ids)} tokens hold only {len(starts)} passages of {span}, not {n_items}")
    rng = random.Random(seed)
    items = []
    for s in rng.sample(starts, n_items):
        true = ids[s + context_tokens:s + span]
        choices = [true]
        while len(choices) < n_choices:
            r = rng.randrange(0, len(ids) - choice_tokens + 1)
            other = ids[r:r + choice_tokens]
            if abs(r - (s + context_tokens)) >= choice_tokens and not any(torch.equal(other, c) for c in choices):
                choices.append(other)
        order = list(range(n_choices))
        rng.shuffle(order)
        items.append({"context": ids[s:s + context_tokens], "choices": [choices[i] for i in order],
                      "answer": order.index(0)})
    return items


def multiple_choice_accuracy(score: Callable[[Tensor, Sequence[Tensor]], Sequence[float]],
                             items: Sequence[dict]) -> float:
    """The share of items where ``score(context, choices)`` (one number per choice) is highest for the true choice.

    Ties count as wrong.
    """
    right = 0
    for item in items:
        scores = [float(v) for v in score(item["context"], item["choices"])]
        best = max(scores)
        right += scores[item["answer"]] == best and scores.count(best) == 1
    return right / len(items)


__all__ = ["bits_per_byte", "choice_log_likelihood", "choice_log_likelihoods", "multiple_choice_accuracy", "multiple_choice_items",
           "token_nlls"]
