"""Encoder-only pretraining objectives (chapter 07): masked-language modelling and next-sentence prediction.

* :class:`SpecialIds`: ``[CLS]``, ``[SEP]``, ``[MASK]`` and ``[PAD]``, four ids placed after the tokenizer's own;
* :func:`mask_tokens`: BERT's corruption rule. Every ordinary token is *chosen* with probability ``p`` (0.15);
  a chosen token becomes ``[MASK]`` with probability 0.8, a random ordinary token with probability 0.1, and
  stays as it is otherwise. The labels hold the original token at the chosen positions and ``-100`` (which
  ``cross_entropy`` skips) everywhere else, so the loss is taken at the chosen positions only;
* :func:`split_sentences`: a text cut after each sentence, so that the pieces join back into the text;
* :func:`nsp_pairs`: ``[CLS] A [SEP] B [SEP]`` pairs of tokenized sentences, where B is the sentence after A
  (label 0) or, half of the time, a sentence from a random place (label 1), padded to one length;
* :func:`pretraining_losses`: both losses of one batch.

The training run on the course's data is in chapter 08's part, :mod:`llmcourse.pretraining.encoder_pretraining`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100  # the label cross_entropy skips

_SENTENCE_END = re.compile(r"(?<=[.!?:])(?=\s)|(?=\n\n)")


@dataclass(frozen=True)
class SpecialIds:
    """``[CLS]``, ``[SEP]``, ``[MASK]`` and ``[PAD]`` right after the ``n_regular`` ids of the tokenizer."""

    n_regular: int

    @property
    def cls(self) -> int:
        return self.n_regular

    @property
    def sep(self) -> int:
        return self.n_regular + 1

    @property
    def mask(self) -> int:
        return self.n_regular + 2

    @property
    def pad(self) -> int:
        return self.n_regular + 3

    @property
    def all(self) -> tuple[int, int, int, int]:
        return self.cls, self.sep, self.mask, self.pad

    @property
    def vocab_size(self) -> int:
        return self.n_regular + 4


def mask_tokens(ids: Tensor, mask_id: int, vocab_size: int, p: float = 0.15, generator: torch.Generator | None = None,
                special_ids: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
    """(inputs, labels) for masked-language modelling, ``ids`` left unchanged.

    Each token that is not in ``special_ids`` is chosen with probability ``p``. A chosen token becomes ``mask_id``
    (80%), a random id from ``0..vocab_size-1`` other than the special ids (10%), or stays (10%). ``labels`` is
    the original id at the chosen positions and :data:`IGNORE` (-100) elsewhere.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    specials = torch.tensor(sorted(set(special_ids) | {mask_id}), dtype=ids.dtype)
    ordinary = ~torch.isin(ids, specials)
    chosen = ordinary & (torch.rand(ids.shape, generator=generator) < p)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    fate = torch.rand(ids.shape, generator=generator)              # one draw decides what a chosen token becomes
    to_mask = chosen & (fate < 0.8)
    to_random = chosen & (fate >= 0.8) & (fate < 0.9)               # and 0.9 <= fate: left as it is
    allowed = torch.arange(vocab_size, dtype=ids.dtype)
    allowed = allowed[~torch.isin(allowed, specials)]               # random replacements are ordinary tokens
    random_ids = allowed[torch.randint(0, len(allowed), ids.shape, generator=generator)]
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    return torch.where(to_random, random_ids, inputs), labels


def split_sentences(text: str, min_chars: int = 20) -> list[str]:
    """``text`` cut after each ``.``, ``!``, ``?`` or ``:`` that a space follows, and before each blank line.

    Every piece keeps the white space in front of it, so ``"".join(pieces) == text`` and a piece encodes to the
    tokens it had in the running text. Pieces shorter than ``min_chars`` (a list number, "e.g.") are joined to the
    next one.
    """
    pieces, pending = [], ""
    for piece in _SENTENCE_END.split(text):
        pending += piece
        if len(pending.strip()) >= min_chars:
            pieces.append(pending)
            pending = ""
    if pending:
        if pieces:
            pieces[-1] += pending
        else:
            pieces.append(pending)
    return pieces


@dataclass
class PairBatch:
    """A batch of sentence pairs: ``[CLS] A [SEP] B [SEP] [PAD] ...``, one row per pair.

    ``segments`` is 0 for ``[CLS]``, A and its ``[SEP]``, 1 for B and its ``[SEP]`` (and the padding);
    ``attention_mask`` is 1 for real tokens, 0 for padding; ``is_random`` is the next-sentence label (0: B follows A,
    1: B is from a random place); ``a_len`` and ``b_len`` are the sentences' lengths in tokens.
    """

    ids: Tensor
    segments: Tensor
    attention_mask: Tensor
    is_random: Tensor
    a_len: Tensor
    b_len: Tensor


def nsp_pairs(sentences: Sequence[Sequence[int]], n_pairs: int, special: SpecialIds, max_tokens: int = 30,
              random_fraction: float = 0.5, generator: torch.Generator | None = None) -> PairBatch:
    """``n_pairs`` next-sentence pairs from ``sentences`` (token ids, in text order), each sentence cut to ``max_tokens``.

    A is a random sentence (not the last); B is the sentence after it, or with probability ``random_fraction`` a
    sentence drawn at random from all of them (as in BERT, it may by chance be the true next one).
    """
    if len(sentences) < 2:
        raise ValueError(f"need at least two sentences to make a pair, got {len(sentences)}")
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
    firsts = torch.randint(0, len(sentences) - 1, (n_pairs,), generator=generator)
    is_random = (torch.rand(n_pairs, generator=generator) < random_fraction).long()
    elsewhere = torch.randint(0, len(sentences), (n_pairs,), generator=generator)
    seconds = torch.where(is_random.bool(), elsewhere, firsts + 1)
    width = 2 * max_tokens + 3
    ids = torch.full((n_pairs, width), special.pad, dtype=torch.long)
    segments = torch.ones_like(ids)
    attention_mask = torch.zeros_like(ids)
    a_len, b_len = torch.zeros(n_pairs, dtype=torch.long), torch.zeros(n_pairs, dtype=torch.long)
    for row, (i, j) in enumerate(zip(firsts.tolist(), seconds.tolist())):
        a, b = list(sentences[i][:max_tokens]), list(sentences[j][:max_tokens])
        tokens = [special.cls, *a, special.sep, *b, special.sep]
        ids[row, :len(tokens)] = torch.tensor(tokens)
        segments[row, :len(a) + 2] = 0
        attention_mask[row, :len(tokens)] = 1
        a_len[row], b_len[row] = len(a), len(b)
    return PairBatch(ids, segments, attention_mask, is_random, a_len, b_len)


def pretraining_losses(model: nn.Module, batch: PairBatch, special: SpecialIds, p: float = 0.15,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """(masked-LM loss at the chosen positions, next-sentence loss on ``[CLS]``, number of chosen positions).

    ``model`` is a :class:`~llmcourse.models.bert.BertForPreTraining`; only the chosen positions are scored.
    """
    inputs, labels = mask_tokens(batch.ids, special.mask, special.vocab_size, p, generator, special.all)
    chosen = labels != IGNORE
    mlm_logits, nsp_logits = model(inputs, batch.segments, batch.attention_mask, mlm_positions=chosen)
    return F.cross_entropy(mlm_logits, labels[chosen]), F.cross_entropy(nsp_logits, batch.is_random), int(chosen.sum())


__all__ = ["IGNORE", "PairBatch", "SpecialIds", "mask_tokens", "nsp_pairs", "pretraining_losses", "split_sentences"]
