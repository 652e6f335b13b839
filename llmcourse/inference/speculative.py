"""Chapter 11: speculative decoding, a small draft model guesses and the target model checks.

A cheap draft model proposes ``k`` tokens one at a time; the target model scores all of them in one
forward pass. Greedy: keep the longest prefix the target agrees with, then add the target's own token,
so the output is exactly the target's greedy continuation. Sampled: accept a drafted token ``x`` with
probability ``min(1, p(x) / q(x))`` and otherwise draw from ``max(0, p - q)`` normalised, which leaves
every emitted token distributed exactly as the target's ``p``.

Functions, in reading order:

* :func:`greedy_decode` - plain greedy decoding, the reference (``use_cache=True``: with the KV cache);
* :func:`speculative_greedy` - draft ``k``, verify in one target pass; ``use_cache=True`` keeps a KV cache for
  the draft and the target, feeds only the tokens each has not seen and rolls both caches back to the
  accepted length after every round (the tokens are the same as without it);
* :func:`accept_probability`, :func:`residual_distribution`, :func:`one_step_distribution` - the sampled
  rule, and the exact distribution of one draft-and-check step;
* :func:`speculative_sample` - sampled speculative decoding (``use_cache=True`` as above);
* :func:`measure_speedup` - acceptance rate, target passes and wall-clock speed-up against plain cached
  greedy decoding for several ``k``; :func:`plot_speedup` draws them;
* :func:`pass_costs`, :func:`predicted_speedup` - the same speed-up from the cost of one pass of each model.
"""
from __future__ import annotations

from dataclasses import dataclass

import time
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
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


class _CachedModel:
    """A model with its KV cache: ``logits(ids, n)`` feeds only the tokens of ``ids`` the cache has not seen."""

    def __init__(self, model: nn.Module):
        self.model, self.past = model, None

    @property
    def length(self) -> int:
        return 0 if self.past is None else self.past[0][0].shape[-2]

    @torch.no_grad()
    def logits(self, ids: Tensor, n: int = 1) -> Tensor:
        fresh = ids[:, self.length:]
        if fresh.shape[1] < n:
            raise ValueError(f"asked for logits at {n} positions but only {fresh.shape[1]} are new")
        out, self.past = self.model(fresh, past_kv=self.past, use_cache=True)
        return out[0, -n:].float()

    def roll_back(self, length: int) -> None:
        """Forget every cached position from ``length`` on (the tokens the target rejected)."""
        if self.past is not None and length < self.length:
            self.past = [(k[..., :length, :], v[..., :length, :]) for k, v in self.past]


def _scorer(model: nn.Module, use_cache: bool):
    """``score(ids, n)``: logits at the last ``n`` positions, with the model's KV cache or without."""
    if use_cache:
        cached = _CachedModel(model)
        return cached.logits, cached.roll_back
    return (lambda ids, n=1: _logits_last(model, ids, n)), (lambda length: None)


def _check(ids: Tensor, k: int, name: str) -> None:
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"{name} decodes one sequence: ids must have shape (1, seq), got "
                         f"{tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (tokens drafted per round) must be a whole number >= 1, got {k!r}")


@torch.no_grad()
def greedy_decode(model: nn.Module, ids: Tensor, max_new_tokens: int, use_cache: bool = False) -> Tensor:
    """Plain greedy decoding, one target forward pass per token; returns prompt + new tokens (1, seq).

    ``use_cache=True`` feeds only the newest token at each step (chapter 07's KV cache).
    """
    score, _ = _scorer(model, use_cache)
    for _ in range(max_new_tokens):
        nxt = score(ids).argmax(-1)
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids


