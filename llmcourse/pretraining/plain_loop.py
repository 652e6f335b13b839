"""Pretraining in its plainest form (chapter 08): the loop the :class:`~llmcourse.pretraining.trainer.Trainer` grows from.

Windows of the text, a shuffled order, AdamW, and per step: forward, loss, backward, update. Nothing else: no
warmup or decay, no clipping, no accumulation, no mixed precision, no devices, no evaluation, no checkpoints.
With a constant learning rate and clipping off, the Trainer takes exactly these steps (chapter 08 checks it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.pretraining.data import TokenWindows
from llmcourse.pretraining.trainer import StepBatchSampler, configure_optimizer


def plain_training_loop(model: nn.Module, train_ids: Tensor, steps: int, batch_size: int = 16, lr: float = 3e-3,
                        weight_decay: float = 0.1, seed: int = 1337) -> list[float]:
    """Train ``model`` on ``train_ids`` for ``steps`` AdamW steps of ``batch_size`` windows; returns each step's loss."""
    windows = TokenWindows(train_ids, model.context_length, stride=1)   # every position starts a window
    order = StepBatchSampler(len(windows), batch_size, seed=seed)        # a shuffled order fixed by the seed
    optimizer = configure_optimizer(model, lr, weight_decay, betas=(0.9, 0.99))  # decay only the matrices
    model.train()
    losses = []
    for step in range(steps):
        pairs = [windows[i] for i in order.indices(step)]
        x = torch.stack([inputs for inputs, _ in pairs])                 # (batch, context): the input tokens
        y = torch.stack([targets for _, targets in pairs])               # the same tokens, one position later
        logits = model(x)                                                # (batch, context, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())        # every position predicts its next token
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


__all__ = ["plain_training_loop"]
