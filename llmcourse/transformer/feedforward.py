"""Position-wise feed-forward networks (chapter 06).

After attention has mixed information *between* tokens, the feed-forward network
(FFN) transforms each token's vector on its own, with the same weights at every
position:

* classic FFN (the original Transformer, GPT-2, GPT-3):
  ``down(act(up(x)))`` with ``up: d_model -> d_hidden`` (usually 4 * d_model) and
  ``act`` = ReLU or GELU;
* SwiGLU (Shazeer 2020, LLaMA): ``down_proj(silu(gate_proj(x)) * up_proj(x))``:
  a second "gate" projection multiplies the activation elementwise. With three
  matrices instead of two, LLaMA shrinks d_hidden to about (2/3) * 4 * d_model
  (then rounds it) so the parameter count stays the same.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


def activation_fn(name: str):
    """The elementwise function for ``"relu"``, ``"gelu"`` (exact, erf) or ``"gelu_tanh"`` (GPT-2's gelu_new)."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"unknown activation {name!r}: choose one of {ACTIVATIONS}")


class FeedForward(nn.Module):
    """down(dropout?(act(up(x)))): Linear ``up`` (d_model -> d_hidden), activation, Linear ``down`` (back).

    ``dropout`` is applied to the output (as GPT-2's ``resid_pdrop`` after the MLP).
    """

    def __init__(self, d_model: int, d_hidden: int, activation: str = "gelu", bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if d_model < 1 or d_hidden < 1:
            raise ValueError(f"d_model and d_hidden must be >= 1, got {d_model} and {d_hidden}")
        self.act = activation_fn(activation)  # raises for unknown names
        self.activation = activation
        self.up = nn.Linear(d_model, d_hidden, bias=bias)
        self.down = nn.Linear(d_hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(self.act(self.up(x))))

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class SwiGLU(nn.Module):
    """LLaMA's MLP: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, three Linear layers, no bias by default.

    Parameter names match transformers' ``LlamaMLP`` so its state_dict loads directly.
    """

    def __init__(self, d_model: int, d_hidden: int, bias: bool = False):
        super().__init__()
        if d_model < 1 or d_hidden < 1:
            raise ValueError(f"d_model and d_hidden must be >= 1, got {d_model} and {d_hidden}")
        self.gate_proj = nn.Linear(d_model, d_hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, d_hidden, bias=bias)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def llama_hidden_size(d_model: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """LLaMA's SwiGLU width: int(2/3 * 4 * d_model), times an optional multiplier, rounded up to ``multiple_of``.

    For d_model = 4096 this gives 11008 (LLaMA-1/2 7B).
    """
    hidden = int(2 * (4 * d_model) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def make_ffn(kind: str, d_model: int, d_hidden: int | None = None, bias: bool = True,
             dropout: float = 0.0) -> nn.Module:
    """``"relu"``/``"gelu"``/``"gelu_tanh"`` -> :class:`FeedForward`, ``"swiglu"`` -> :class:`SwiGLU`.

    Default widths: 4 * d_model for the classic FFN, :func:`llama_hidden_size` for SwiGLU.
    """
    if kind == "swiglu":
        return SwiGLU(d_model, d_hidden if d_hidden is not None else llama_hidden_size(d_model), bias=bias)
    if kind in ACTIVATIONS:
        return FeedForward(d_model, d_hidden if d_hidden is not None else 4 * d_model, kind, bias, dropout)
    raise ValueError(f"unknown ffn {kind!r}: choose one of {ACTIVATIONS + ('swiglu',)}")


FFNS = ACTIVATIONS + ("swiglu",)

__all__ = ["FeedForward", "SwiGLU", "activation_fn", "llama_hidden_size", "make_ffn", "ACTIVATIONS", "FFNS"]
