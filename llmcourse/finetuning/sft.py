"""Supervised fine-tuning (SFT): learn to answer, not to repeat the question (chapter 09).

An SFT example is one sequence, prompt followed by answer::

    Q: 23+20\\nA: 43|
    ^^^^^^^^^^^^^ prompt       ^^^ answer + end marker

The model is trained exactly as in pretraining (predict every next token), with
one change: the loss counts only the answer tokens. Their labels are the token
ids; the prompt's labels are :data:`IGNORE_INDEX` (-100), which
``F.cross_entropy`` skips. So the model is never asked to predict the question,
and no gradient flows from it.

Read top to bottom:

1. :func:`mask_prompt_labels`, :func:`build_sft_example`: ids and labels of one example;
2. :class:`SFTCollator`: pad a batch on the right (labels with -100);
3. :func:`sft_loss`: shift by one, cross-entropy over the answer tokens only;
4. :func:`exact_match`: greedy answers compared with the reference answers;
5. :func:`train_sft` and :func:`pretrain_on_text`: two short training loops, so
   this chapter runs on its own.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from llmcourse.progress import tqdm

from llmcourse.models.generation import generate
from llmcourse.finetuning.instructions import END_OF_ANSWER, format_example, format_prompt

IGNORE_INDEX = -100  # the label that F.cross_entropy (ignore_index=-100) leaves out

# --------------------------------------------------------------------------- one example


def mask_prompt_labels(ids: Tensor, prompt_length: int) -> Tensor:
    """Labels for ``ids`` (seq,): a copy with the first ``prompt_length`` positions set to -100."""
    if not isinstance(ids, Tensor) or ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D tensor of token ids, got "
                         f"{tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__}")
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or \
            not 0 <= prompt_length <= len(ids):
        raise ValueError(f"prompt_length must be a whole number from 0 to len(ids)={len(ids)}, "
                         f"got {prompt_length!r}")
    labels = ids.clone()
    labels[:prompt_length] = IGNORE_INDEX
    return labels


def build_sft_example(tokenizer, question: str, answer: str) -> tuple[Tensor, Tensor]:
    """``(ids, labels)`` for one question and answer; labels are -100 on the prompt's positions."""
    prompt_ids = tokenizer.encode(format_prompt(question))
    ids = torch.tensor(tokenizer.encode(format_example(question, answer)), dtype=torch.long)
    if ids[:len(prompt_ids)].tolist() != prompt_ids:
        raise ValueError("the tokenizer splits the prompt differently inside the full example; "
                         "SFT needs the prompt's tokens to be a prefix of the example's tokens")
    return ids, mask_prompt_labels(ids, len(prompt_ids))


# --------------------------------------------------------------------------- a batch


class SFTCollator:
    """Pad a list of ``(ids, labels)`` on the right into two (batch, longest) tensors.

    Padding ids get ``pad_id``, padding labels get -100. With right-padding and a
    causal model no real token ever attends to a padding token (padding comes
    after it), so no attention mask is needed; the -100 labels keep the padding
    out of the loss.
    """

    def __init__(self, pad_id: int, max_length: int | None = None):
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
            raise ValueError(f"pad_id must be a token id (a whole number >= 0), got {pad_id!r}")
        self.pad_id, self.max_length = pad_id, max_length

    def __call__(self, examples: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch: give at least one (ids, labels) example")
        for ids, labels in examples:
            if ids.shape != labels.shape or ids.dim() != 1:
                raise ValueError(f"each example must be two 1-D tensors of the same length, got ids "
                                 f"{tuple(ids.shape)} and labels {tuple(labels.shape)}")
        longest = max(len(ids) for ids, _ in examples)
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"an example has {longest} tokens, more than max_length={self.max_length}")
        batch_ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        batch_labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, labels) in enumerate(examples):
            batch_ids[row, :len(ids)] = ids
            batch_labels[row, :len(labels)] = labels
        return batch_ids, batch_labels


# --------------------------------------------------------------------------- the loss


