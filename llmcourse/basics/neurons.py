"""Neurons, dense layers and the forward pass as matrix products (chapter 01).

* :func:`neuron` — a weighted sum of the inputs, plus a bias, through an activation.
* :func:`dense` — a whole layer of neurons for a whole batch at once: ``z = a @ W + b``.
  ``a`` is ``(batch, n_in)``, ``W`` is ``(n_in, n_out)`` (one column per neuron),
  ``b`` is ``(n_out,)``. (``torch.nn.Linear`` stores the transpose, ``(n_out, n_in)``.)
* :func:`forward` — a deep network: layer after layer, each one's output the next one's input.
* :class:`MLP` — the same as a ``torch.nn.Module`` whose parameters PyTorch can train.
* :func:`leaf_flower_data` and :func:`leaf_flower_weights` — the chapter's running example:
  tell a leaf from a flower by two numbers, its greenness and its volume.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from llmcourse.basics.activations import Activation, get_activation

ActivationLike = Union[str, Activation, None]
Layer = tuple[Tensor, Tensor, ActivationLike]  # (W of shape (n_in, n_out), b of shape (n_out,), activation)


def neuron(x: Tensor, w: Tensor, b: float | Tensor, activation: ActivationLike = None) -> Tensor:
    """One neuron: ``activation(x1*w1 + x2*w2 + ... + b)``.

    ``x`` is one example ``(n,)`` or a batch ``(batch, n)``; ``w`` is ``(n,)``; ``b`` is a number.
    Returns a scalar tensor for one example, shape ``(batch,)`` for a batch.
    """
    z = (x * w).sum(dim=-1) + b
    return get_activation(activation)(z)


def dense(a: Tensor, W: Tensor, b: Tensor, activation: ActivationLike = None) -> Tensor:
    """A dense (fully connected) layer for a batch: ``activation(a @ W + b)``.

    ``a``: ``(batch, n_in)`` (or ``(n_in,)`` for one example); ``W``: ``(n_in, n_out)``;
    ``b``: ``(n_out,)``. Returns ``(batch, n_out)``. Column ``j`` of ``W`` holds the
    weights of neuron ``j``, so the matrix product runs every neuron on every example.
    """
    if a.shape[-1] != W.shape[0]:
        raise ValueError(f"a has {a.shape[-1]} features but W expects {W.shape[0]} (W is (n_in, n_out) = {tuple(W.shape)})")
    return get_activation(activation)(a @ W + b)


def forward(x: Tensor, layers: Sequence[Layer], return_all: bool = False) -> Tensor | list[Tensor]:
    """Run ``x`` through ``layers`` (each a ``(W, b, activation)`` triple) one after another.

    With ``return_all=True`` returns ``[x, a1, a2, ..., output]``: what every layer produced.
    """
    outputs = [x]
    for W, b, activation in layers:
        outputs.append(dense(outputs[-1], W, b, activation))
    return outputs if return_all else outputs[-1]


class MLP(nn.Module):
    """A multi-layer perceptron built from :func:`dense` layers.

    ``MLP([2, 3, 2])`` has 2 inputs, a hidden layer of 3 neurons and 2 outputs.
    Hidden layers use ``activation``; the last layer uses ``final_activation``
    (none by default, so the outputs are raw scores, "logits").
    Weights start like ``nn.Linear``'s: uniform in ``±1/sqrt(n_in)``.
    """

    def __init__(self, sizes: Sequence[int], activation: ActivationLike = "relu",
                 final_activation: ActivationLike = None, generator: torch.Generator | None = None):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError("an MLP needs at least an input size and an output size, e.g. [2, 2]")
        self.sizes = list(sizes)
        self.activation = activation
        self.final_activation = final_activation
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(n_in)
            W = (torch.rand(n_in, n_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(n_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(W))
            self.biases.append(nn.Parameter(b))

    def layers(self) -> list[Layer]:
        """The network as ``(W, b, activation)`` triples, ready for :func:`forward`."""
        n = len(self.weights)
        return [(W, b, self.activation if i < n - 1 else self.final_activation)
                for i, (W, b) in enumerate(zip(self.weights, self.biases))]

    def forward(self, x: Tensor) -> Tensor:
        return forward(x, self.layers())

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.activation!r}, final_activation={self.final_activation!r}"


# --------------------------------------------------------------------------- the leaf / flower example

CLASS_NAMES = ("leaf", "flower")  # output 0 scores "leaf", output 1 scores "flower"
FEATURE_NAMES = ("greenness", "volume")  # greenness in [0, 1]; volume in units of 10 ml


def leaf_flower_data(n: int = 100, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` invented objects, half leaves and half flowers, in random order.

    Returns ``X`` of shape ``(n, 2)`` — columns greenness (how much of the colour
    is green, 0 to 1) and volume (in units of 10 ml) — and labels ``y`` of shape
    ``(n,)``: 0 for a leaf, 1 for a flower. Leaves are greener and smaller.
    """
    g = torch.Generator().manual_seed(seed)
    n_leaf = n // 2
    n_flower = n - n_leaf

    def blob(count: int, green: float, volume: float, spread_green: float, spread_volume: float) -> Tensor:
        noise = torch.randn(count, 2, generator=g)
        greenness = (green + spread_green * noise[:, 0]).clamp(0.0, 1.0)
        vol = (volume + spread_volume * noise[:, 1]).clamp_min(0.1)
        return torch.stack([greenness, vol], dim=1)

    X = torch.cat([blob(n_leaf, 0.70, 0.6, 0.08, 0.25), blob(n_flower, 0.35, 2.0, 0.10, 0.45)])
    y = torch.cat([torch.zeros(n_leaf, dtype=torch.long), torch.ones(n_flower, dtype=torch.long)])
    order = torch.randperm(n, generator=g)
    return X[order], y[order]


def leaf_flower_weights() -> tuple[Tensor, Tensor]:
    """Hand-set weights of a one-layer leaf/flower classifier: ``scores = x @ W + b``.

    leaf score = 3 * greenness - 1 * volume, flower score = -3 * greenness + 1 * volume:
    green and small says leaf, less green and big says flower.
    """
    W = torch.tensor([[3.0, -3.0],
                      [-1.0, 1.0]])
    b = torch.tensor([0.0, 0.0])
    return W, b


def classify(scores: Tensor) -> Tensor:
    """The class each row of ``scores`` votes for: the index of its largest score."""
    return scores.argmax(dim=-1)


def accuracy(scores: Tensor, labels: Tensor) -> float:
    """The fraction of rows whose largest score is at the right label."""
    return (classify(scores) == labels).float().mean().item()


__all__ = [
    "Layer", "neuron", "dense", "forward", "MLP", "CLASS_NAMES", "FEATURE_NAMES", "leaf_flower_data",
    "leaf_flower_weights", "classify", "accuracy",
]
