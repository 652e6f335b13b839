"""Pretraining a BERT-style encoder on the course's data, next to the course's GPT (chapters 07 and 08).

* :func:`course_sentences`: the documentation the course's GPT is trained on, cut into sentences and encoded with
  the course's tokenizer; the training sentences come from the GPT's training tokens, the held-out ones from
  inside its held-out tenth, so neither model has seen them;
* :func:`train_masked_lm`: masked-language modelling and next-sentence prediction together (the sum of the two
  losses), with the same AdamW, warmup and cosine decay as the GPT's run;
* :func:`train_causal_lm`: the GPT on the same sentences, joined back into running text, with the same optimizer,
  schedule, batch size and number of steps;
* :func:`fill_in_the_blank`: both models predict the same held-out tokens, the encoder with the text on both
  sides of each blank, the GPT from the text before it only; and the encoder's next-sentence accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.models.masked_lm import SpecialIds, nsp_pairs, pretraining_losses, split_sentences
from llmcourse.pretraining.course_model import VAL_FRACTION
from llmcourse.pretraining.data import random_batch
from llmcourse.pretraining.schedules import warmup_cosine_schedule
from llmcourse.pretraining.trainer import configure_optimizer
from llmcourse.progress import tqdm
from llmcourse.tokenizers.course_tokenizer import training_text

HELD_OUT_MARGIN = 0.01  # held-out sentences start this share of the tokens after the GPT's held-out boundary


@dataclass
class CourseSentences:
    """Encoded sentences of the documentation, in text order: ``train`` and ``held_out`` (lists of id lists)."""

    train: list[list[int]]
    held_out: list[list[int]]


def course_sentences(tokenizer: Any, n_chars: int) -> CourseSentences:
    """The first ``n_chars`` characters of the course's text as sentences of token ids, split as the GPT's data is.

    The GPT trains on the first ``1 - VAL_FRACTION`` of the tokens: sentences that end there are for training;
    sentences that start ``HELD_OUT_MARGIN`` later are held out (a sentence's tokens may differ slightly from the
    same text's tokens inside the long stream, hence the margin).
    """
    encoded = [tokenizer.encode(s, allowed_special="none") for s in split_sentences(training_text()[:n_chars])]
    ends = torch.tensor([len(s) for s in encoded]).cumsum(0)
    boundary = (1 - VAL_FRACTION) * int(ends[-1])
    starts = ends - torch.tensor([len(s) for s in encoded])
    train = [s for s, end in zip(encoded, ends.tolist()) if end <= boundary]
    held_out = [s for s, start in zip(encoded, starts.tolist()) if start >= boundary + HELD_OUT_MARGIN * int(ends[-1])]
    return CourseSentences(train, held_out)


@dataclass
class MaskedLMHistory:
    """Per step: the masked-LM loss (nats per chosen token), the next-sentence loss and the number of chosen tokens."""

    mlm_loss: list[float]
    nsp_loss: list[float]
    n_predictions: list[int]


def train_masked_lm(model: nn.Module, sentences: list[list[int]], special: SpecialIds, steps: int,
                    batch_size: int = 16, max_tokens: int = 30, lr: float = 2e-3, min_lr: float = 2e-4,
                    warmup_steps: int = 50, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.99),
                    grad_clip: float | None = 1.0, seed: int = 0, progress: bool = False) -> MaskedLMHistory:
    """Train a :class:`~llmcourse.models.bert.BertForPreTraining` on MLM + NSP with AdamW, warmup and cosine decay."""
    generator = torch.Generator().manual_seed(seed)
    optimizer, scheduler = _optimizer_and_schedule(model, lr, min_lr, warmup_steps, steps, weight_decay, betas)
    history = MaskedLMHistory([], [], [])
    model.train()
    for _ in tqdm(range(steps), desc="training", disable=not progress):
        batch = nsp_pairs(sentences, batch_size, special, max_tokens, generator=generator)
        mlm, nsp, n_chosen = pretraining_losses(model, batch, special, generator=generator)
        _update(model, mlm + nsp, optimizer, scheduler, grad_clip)
        history.mlm_loss.append(mlm.item())
        history.nsp_loss.append(nsp.item())
        history.n_predictions.append(n_chosen)
    model.eval()
    return history


def _optimizer_and_schedule(model: nn.Module, lr: float, min_lr: float, warmup_steps: int, steps: int,
                            weight_decay: float, betas: tuple[float, float]):
    optimizer = configure_optimizer(model, lr, weight_decay, betas=betas)
    return optimizer, warmup_cosine_schedule(optimizer, warmup_steps, steps, min_lr)


def _update(model: nn.Module, loss: Tensor, optimizer, scheduler, grad_clip: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()


def train_causal_lm(model: nn.Module, sentences: list[list[int]], steps: int, batch_size: int = 16,
                    lr: float = 2e-3, min_lr: float = 2e-4, warmup_steps: int = 50, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.99), grad_clip: float | None = 1.0,
                    seed: int = 0) -> list[float]:
    """Next-token training of a GPT on ``sentences`` joined into one stream (random windows); each step's loss."""
    stream = torch.tensor([t for s in sentences for t in s])
    generator = torch.Generator().manual_seed(seed)
    optimizer, scheduler = _optimizer_and_schedule(model, lr, min_lr, warmup_steps, steps, weight_decay, betas)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = random_batch(stream, batch_size, model.context_length, generator=generator)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        _update(model, loss, optimizer, scheduler, grad_clip)
        losses.append(loss.item())
    model.eval()
    return losses


@dataclass
class BlankScores:
    """The same held-out blanks filled by both models: top-1 accuracy and mean loss (nats), and NSP accuracy."""

    n_blanks: int
    encoder_accuracy: float
    gpt_accuracy: float
    encoder_loss: float
    gpt_loss: float
    n_pairs: int
    nsp_accuracy: float


def _blank_positions(batch, p: float, generator: torch.Generator) -> Tensor:
    """Bool (pairs, width): each token of A and B except A's first (the GPT needs a token before it), with prob. p."""
    width = batch.ids.shape[1]
    column = torch.arange(width)
    a_len, b_len = batch.a_len[:, None], batch.b_len[:, None]
    in_a = (column >= 2) & (column <= a_len)                        # A sits at 1..a_len; its first token is skipped
    in_b = (column >= a_len + 2) & (column < a_len + 2 + b_len)
    return (in_a | in_b) & (torch.rand(batch.ids.shape, generator=generator) < p)


@torch.no_grad()
def fill_in_the_blank(encoder: nn.Module, gpt: nn.Module, sentences: list[list[int]], special: SpecialIds,
                      n_pairs: int = 400, max_tokens: int = 30, p: float = 0.15, seed: int = 1) -> BlankScores:
    """Blank out ``p`` of the tokens of held-out sentence pairs (real next sentences) and let both models fill them.

    The encoder reads ``[CLS] A [SEP] B [SEP]`` with every blank shown as ``[MASK]``; the GPT reads the same text
    (A then B, no special tokens) and predicts each blanked token from the tokens before it. The next-sentence
    accuracy is the encoder's, on ``n_pairs`` further pairs of which half have a random B.
    """
    generator = torch.Generator().manual_seed(seed)
    encoder.eval(), gpt.eval()
    batch = nsp_pairs(sentences, n_pairs, special, max_tokens, random_fraction=0.0, generator=generator)
    blanks = _blank_positions(batch, p, generator)
    inputs = torch.where(blanks, torch.full_like(batch.ids, special.mask), batch.ids)
    labels = batch.ids[blanks]
    enc_logits, _ = encoder(inputs, batch.segments, batch.attention_mask, mlm_positions=blanks)
    # the GPT's text: drop [CLS] and the [SEP] between A and B; token at pair position c sits at c - 1 (in A) or c - 2
    real = (batch.ids != special.pad) & (batch.ids != special.cls) & (batch.ids != special.sep)
    width = 2 * max_tokens
    text = torch.zeros(n_pairs, width, dtype=torch.long)
    target_rows, target_cols = [], []
    for row in range(n_pairs):
        tokens = batch.ids[row][real[row]]
        text[row, :len(tokens)] = tokens                            # right padding never reaches earlier positions
        cols = blanks[row].nonzero().flatten()
        shifted = torch.where(cols <= batch.a_len[row], cols - 1, cols - 2)
        target_rows.append(torch.full_like(shifted, row)), target_cols.append(shifted)
    rows, cols = torch.cat(target_rows), torch.cat(target_cols)
    gpt_logits = torch.cat([gpt(chunk) for chunk in text.split(64)])[rows, cols - 1]   # logits at t-1 predict t
    if not torch.equal(text[rows, cols], labels):
        raise AssertionError("the GPT's targets are not the encoder's blanked tokens")
    nsp = nsp_pairs(sentences, n_pairs, special, max_tokens, generator=generator)
    _, nsp_logits = encoder(nsp.ids, nsp.segments, nsp.attention_mask, mlm_positions=torch.zeros_like(nsp.ids).bool())
    return BlankScores(
        n_blanks=len(labels),
        encoder_accuracy=(enc_logits.argmax(-1) == labels).float().mean().item(),
        gpt_accuracy=(gpt_logits.argmax(-1) == labels).float().mean().item(),
        encoder_loss=F.cross_entropy(enc_logits, labels).item(),
        gpt_loss=F.cross_entropy(gpt_logits, labels).item(),
        n_pairs=n_pairs,
        nsp_accuracy=(nsp_logits.argmax(-1) == nsp.is_random).float().mean().item())


__all__ = ["BlankScores", "CourseSentences", "HELD_OUT_MARGIN", "MaskedLMHistory", "course_sentences",
           "fill_in_the_blank", "train_causal_lm", "train_masked_lm"]
