"""Dropout, the two conventions (chapter 02).

During training, dropout zeroes each unit (each entry of an activation tensor)
independently with probability ``p``, so the network cannot lean on any single
unit. At inference every unit is kept. That changes how large the next layer's
input is on average: with dropout a unit contributes ``(1 - p) * x`` in
expectation, without it ``x``. The two conventions fix this mismatch on
opposite sides:

* :func:`dropout_classic` (the original 2014 paper): training keeps survivors
  as they are; inference multiplies by ``(1 - p)`` (equivalently, scales the
  outgoing weights by ``1 - p``) to match the training-time average.
* :func:`dropout` (*inverted* dropout, what PyTorch, TensorFlow and JAX do):
  training divides survivors by ``(1 - p)``, so the expectation is already
  ``x``; inference is the identity, and a trained model needs no change at all.

They are the same model up to one constant factor: ``dropout_classic`` equals
``(1 - p) * dropout`` in both modes, for the same random mask. Any layer whose
output is rescaled by a constant can absorb it into its weights, which is why
both train equally well. Note that "dropout" removes *units* (activations),
not individual connections between them (that variant is called DropConnect).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _check_p(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p}")


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """A boolean tensor that is True (keep) with probability ``1 - p``, independently everywhere."""
    _check_p(p)
    return torch.rand(shape, generator=generator, device=device) >= p


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout: in training zero each entry with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    At inference (``training=False``) it returns ``x`` unchanged. The scaling makes
    ``E[dropout(x)] = x`` in training too, so the next layer sees inputs of the same
    size in both modes. Matches ``torch.nn.functional.dropout`` in distribution.
    """
    _check_p(p)
    if not training or p == 0.0:
        return x
    mask = keep_mask(x.shape, p, generator, x.device)
    return x * mask / (1.0 - p)


def dropout_classic(x: Tensor, p: float = 0.5, training: bool = True,
                    generator: torch.Generator | None = None) -> Tensor:
    """Non-inverted ("classic") dropout: in training zero each entry with probability ``p``, no scaling;
    at inference multiply everything by ``(1 - p)``.

    Here ``E[dropout_classic(x)] = (1 - p) x`` in training, which the inference-time factor reproduces.
    """
    _check_p(p)
    if not training:
        return x * (1.0 - p)
    if p == 0.0:
        return x
    return x * keep_mask(x.shape, p, generator, x.device)


class Dropout(nn.Module):
    """Inverted :func:`dropout` as a layer: active after ``model.train()``, the identity after ``model.eval()``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        _check_p(p)
        self.p = p
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = ["keep_mask", "dropout", "dropout_classic", "Dropout"]
