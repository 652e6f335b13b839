"""A synthetic corpus whose best possible loss is known exactly (chapter 08).

Real text never tells us how low the loss *could* go. This module makes a text
that does: an order-k Markov chain over a small alphabet. The next token depends
only on the k tokens before it, through a fixed table of probabilities, so

* a model that has learned the table perfectly has a mean loss equal to the chain's
  **entropy rate** ``h = sum_c pi(c) * H(P(. | c))`` nats per token, where ``pi`` is
  the stationary distribution of the contexts ``c`` (the k previous tokens) and
  ``H(P(. | c))`` the entropy of the next-token distribution after ``c``;
* no model can do better on average: ``h`` is the floor of the cross-entropy.

How the table is drawn (seeded, so a given ``seed`` always gives the same chain):
each context allows only ``branching`` next tokens, with probabilities from a
Dirichlet distribution (``concentration`` 1 = uniform over the simplex; smaller =
more lopsided). One of the allowed tokens always continues a de Bruijn sequence,
a cycle that passes through every context once, so every context can be reached
from every other; the context of k zeros also allows token 0, a loop of length 1.
Together they make the chain irreducible and aperiodic: one stationary
distribution, which :meth:`MarkovSource.stationary` finds by power iteration.

Contexts are numbered in base ``vocab_size``: the context (t_1, ..., t_k), oldest
first, is ``t_1 * V**(k-1) + ... + t_k``, and after token x it becomes
``(c * V + x) mod V**k``.
"""
from __future__ import annotations

import random
import string
from bisect import bisect_right
from functools import cached_property

import torch
from torch import Tensor

ALPHABET = string.ascii_lowercase  # token i is shown as the i-th letter


def de_bruijn(vocab_size: int, order: int) -> list[int]:
    """A de Bruijn sequence: a cycle of ``vocab_size**order`` tokens in which every
    length-``order`` context appears exactly once (the FKM / Lyndon-word construction)."""
    if order == 0:
        return [0]
    a = [0] * (vocab_size * order)
    sequence: list[int] = []

    def db(t: int, p: int) -> None:
        if t > order:
            if order % p == 0:
                sequence.extend(a[1:p + 1])
        else:
            a[t] = a[t - p]
            db(t + 1, p)
            for j in range(a[t - p] + 1, vocab_size):
                a[t] = j
                db(t + 1, t)

    db(1, 1)
    return sequence


def _entropy(p: Tensor) -> Tensor:
    """Shannon entropy in nats along the last dimension (0 log 0 = 0)."""
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)


