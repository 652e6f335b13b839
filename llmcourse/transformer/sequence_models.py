"""Two tiny next-token models, an LSTM and one attention layer, trained the same way on raw text (chapter 05).

Two claims about Transformers are tested with them:

* labels: next-token prediction makes its own targets (the text shifted by one), whatever the architecture;
  :func:`train_next_token` trains either model on the same raw text with the same loss;
* speed: one forward pass scores every position of a sequence (training, and reading a prompt), but generating
  n tokens takes n passes one after another; :func:`count_forward_passes` counts them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.attention import MultiHeadAttention


def next_token_pairs(ids: Tensor) -> tuple[Tensor, Tensor]:
    """(inputs, targets) from a run of token ids (..., n + 1): the targets are the inputs shifted by one."""
    return ids[..., :-1], ids[..., 1:]


class CharLSTM(nn.Module):
    """Embedding -> one LSTM layer -> linear head: logits (batch, seq, vocab) for ids (batch, seq)."""

    def __init__(self, vocab_size: int, d_model: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.lstm(self.embed(ids))[0])


class TinyAttentionLM(nn.Module):
    """Token + learned position embeddings -> one causal attention layer (residual) -> linear head."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_heads: int = 4, context: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[-1], device=ids.device))
        return self.head(x + self.attn(x, is_causal=True))


def train_next_token(model: nn.Module, ids: Tensor, steps: int = 200, context: int = 32, batch: int = 16,
                     lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Train ``model`` (ids -> logits) to predict the next token of random windows of ``ids``; the losses.

    There are no labels besides the text: every window of context + 1 ids gives its inputs and targets through
    :func:`next_token_pairs`. The loss is the mean cross-entropy over every position of every window.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - context - 1, (batch,), generator=g)
        windows = torch.stack([ids[s:s + context + 1] for s in starts.tolist()])
        inputs, targets = next_token_pairs(windows)
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


class _PassCounter:
    def __init__(self, model: nn.Module):
        self.count = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


@torch.no_grad()
def score_in_one_pass(model: nn.Module, ids: Tensor) -> tuple[Tensor, int]:
    """Logits for every position of ids (1, n) and the number of forward passes that took (1)."""
    counter = _PassCounter(model)
    try:
        logits = model(ids)
    finally:
        counter.remove()
    return logits, counter.count


@torch.no_grad()
def generate_greedy(model: nn.Module, prompt: Tensor, n_new: int) -> tuple[Tensor, Tensor, int]:
    """Greedy generation without a cache: (ids (1, len + n_new), each step's logits (1, n_new, vocab), passes).

    Each new token is the argmax of the last position's logits, and it is the input of the next pass: the passes
    cannot run at the same time.
    """
    counter = _PassCounter(model)
    ids, step_logits = prompt, []
    try:
        for _ in range(n_new):
            last = model(ids)[:, -1]
            step_logits.append(last)
            ids = torch.cat([ids, last.argmax(-1, keepdim=True)], dim=1)
    finally:
        counter.remove()
    return ids, torch.stack(step_logits, dim=1), counter.count


def count_forward_passes(model: nn.Module, fn: Callable[[], object]) -> int:
    """How many times ``model``'s forward runs while ``fn()`` runs."""
    counter = _PassCounter(model)
    try:
        fn()
    finally:
        counter.remove()
    return counter.count


__all__ = ["next_token_pairs", "CharLSTM", "TinyAttentionLM", "train_next_token", "score_in_one_pass",
           "generate_greedy", "count_forward_passes"]