@torch.no_grad()
def speculative_greedy(target: nn.Module, draft: nn.Module, ids: Tensor, max_new_tokens: int,
                       k: int = 4, use_cache: bool = False) -> tuple[Tensor, SpecStats]:
    """Greedy speculative decoding; the tokens equal ``greedy_decode(target, ids, max_new_tokens)``.

    With ``use_cache=True`` both models keep a KV cache holding every accepted token but the newest: the
    draft feeds one token per guess, the target scores the newest token and the ``k`` guesses in one pass,
    and after the check both caches are cut back to the accepted length.
    """
    _check(ids, k, "speculative_greedy")
    draft_score, draft_back = _scorer(draft, use_cache)
    target_score, target_back = _scorer(target, use_cache)
    stats, goal = SpecStats(), ids.shape[1] + max_new_tokens
    while ids.shape[1] < goal:
        steps = min(k, goal - ids.shape[1])
        guess = ids
        for _ in range(steps):
            guess = torch.cat([guess, draft_score(guess).argmax(-1).view(1, 1)], dim=1)
        proposed = guess[0, ids.shape[1]:]
        # one target pass scores every drafted position plus the one after the last draft
        choice = target_score(guess, steps + 1).argmax(-1)
        stats.target_calls += 1
        stats.drafted += steps
        agree = int((choice[:steps] == proposed).long().cumprod(0).sum())
        stats.accepted += agree
        new = torch.cat([proposed[:agree], choice[agree:agree + 1]])
        ids = torch.cat([ids, new.view(1, -1)], dim=1)[:, :goal]
        # the caches keep what matches the accepted tokens; the newest token is fed next round
        draft_back(ids.shape[1] - 1)
        target_back(ids.shape[1] - 1)
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
                       temperature: float = 1.0, generator: torch.Generator | None = None,
                       use_cache: bool = False) -> tuple[Tensor, SpecStats]:
    """Sampled speculative decoding; each emitted token is distributed as the target's own sample.

    ``use_cache=True`` keeps and rolls back KV caches as :func:`speculative_greedy` does.
    """
    _check(ids, k, "speculative_sample")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    draft_score, draft_back = _scorer(draft, use_cache)
    target_score, target_back = _scorer(target, use_cache)
    stats, goal = SpecStats(), ids.shape[1] + max_new_tokens
    while ids.shape[1] < goal:
        steps = min(k, goal - ids.shape[1])
        guess, qs = ids, []
        for _ in range(steps):
            q = torch.softmax(draft_score(guess)[0] / temperature, -1)
            tok = torch.multinomial(q, 1, generator=generator)
            qs.append(q)
            guess = torch.cat([guess, tok.view(1, 1)], dim=1)
        ps = torch.softmax(target_score(guess, steps + 1) / temperature, -1)
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
        draft_back(ids.shape[1] - 1)
        target_back(ids.shape[1] - 1)
    return ids, stats


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure_speedup(target: nn.Module, draft: nn.Module, prompts: list[Tensor], max_new_tokens: int,
                    ks: list[int], repeats: int = 3) -> dict[str, Any]:
    """Greedy speculative decoding with KV caches against plain cached greedy decoding, for each ``k``.

    Every prompt (1, seq) is decoded ``max_new_tokens`` further. Returns lists over ``ks``: ``acceptance``
    (accepted / drafted, all prompts together), ``tokens_per_call`` (new tokens per target pass),
    ``target_calls``, ``seconds`` (best of ``repeats`` for all prompts) and ``speedup`` (plain seconds /
    speculative seconds); ``plain_seconds`` is the baseline, and ``equal`` says whether every speculative
    output equalled the plain one token for token. The repeats take turns (plain, then every ``k``), so
    a slow moment of a busy machine hits all of them alike.
    """
    if not prompts:
        raise ValueError("prompts must hold at least one prompt of shape (1, seq)")
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of whole numbers >= 1, got {ks!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a whole number >= 1, got {repeats!r}")
    target.eval(), draft.eval()
    plain = [greedy_decode(target, p, max_new_tokens, use_cache=True) for p in prompts]
    result: dict[str, Any] = {"k": list(ks), "acceptance": [], "tokens_per_call": [], "target_calls": [],
                              "seconds": [], "speedup": [], "plain_seconds": 0.0, "equal": True}
    for k in ks:
        runs = [speculative_greedy(target, draft, p, max_new_tokens, k=k, use_cache=True) for p in prompts]
        result["equal"] &= all(torch.equal(out, ref) for (out, _), ref in zip(runs, plain))
        accepted, drafted = sum(s.accepted for _, s in runs), sum(s.drafted for _, s in runs)
        calls = sum(s.target_calls for _, s in runs)
        result["acceptance"].append(accepted / drafted)
        result["tokens_per_call"].append(max_new_tokens * len(prompts) / calls)
        result["target_calls"].append(calls)
    plain_s, spec_s = float("inf"), [float("inf")] * len(ks)
    for _ in range(repeats):
        plain_s = min(plain_s, _seconds(lambda: [greedy_decode(target, p, max_new_tokens, use_cache=True)
                                                 for p in prompts]))
        for i, k in enumerate(ks):
            spec_s[i] = min(spec_s[i], _seconds(lambda: [speculative_greedy(target, draft, p, max_new_tokens, k=k,
                                                                            use_cache=True) for p in prompts]))
    result["plain_seconds"], result["seconds"] = plain_s, spec_s
    result["speedup"] = [plain_s / s for s in spec_s]
    return result


@torch.no_grad()
def pass_costs(target: nn.Module, draft: nn.Module, max_tokens: int, past_len: int = 32,
               repeats: int = 50) -> tuple[dict[int, float], float]:
    """Seconds of one cached target pass over ``n = 1 .. max_tokens`` new tokens, and of one draft pass over one,
    each after ``past_len`` cached tokens: the best of ``repeats`` rounds that take turns, so a busy moment of
    the machine hits all of them alike."""
    gen = torch.Generator().manual_seed(0)
    past_ids = torch.randint(0, target.vocab_size, (1, past_len), generator=gen)
    new = torch.randint(0, target.vocab_size, (1, max_tokens), generator=gen)
    _, target_past = target(past_ids, use_cache=True)
    _, draft_past = draft(past_ids, use_cache=True)
    target_s, draft_s = dict.fromkeys(range(1, max_tokens + 1), float("inf")), float("inf")
    for _ in range(repeats):
        for n in target_s:
            target_s[n] = min(target_s[n], _seconds(lambda: target(new[:, :n], past_kv=target_past, use_cache=True)))
        draft_s = min(draft_s, _seconds(lambda: draft(new[:, :1], past_kv=draft_past, use_cache=True)))
    return target_s, draft_s


def predicted_speedup(tokens_per_call: float, k: int, target_pass: float, verify_pass: float,
                      draft_pass: float) -> float:
    """Speed-up from costs: a round makes ``tokens_per_call`` tokens for ``k`` draft passes and one verify pass,
    where plain decoding pays ``target_pass`` per token."""
    return tokens_per_call * target_pass / (k * draft_pass + verify_pass)


def plot_speedup(result: dict[str, Any]) -> Figure:
    """Acceptance rate and tokens per target pass (left) and measured speed-up (right) against ``k``."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(result["k"], result["acceptance"], "o-", label="acceptance rate (accepted / drafted)")
    left.set_xlabel("k (tokens drafted per round)")
    left.set_ylim(0, 1.05)
    left.set_ylabel("acceptance rate")
    twin = left.twinx()
    twin.plot(result["k"], result["tokens_per_call"], "s--", color="tab:green", label="new tokens per target pass")
    twin.set_ylabel("tokens per target pass")
    left.legend(handles=left.get_lines() + twin.get_lines(), loc="lower left", fontsize=8)
    right.bar(result["k"], result["speedup"], color="tab:orange")
    right.axhline(1.0, color="black", lw=1)
    right.set_xlabel("k (tokens drafted per round)")
    right.set_ylabel("speed-up over plain cached decoding")
    right.set_title("wall clock, CPU")
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["SpecStats", "accept_probability", "greedy_decode", "measure_speedup", "one_step_distribution",
           "pass_costs", "plot_speedup", "predicted_speedup", "residual_distribution", "speculative_greedy", "speculative_sample"]