class MarkovSource:
    """An order-``order`` Markov chain over ``vocab_size`` tokens with a seeded random transition table.

    ``probs[c]`` is the next-token distribution after context ``c`` (a float64 tensor
    of shape ``(vocab_size**order, vocab_size)``). With ``order=0`` there is one
    context, so every token is drawn independently from ``probs[0]``. ``branching``
    (at least 2) is how many next tokens each context allows; ``concentration`` is
    the Dirichlet parameter of their probabilities.
    """

    def __init__(self, vocab_size: int = 12, order: int = 2, seed: int = 0, concentration: float = 1.0,
                 branching: int = 4):
        for name, value, low in (("vocab_size", vocab_size, 2), ("order", order, 0), ("branching", branching, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"MarkovSource: {name} must be a whole number >= {low}, got {value!r}")
        if vocab_size > len(ALPHABET):
            raise ValueError(f"MarkovSource: vocab_size={vocab_size} is larger than the {len(ALPHABET)} letters "
                             "used to show tokens; use at most 26")
        if branching > vocab_size:
            raise ValueError(f"MarkovSource: branching={branching} next tokens cannot exceed vocab_size={vocab_size}")
        if not concentration > 0:
            raise ValueError(f"MarkovSource: concentration must be > 0, got {concentration}")
        if vocab_size ** order > 1_000_000:
            raise ValueError(f"MarkovSource: vocab_size**order = {vocab_size ** order} contexts is too many; "
                             "lower the order or the vocabulary")
        self.vocab_size, self.order, self.seed = vocab_size, order, seed
        self.concentration, self.branching = float(concentration), branching
        self.n_contexts = vocab_size ** order
        self.probs = self._draw_table()

    def _draw_table(self) -> Tensor:
        V, C, B = self.vocab_size, self.n_contexts, self.branching
        rng = random.Random(self.seed)  # Python's generator: the same table on every platform and version
        cycle = de_bruijn(V, self.order)
        successor = [0] * C  # the token that follows each context around the de Bruijn cycle
        context = 0
        for token in cycle[len(cycle) - self.order:]:  # the context just before the cycle starts
            context = (context * V + token) % C
        for token in cycle:
            successor[context] = token
            context = (context * V + token) % C
        probs = torch.zeros(C, V, dtype=torch.float64)
        for c in range(C):
            others = [t for t in rng.sample(range(V), V) if t != successor[c]]
            allowed = [successor[c]] + others[:B - 1]
            if c == 0 and 0 not in allowed:
                allowed[-1] = 0  # a loop on the all-zeros context makes the chain aperiodic
            weights = [rng.gammavariate(self.concentration, 1.0) for _ in allowed]  # normalised: a Dirichlet draw
            weights = [max(w, 1e-12) for w in weights]
            probs[c, allowed] = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        return probs

    # --------------------------------------------------------------------------- exact quantities

    @cached_property
    def stationary(self) -> Tensor:
        """pi: the long-run probability of each context (float64, shape (n_contexts,)), by power iteration."""
        C, V = self.n_contexts, self.vocab_size
        nxt = (torch.arange(C)[:, None] * V + torch.arange(V)[None, :]) % C  # context after (c, x)
        pi = torch.full((C,), 1.0 / C, dtype=torch.float64)
        for _ in range(200_000):
            flow = torch.zeros(C, dtype=torch.float64).index_add_(0, nxt.flatten(), (pi[:, None] * self.probs).flatten())
            new = 0.5 * (pi + flow)  # the "lazy" chain has the same pi and always converges
            if (new - pi).abs().sum() < 1e-14:
                return new / new.sum()
            pi = new
        raise RuntimeError("the stationary distribution did not converge")  # pragma: no cover

    def entropy_rate(self) -> float:
        """The chain's entropy rate in nats per token: the lowest mean loss any model can reach."""
        return float((self.stationary * _entropy(self.probs)).sum())

    def block_entropy(self, m: int) -> float:
        """H(X_1, ..., X_m) in nats for m consecutive tokens of the stationary chain (0 <= m <= order)."""
        if not 0 <= m <= self.order:
            raise ValueError(f"block_entropy: m must be between 0 and order={self.order}, got {m}")
        marginal = self.stationary.reshape(self.vocab_size ** m, -1).sum(-1)  # first m tokens of the context
        return float(_entropy(marginal))

    def conditional_entropy(self, n_previous: int) -> float:
        """H(next token | the ``n_previous`` tokens before it), in nats.

        A model that sees fewer than ``order`` previous tokens (the start of a
        training window) cannot know the full context, so it pays more.
        """
        if n_previous < 0:
            raise ValueError(f"n_previous must be >= 0, got {n_previous}")
        if n_previous >= self.order:
            return self.entropy_rate()
        return self.block_entropy(n_previous + 1) - self.block_entropy(n_previous)

    def optimal_loss(self, context_length: int) -> float:
        """The lowest mean loss over training windows of ``context_length`` tokens.

        In a window the prediction at position j (counted from 0) has seen the
        j + 1 tokens up to and including position j, so its best loss is
        :meth:`conditional_entropy` (j + 1). Only the first ``order - 1`` positions
        see less than a full context; the mean over the window is a little above
        :meth:`entropy_rate` and tends to it as windows grow.
        """
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
            raise ValueError(f"context_length must be a whole number >= 1, got {context_length!r}")
        return sum(self.conditional_entropy(j + 1) for j in range(context_length)) / context_length

    # --------------------------------------------------------------------------- sampling and scoring

    def sample(self, n_tokens: int, seed: int = 0) -> Tensor:
        """``n_tokens`` token ids (a 1-D int64 tensor) drawn from the chain, started in its stationary state."""
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
            raise ValueError(f"n_tokens must be a whole number >= 0, got {n_tokens!r}")
        g = torch.Generator().manual_seed(seed)
        V, C, k = self.vocab_size, self.n_contexts, self.order
        context = int(torch.multinomial(self.stationary, 1, generator=g))
        first = [(context // V ** (k - 1 - i)) % V for i in range(k)]  # the start context's tokens, oldest first
        cdf = self.probs.cumsum(-1)
        cdf[:, -1] = 1.0
        cdf_rows = cdf.tolist()
        uniforms = torch.rand(max(n_tokens - k, 0), generator=g, dtype=torch.float64).tolist()
        tokens = first[:n_tokens]
        for u in uniforms:
            x = bisect_right(cdf_rows[context], u)
            tokens.append(x)
            context = (context * V + x) % C
        return torch.tensor(tokens, dtype=torch.long)

    def token_log_probs(self, ids: Tensor) -> Tensor:
        """log P(ids[t] | the ``order`` tokens before it) for t = order, ..., len(ids)-1 (float64)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() != 1 or len(ids) <= self.order:
            raise ValueError(f"expected a 1-D sequence longer than order={self.order}, got shape {tuple(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got values from {int(ids.min())} "
                             f"to {int(ids.max())}")
        context = torch.zeros(len(ids) - self.order, dtype=torch.long)
        for i in range(self.order):
            context = context * self.vocab_size + ids[i:len(ids) - self.order + i]
        return self.probs[context, ids[self.order:]].log()

    # --------------------------------------------------------------------------- showing tokens as letters

    @property
    def alphabet(self) -> str:
        """The letters that show the tokens: token i is ``alphabet[i]``."""
        return ALPHABET[:self.vocab_size]

    def decode(self, ids) -> str:
        """Token ids -> letters."""
        return "".join(self.alphabet[int(i)] for i in ids)

    def encode(self, text: str) -> list[int]:
        """Letters -> token ids."""
        try:
            return [self.alphabet.index(ch) for ch in text]
        except ValueError:
            bad = next(ch for ch in text if ch not in self.alphabet)
            raise ValueError(f"character {bad!r} is not one of this source's letters {self.alphabet!r}") from None

    def text(self, n_chars: int, seed: int = 0) -> str:
        """A sample of ``n_chars`` tokens shown as letters."""
        return self.decode(self.sample(n_chars, seed))

    def __repr__(self) -> str:
        return (f"MarkovSource(vocab_size={self.vocab_size}, order={self.order}, seed={self.seed}, "
                f"concentration={self.concentration:g}, branching={self.branching})")


def default_source() -> MarkovSource:
    """The chapter's corpus: 12 letters, order 2, 4 possible next letters per context.

    Its entropy rate is about 1.05 nats per token (a model that knew the table
    would be as unsure as a fair choice among e^1.05 ~ 2.9 letters). A small GPT
    with a context of 32-64 tokens gets within a few hundredths of a nat of
    :meth:`MarkovSource.optimal_loss` in one to two CPU minutes.
    """
    return MarkovSource(vocab_size=12, order=2, seed=0, concentration=1.0, branching=4)


__all__ = ["MarkovSource", "default_source", "de_bruijn", "ALPHABET"]
