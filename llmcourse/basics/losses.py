"""Loss functions: one number that says how wrong a prediction is (chapter 01).

* Regression (predict a number): :func:`mse` (mean squared error, "L2") or
  :func:`l1` (mean absolute error), which cares less about outliers.
* Classification (pick a class): :func:`cross_entropy` from raw scores
  ("logits") and integer class labels, or :func:`binary_cross_entropy` from
  one logit per example and 0/1 labels.

All losses average over the examples ("mean reduction"), like PyTorch's
defaults, and are written from elementary operations; the tests compare them
with ``torch.nn.functional``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from llmcourse.basics.activations import log_softmax, relu


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error: the average of (prediction - target)^2."""
    return ((prediction - target) ** 2).mean()


def l1(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error: the average of |prediction - target|."""
    return (prediction - target).abs().mean()


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean of -log softmax(logits)[target] over the examples.

    ``logits`` has shape ``(..., C)`` (raw scores, any real numbers, never
    passed through softmax or ReLU first); ``targets`` holds integer class
    indices with shape ``(...)``. Works for ``(N, C)`` batches and for
    ``(B, T, V)`` language-model outputs alike.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match: "
                         "expected logits (..., C) and targets (...)")
    log_probs = log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return -picked.mean()


def binary_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean of -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] from logits ``z`` and labels ``y`` in [0, 1].

    Written as max(z, 0) - z y + log(1 + e^-|z|), which never overflows.
    """
    z, y = logits, targets.to(logits.dtype)
    return (relu(z) - z * y + torch.log1p(torch.exp(-z.abs()))).mean()


__all__ = ["mse", "l1", "cross_entropy", "binary_cross_entropy"]
