"""Chapter 11: speculative decoding, a small draft model guesses and the target model checks.

A cheap draft model proposes ``k`` tokens one at a time; the target model scores all of them in one
forward pass. Greedy: keep the longest prefix the target agrees with, then add the target's own token,
so the output is exactly the target's greedy continuation. Sampled: accept a drafted token ``x`` with
probability ``min(1, p(x) / q(x))`` and otherwise draw from ``max(0, p - q)`` normalised, which leaves
every emitted token distributed exactly as the target's ``p``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class SpecStats:
    """What one speculative run did: tokens drafted, drafted tokens accepted, target forward passes."""

    drafted: int = 0
    accepted: int = 0
    target_calls: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.drafted, 1)


@torch.no_grad()
def _logits_last(model: nn.Module, ids: Tensor, n: int = 1) -> Tensor:
    """Logits at the last ``n`` positions of a (1, seq) batch, shape (n, vocab)."""
    return model(ids)[0, -n:].float()


@torch.no_grad()
def greedy_decode(model: nn.Module, ids: Tensor, max_new_tokens: int) -> Tensor:
    """Plain greedy decoding, one target forward pass per token; returns prompt + new tokens (1, seq)."""
    for _ in range(max_new_tokens):
        nxt = _logits_last(model, ids).argmax(-1)
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids


@torch.no_grad()
def speculative_greedy(target: nn.Module, draft: nn.Module, ids: Tensor, max_new_tokens: int,
                       k: int = 4) -> tuple[Tensor, SpecStats]:
    """Greedy speculative decoding; the tokens equal ``greedy_decode(target, ids, max_new_tokens)``."""
    if ids.shape[0] != 1:
        raise ValueError("speculative_greedy decodes one sequence (batch size 1)")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    stats, goal = SpecStats(), ids.shape[1] + max_new_tokens
    while ids.shape[1] < goal:
        steps = min(k, goal - ids.shape[1])
        guess = ids
        for _ in range(steps):
            guess = torch.cat([guess, _logits_last(draft, guess).argmax(-1).view(1, 1)], dim=1)
        proposed = guess[0, ids.shape[1]:]
        # one target pass scores every drafted position plus the one after the last draft
        choice = _logits_last(target, guess, steps + 1).argmax(-1)
        stats.target_calls += 1
        stats.drafted += steps
        agree = int((choice[:steps] == proposed).long().cumprod(0).sum())
        stats.accepted += agree
        new = torch.cat([proposed[:agree], choice[agree:agree + 1]])
        ids = torch.cat([ids, new.view(1, -1)], dim=1)[:, :goal]
    return ids, stats


def accept_probability(p: Tensor, q: Tensor) -> Tensor:
    """Per token, the chance a drafted token is kept: ``min(1, p / q)`` (1 where ``q`` is 0)."""
    return torch.where(q > 0, torch.clamp(p / q.clamp_min(1e-30), max=1.0), torch.ones_like(p))


def residual_distribution(p: Tensor, q: Tensor) -> Tensor:
    """Where to draw from after a rejection: ``max(0, p - q)`` normalised (``p`` itself if p == q)."""
    r = torch.clamp(p - q, min=0.0)
    total = r.sum(-1, keepdim=True)
    return torch.where(total > 0, r / total.clamp_min(1e-30), p)


def one_step_distribution(p: Tensor, q: Tensor) -> Tensor:
    """The exact distribution of the token one draft-and-check step emits, computed by enumeration.

    Token ``x`` comes out either as an accepted draft (``q(x) * min(1, p(x)/q(x))``) or as a draw
    from the residual after any rejection; the sum equals ``p`` for every ``q``.
    """
    accepted = q * accept_probability(p, q)
    return accepted + (1 - accepted.sum(-1, keepdim=True)) * residual_distribution(p, q)


@torch.no_grad()
def speculative_sample(target: nn.Module, draft: nn.Module, ids: Tensor, max_new_tokens: int, k: int = 4,
                       temperature: float = 1.0, generator: torch.Generator | None = None
                       ) -> tuple[Tensor, SpecStats]:
    """Sampled speculative decoding; each emitted token is distributed as the target's own sample."""
    if ids.shape[0] != 1:
        raise ValueError("speculative_sample decodes one sequence (batch size 1)")
    stats, goal = SpecStats(), ids.shape[1] + max_new_tokens
    while ids.shape[1] < goal:
        steps = min(k, goal - ids.shape[1])
        guess, qs = ids, []
        for _ in range(steps):
            q = torch.softmax(_logits_last(draft, guess)[0] / temperature, -1)
            tok = torch.multinomial(q, 1, generator=generator)
            qs.append(q)
            guess = torch.cat([guess, tok.view(1, 1)], dim=1)
        ps = torch.softmax(_logits_last(target, guess, steps + 1) / temperature, -1)
        stats.target_calls += 1
        stats.drafted += steps
        new = []
        for i in range(steps):
            x = int(guess[0, ids.shape[1] + i])
            u = torch.rand((), generator=generator)
            if u < accept_probability(ps[i, x], qs[i][x]):
                new.append(x)
                stats.accepted += 1
            else:
                new.append(int(torch.multinomial(residual_distribution(ps[i], qs[i]), 1, generator=generator)))
                break
        else:
            new.append(int(torch.multinomial(ps[steps], 1, generator=generator)))
        ids = torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], dim=1)[:, :goal]
    return ids, stats
