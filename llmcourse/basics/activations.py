"""Activation functions and their derivatives (chapter 01).

Every function here is built from elementary tensor operations (``exp``,
``log``, ``erf``, ``amax``, ``where``) so you can read exactly what it does.
The tests compare each one with ``torch.nn.functional`` and each derivative
with ``torch.autograd``.

Elementwise activations map a tensor to a tensor of the same shape:

=================  ===========================================  ==================
name               formula                                      derivative
=================  ===========================================  ==================
``sigmoid``        1 / (1 + e^-x)                               ``sigmoid_grad``
``tanh``           (e^x - e^-x) / (e^x + e^-x)                  ``tanh_grad``
``relu``           max(0, x)                                    ``relu_grad``
``gelu``           x * Phi(x), Phi = standard normal CDF         ``gelu_grad``
``gelu_tanh``      the tanh approximation of GELU (GPT-2)       ``gelu_tanh_grad``
``silu``           x * sigmoid(x)  (also called swish)          ``silu_grad``
=================  ===========================================  ==================

``softmax`` is different: it turns a whole vector of scores into probabilities,
so its derivative is a matrix (``softmax_jacobian``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

Activation = Callable[[Tensor], Tensor]

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_COEF = 0.044715


def identity(x: Tensor) -> Tensor:
    """No activation at all: ``x`` unchanged."""
    return x


def identity_grad(x: Tensor) -> Tensor:
    return torch.ones_like(x)


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + e^-x), squashing any number into (0, 1).

    Written with ``e^-|x|`` so that ``exp`` never overflows, whatever the sign of ``x``.
    """
    e = torch.exp(-x.abs())  # in (0, 1]: never overflows
    return torch.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad(x: Tensor) -> Tensor:
    """d sigmoid / dx = sigmoid(x) * (1 - sigmoid(x)); at most 0.25."""
    s = sigmoid(x)
    return s * (1.0 - s)


def tanh(x: Tensor) -> Tensor:
    """(e^x - e^-x) / (e^x + e^-x), squashing into (-1, 1); written as sign(x) (1 - e^-2|x|) / (1 + e^-2|x|)."""
    e = torch.exp(-2.0 * x.abs())
    return torch.sign(x) * (1.0 - e) / (1.0 + e)


def tanh_grad(x: Tensor) -> Tensor:
    """d tanh / dx = 1 - tanh(x)^2; at most 1."""
    return 1.0 - tanh(x) ** 2


def relu(x: Tensor) -> Tensor:
    """max(0, x) for every entry: negatives become 0, positives pass unchanged."""
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu_grad(x: Tensor) -> Tensor:
    """1 where x > 0, else 0 (at exactly 0 we pick 0, as PyTorch does)."""
    return (x > 0).to(x.dtype)


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / _SQRT_2))


def _normal_pdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)


def gelu(x: Tensor) -> Tensor:
    """x * Phi(x) with Phi the standard normal CDF, written with ``erf`` (the exact form, BERT and most LLMs)."""
    return x * _normal_cdf(x)


def gelu_grad(x: Tensor) -> Tensor:
    """d gelu / dx = Phi(x) + x * phi(x), with phi the standard normal density."""
    return _normal_cdf(x) + x * _normal_pdf(x)


def gelu_tanh(x: Tensor) -> Tensor:
    """The tanh approximation of GELU used by GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    inner = _SQRT_2_OVER_PI * (x + _GELU_TANH_COEF * x**3)
    return 0.5 * x * (1.0 + tanh(inner))


def gelu_tanh_grad(x: Tensor) -> Tensor:
    """Derivative of :func:`gelu_tanh` by the product and chain rules."""
    inner = _SQRT_2_OVER_PI * (x + _GELU_TANH_COEF * x**3)
    t = tanh(inner)
    d_inner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_COEF * x**2)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * d_inner


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x), also called swish (used inside LLaMA's SwiGLU)."""
    return x * sigmoid(x)


def silu_grad(x: Tensor) -> Tensor:
    """d silu / dx = sigmoid(x) * (1 + x (1 - sigmoid(x)))."""
    s = sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """e^x / sum(e^x) along ``dim``: positive numbers that sum to 1.

    Subtracting the maximum first changes nothing mathematically (the factor
    e^-max cancels) but keeps ``exp`` from overflowing on large scores.
    """
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """log(softmax(x)) computed stably: (x - max) - log(sum(e^(x - max)))."""
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def softmax_jacobian(x: Tensor) -> Tensor:
    """The matrix of derivatives d softmax(x)_i / d x_j = s_i (delta_ij - s_j) for a 1-D ``x``."""
    if x.dim() != 1:
        raise ValueError(f"softmax_jacobian expects a 1-D vector, got shape {tuple(x.shape)}")
    s = softmax(x)
    return torch.diag(s) - torch.outer(s, s)


# name -> (function, derivative), in the order the lesson plots them
ACTIVATIONS: dict[str, tuple[Activation, Activation]] = {
    "identity": (identity, identity_grad),
    "sigmoid": (sigmoid, sigmoid_grad),
    "tanh": (tanh, tanh_grad),
    "relu": (relu, relu_grad),
    "gelu": (gelu, gelu_grad),
    "gelu_tanh": (gelu_tanh, gelu_tanh_grad),
    "silu": (silu, silu_grad),
}


def get_activation(activation: str | Activation | None) -> Activation:
    """Turn a name such as ``"relu"`` (or ``None`` for no activation) into the function; functions pass through."""
    if activation is None:
        return identity
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation][0]
    except KeyError:
        known = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {activation!r}; choose one of: {known}") from None


__all__ = [
    "ACTIVATIONS", "Activation", "get_activation", "identity", "identity_grad", "sigmoid", "sigmoid_grad",
    "tanh", "tanh_grad", "relu", "relu_grad", "gelu", "gelu_grad", "gelu_tanh", "gelu_tanh_grad", "silu",
    "silu_grad", "softmax", "log_softmax", "softmax_jacobian",
]
