"""A classification head on a pretrained GPT (chapter 09).

Task fine-tuning does not always need new text. To sort a sequence into one of
``n_classes`` classes, keep the pretrained decoder as a *backbone*, read the
hidden state of the sequence's **last real token** (in a causal model it is the
only position that has seen the whole sequence) and add a new linear layer
that maps it to one score per class.

Batches are padded on the right, so each row's last real token sits at
``lengths - 1``; padding comes after it and never changes it. With
``freeze_backbone=True`` only the new head trains (a "linear probe").
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from llmcourse.models.gpt import GPT
from llmcourse.finetuning.sft import update


def last_token_states(hidden: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Pick each row's last real position: hidden (batch, seq, d) -> (batch, d).

    ``lengths`` (batch,) counts the real tokens of each right-padded row; without
    it every row is taken to be full.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden states must have shape (batch, seq, d_model), got {tuple(hidden.shape)}")
    batch, seq, _ = hidden.shape
    if lengths is None:
        return hidden[:, -1]
    lengths = torch.as_tensor(lengths, device=hidden.device)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), one length per row, got {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > seq).any()):
        raise ValueError(f"every length must be from 1 to the padded length {seq}, got {lengths.tolist()}")
    return hidden[torch.arange(batch, device=hidden.device), lengths.long() - 1]


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token id lists -> ``(ids (batch, longest), lengths (batch,))``, padded on the right with ``pad_id``."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad_right needs at least one sequence, and no sequence may be empty")
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return ids, torch.tensor([len(s) for s in sequences])


class SequenceClassifier(nn.Module):
    """A GPT backbone plus a new linear head: ids (batch, seq) -> class scores (batch, n_classes)."""

    def __init__(self, backbone: GPT, n_classes: int, freeze_backbone: bool = False):
        super().__init__()
        if not hasattr(backbone, "hidden_states"):
            raise TypeError(f"the backbone must have a hidden_states(ids) method (like llmcourse.models.gpt.GPT), "
                            f"got {type(backbone).__name__}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be a whole number >= 2, got {n_classes!r}")
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.d_model, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def forward(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(last_token_states(self.backbone.hidden_states(ids), lengths))

    @torch.no_grad()
    def predict(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The most likely class of each row."""
        return self(ids, lengths).argmax(dim=-1)


def train_classifier(model: SequenceClassifier, tokenizer, examples: Sequence[tuple[str, int]], steps: int,
                     batch_size: int = 16, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Cross-entropy training on ``(text, label)`` examples; returns the loss of every step."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in range(steps):
        batch = rng.sample(list(examples), min(batch_size, len(examples)))
        ids, lengths = pad_right([tokenizer.encode(text) for text, _ in batch], pad_id=0)
        targets = torch.tensor([label for _, label in batch], device=device)
        loss = nn.functional.cross_entropy(model(ids.to(device), lengths.to(device)), targets)
        losses.append(update(optimizer, loss))
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: SequenceClassifier, tokenizer, examples: Sequence[tuple[str, int]]) -> float:
    """Fraction of ``(text, label)`` examples classified correctly."""
    if not examples:
        raise ValueError("accuracy needs at least one (text, label) example")
    device = next(model.parameters()).device
    ids, lengths = pad_right([tokenizer.encode(text) for text, _ in examples], pad_id=0)
    predicted = model.eval().predict(ids.to(device), lengths.to(device)).cpu()
    return float((predicted == torch.tensor([label for _, label in examples])).float().mean())


__all__ = ["last_token_states", "pad_right", "SequenceClassifier", "train_classifier", "accuracy"]