def sft_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of the tokens whose label is not -100.

    ``logits`` (batch, seq, vocab) at position t predict the token at t + 1, so
    the logits drop their last position and the labels their first.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (batch, seq, vocab) and labels (batch, seq), got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    targets = labels[:, 1:]
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError("every label is -100, so there is no answer token to learn from "
                         "(is the prompt as long as the whole example?)")
    predictions = logits[:, :-1]
    return F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def answer(model: nn.Module, tokenizer, question: str, max_new_tokens: int = 8) -> str:
    """The model's greedy answer to ``question``: the text it writes before :data:`END_OF_ANSWER`."""
    prompt = torch.tensor(tokenizer.encode(format_prompt(question)), dtype=torch.long)
    end_id = tokenizer.encode(END_OF_ANSWER)[0]
    device = next(model.parameters()).device
    out = generate(model, prompt.to(device), max_new_tokens, top_k=1, eos_id=end_id)
    text = tokenizer.decode(out[len(prompt):].tolist())
    return text.split(END_OF_ANSWER)[0].removeprefix(" ")  # the template's space before every answer


def exact_match(model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]], max_new_tokens: int = 8) -> float:
    """Fraction of ``(question, answer)`` pairs that the model answers exactly right, decoding greedily."""
    if not pairs:
        raise ValueError("exact_match needs at least one (question, answer) pair")
    return sum(answer(model, tokenizer, q, max_new_tokens) == a for q, a in pairs) / len(pairs)


@torch.no_grad()
def answer_loss(model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]]) -> float:
    """Mean cross-entropy of the answer tokens (prompt masked) over ``pairs``, in one batch."""
    collate = SFTCollator(pad_id=tokenizer.encode(END_OF_ANSWER)[0])
    ids, labels = collate([build_sft_example(tokenizer, q, a) for q, a in pairs])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss = sft_loss(model(ids.to(device)), labels.to(device))
    model.train(was_training)
    return float(loss)


# --------------------------------------------------------------------------- two short training loops


def update(optimizer: torch.optim.Optimizer, loss: Tensor) -> float:
    """One plain training update: clear the gradients, backpropagate ``loss``, step; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_sft(model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]], steps: int, batch_size: int = 16,
              lr: float = 3e-3, mask_prompt: bool = True, seed: int = 0, progress: bool = False) -> list[float]:
    """Fine-tune ``model`` on ``pairs`` with AdamW for ``steps`` steps; returns the loss of every step.

    ``mask_prompt=False`` trains on the prompt tokens as well (the labels are
    the ids everywhere), to compare with masking. Only parameters with
    ``requires_grad`` are updated, so it also trains LoRA adapters.
    """
    examples = [build_sft_example(tokenizer, q, a) for q, a in pairs]
    if not mask_prompt:
        examples = [(ids, ids.clone()) for ids, _ in examples]
    collate = SFTCollator(pad_id=tokenizer.encode(END_OF_ANSWER)[0])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    rng = random.Random(seed)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="SFT", disable=not progress):
        ids, labels = collate(rng.sample(examples, min(batch_size, len(examples))))
        loss = sft_loss(model(ids.to(device)), labels.to(device))
        losses.append(update(optimizer, loss))
    model.eval()
    return losses


def pretrain_on_text(model: nn.Module, tokenizer, text: str, steps: int, block_size: int = 64,
                     batch_size: int = 16, lr: float = 3e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Next-token training on random windows of ``text`` (a minimal pretraining loop); returns the losses."""
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    if len(data) <= block_size:
        raise ValueError(f"the text has {len(data)} tokens; it needs more than block_size={block_size}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="pretraining", disable=not progress):
        starts = torch.randint(0, len(data) - block_size, (batch_size,), generator=generator)
        window = torch.stack([data[s:s + block_size + 1] for s in starts.tolist()]).to(device)
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        losses.append(update(optimizer, loss))
    model.eval()
    return losses


__all__ = ["IGNORE_INDEX", "mask_prompt_labels", "build_sft_example", "SFTCollator", "sft_loss", "answer",
           "exact_match", "answer_loss", "update", "train_sft", "pretrain_on_text"]
