"""Counting language models: n-grams with add-k smoothing and interpolation (chapter 08).

Before neural networks, a language model was a table of counts. An **n-gram model** predicts the next token from
the ``n - 1`` tokens before it, and nothing else: ``P(w | c) = N(c, w) / N(c)``, where ``N(c, w)`` counts how often
the context ``c`` was followed by ``w`` in the training text. Two fixes make it usable:

* **add-k smoothing**: a pair never seen would get probability 0 and an infinite loss, so every count gets ``k``
  added: ``P(w | c) = (N(c, w) + k) / (N(c) + k V)`` for a vocabulary of ``V`` tokens. An unseen context gives
  the uniform ``1 / V``.
* **interpolation**: long contexts are precise but rare, short ones are frequent but vague, so the model mixes
  the add-k estimates of every length, ``P(w | c) = sum_j lambda_j P_j(w | last j - 1 tokens)`` with weights
  that sum to 1. Near the start of a text, where fewer tokens precede, only the orders that fit are mixed (their
  weights renormalised).

Counts are kept sparse: each (context, token) pair is one integer code, ``torch.unique`` counts the codes and
``torch.searchsorted`` looks them up, so a 4,096-token vocabulary costs memory only for the pairs that occur.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def _codes(ids: Tensor, length: int, vocab_size: int) -> Tensor:
    """The integer code of every run of ``length`` consecutive ids, oldest first (base ``vocab_size``)."""
    code = torch.zeros(len(ids) - length + 1, dtype=torch.int64)
    for j in range(length):
        code = code * vocab_size + ids[j:len(ids) - length + 1 + j]
    return code


def _lookup(table: tuple[Tensor, Tensor], codes: Tensor) -> Tensor:
    """How often each code occurs in a (sorted unique codes, counts) table; 0 for codes it does not hold."""
    keys, counts = table
    if len(keys) == 0:
        return torch.zeros(codes.shape, dtype=torch.float64)
    where = torch.searchsorted(keys, codes).clamp_max(len(keys) - 1)
    return torch.where(keys[where] == codes, counts[where], torch.zeros((), dtype=counts.dtype)).double()


class NGramModel:
    """An n-gram language model over ids ``0 .. vocab_size - 1``: add-k smoothed, optionally interpolated.

    ``n`` is the number of tokens in a gram, so the model conditions on ``n - 1`` previous tokens (``n = 1``:
    unigram, ``n = 2``: bigram, ``n = 3``: trigram). ``weights`` (``n`` numbers, for orders 1 .. n) mixes the
    orders; ``None`` uses the n-gram alone (and, near the start of a text, the longest order that fits).
    """

    def __init__(self, vocab_size: int, n: int, k: float = 1.0, weights: Sequence[float] | None = None):
        if n < 1 or vocab_size < 1 or k <= 0:
            raise ValueError(f"need n >= 1, vocab_size >= 1 and k > 0; got n={n}, vocab_size={vocab_size}, k={k}")
        if vocab_size ** n >= 2 ** 62:
            raise ValueError(f"vocab_size ** n = {vocab_size}**{n} does not fit the 64-bit codes")
        if weights is not None:
            if len(weights) != n or min(weights) < 0 or not math.isclose(sum(weights), 1.0, abs_tol=1e-9):
                raise ValueError(f"weights must be {n} non-negative numbers that sum to 1, got {list(weights)}")
        self.vocab_size, self.n, self.k = vocab_size, n, float(k)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.grams: list[tuple[Tensor, Tensor]] = []     # order j: counts of (j - 1 context tokens, next token)
        self.contexts: list[tuple[Tensor, Tensor]] = []  # order j: counts of the contexts that are followed
        self.n_tokens = 0

    def fit(self, ids: Tensor) -> "NGramModel":
        """Count every gram of length 1 .. n in ``ids`` (a 1-D tensor of token ids)."""
        ids = torch.as_tensor(ids, dtype=torch.int64).flatten()
        if len(ids) < self.n:
            raise ValueError(f"{len(ids)} tokens are too few for {self.n}-grams")
        self.grams, self.contexts, self.n_tokens = [], [], len(ids)
        for order in range(1, self.n + 1):
            self.grams.append(torch.unique(_codes(ids, order, self.vocab_size), return_counts=True))
            # a context counts only where a token follows it, so N(c) = sum over w of N(c, w)
            context_ids = ids[:-1] if order > 1 else ids[:0]
            self.contexts.append(torch.unique(_codes(context_ids, order - 1, self.vocab_size), return_counts=True)
                                 if order > 1 else (torch.zeros(1, dtype=torch.int64), torch.tensor([len(ids)])))
        return self

    def _order_probs(self, order: int, context_codes: Tensor, tokens: Tensor) -> Tensor:
        """Add-k P_order(token | context) for matching 1-D tensors of context codes and tokens."""
        pair = _lookup(self.grams[order - 1], context_codes * self.vocab_size + tokens)
        total = _lookup(self.contexts[order - 1], context_codes)
        return (pair + self.k) / (total + self.k * self.vocab_size)

    def _mix(self, per_order: list[Tensor], available: int) -> Tensor:
        """Mix the probabilities of orders 1 .. available (the longest that fits) with the model's weights."""
        if self.weights is None:
            return per_order[available - 1]
        w = torch.tensor(self.weights[:available], dtype=torch.float64)
        if w.sum() == 0:
            return per_order[available - 1]
        w = w / w.sum()
        return sum(wj * p for wj, p in zip(w, per_order))

    def token_probs(self, ids: Tensor) -> Tensor:
        """P(ids[t] | the tokens before it) for every t >= 1, a float64 tensor of ``len(ids) - 1`` numbers."""
        self._check_fitted()
        ids = torch.as_tensor(ids, dtype=torch.int64).flatten()
        out = torch.empty(len(ids) - 1, dtype=torch.float64)
        for t in range(1, min(self.n - 1, len(ids) - 1) + 1):   # the first few tokens have a shorter history
            history = ids[:t]
            out[t - 1] = self.next_token_probs(history)[ids[t]]
        first = max(self.n - 1, 1)                                # from here on every order has its full context
        if len(ids) > first:
            targets = ids[first:]
            per_order = []
            for order in range(1, self.n + 1):
                length = order - 1
                if length == 0:
                    context = torch.zeros(len(targets), dtype=torch.int64)
                else:
                    context = _codes(ids[first - length:len(ids) - 1], length, self.vocab_size)
                per_order.append(self._order_probs(order, context, targets))
            out[first - 1:] = self._mix(per_order, self.n)
        return out

    def next_token_probs(self, history: Tensor | Sequence[int]) -> Tensor:
        """The whole distribution P(. | history) over the vocabulary (``vocab_size`` numbers that sum to 1)."""
        self._check_fitted()
        history = torch.as_tensor(history, dtype=torch.int64).flatten()
        available = min(self.n, len(history) + 1)
        tokens = torch.arange(self.vocab_size)
        per_order = []
        for order in range(1, available + 1):
            length = order - 1
            code = 0
            for t in history[len(history) - length:].tolist() if length else []:
                code = code * self.vocab_size + t
            per_order.append(self._order_probs(order, torch.full_like(tokens, code), tokens))
        return self._mix(per_order, available)

    def token_nlls(self, ids: Tensor) -> Tensor:
        """-log P(ids[t] | before) for every t >= 1 (nats): the per-token loss, like ``F.cross_entropy(reduction="none")``."""
        return -self.token_probs(ids).log()

    def loss(self, ids: Tensor) -> float:
        """Mean loss per predicted token (nats) over ``ids[1:]``; ``math.exp`` of it is the perplexity."""
        return float(self.token_nlls(ids).mean())

    def log_likelihood(self, context: Tensor, continuation: Tensor) -> float:
        """log P(continuation | context) (nats), summed over the continuation's tokens."""
        context = torch.as_tensor(context, dtype=torch.int64).flatten()
        continuation = torch.as_tensor(continuation, dtype=torch.int64).flatten()
        whole = torch.cat([context, continuation])
        if len(context) == 0:
            raise ValueError("log_likelihood needs at least one context token")
        return float(self.token_probs(whole)[len(context) - 1:].log().sum())

    def log_likelihoods(self, context: Tensor, choices: Sequence[Tensor]) -> list[float]:
        """:meth:`log_likelihood` of each of several continuations of the same context."""
        return [self.log_likelihood(context, choice) for choice in choices]

    def _check_fitted(self) -> None:
        if not self.grams:
            raise ValueError("call fit(ids) first: the model has no counts yet")

    def __repr__(self) -> str:
        mix = "" if self.weights is None else f", weights={[round(w, 3) for w in self.weights]}"
        return f"NGramModel(vocab_size={self.vocab_size}, n={self.n}, k={self.k:g}{mix}; {self.n_tokens:,} tokens counted)"


def fit_interpolation(model: NGramModel, dev_ids: Tensor, grid: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
                      ) -> list[float]:
    """Weights for orders 1 .. n chosen on held-out ``dev_ids``: a grid search that minimises the mean loss.

    Each grid point gives the longest order the weight ``1 - sum(others)``; the weights of the shorter orders come
    from ``grid``. The model is left with the best weights, which are returned.
    """
    import itertools

    dev_ids = torch.as_tensor(dev_ids, dtype=torch.int64).flatten()
    saved = model.weights
    per_order = []
    for order in range(1, model.n + 1):
        model.weights = [0.0] * model.n
        model.weights[order - 1] = 1.0
        per_order.append(model.token_probs(dev_ids)[model.n - 1:])  # positions where every order fits
    best, best_loss = saved, math.inf
    for shorter in itertools.product(grid, repeat=model.n - 1):
        if sum(shorter) > 1 + 1e-12:
            continue
        weights = [*shorter, 1.0 - sum(shorter)]
        mixed = sum(w * p for w, p in zip(weights, per_order))
        loss = float(-mixed.log().mean())
        if loss < best_loss:
            best, best_loss = weights, loss
    model.weights = best
    return best


__all__ = ["NGramModel", "fit_interpolation"]
