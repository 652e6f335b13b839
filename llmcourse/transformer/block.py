"""The Transformer block (chapter 06): attention + feed-forward, each wrapped in a residual connection and a norm.

Two orders are in use:

* **pre-norm** (GPT-2 onward, LLaMA)::

      x = x + attn(norm1(x))
      x = x + ffn(norm2(x))

  the residual path from input to output is never normalised, so gradients
  reach early layers undisturbed;

* **post-norm** (the original Transformer, BERT)::

      x = norm1(x + attn(x))
      x = norm2(x + ffn(x))

  every block's output passes through a norm, which rescales the gradient on
  its way down; deep post-norm stacks usually need learning-rate warmup.

Also here: small experiments used by the lesson — gradient flow through a deep
stack with and without residual connections (:func:`residual_gradient_norms`),
gradient norms per block at initialisation (:func:`block_gradient_norms`), and
a short training run of a deep stack (:func:`train_stack`).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.attention import KVCache, MultiHeadAttention
from llmcourse.transformer.feedforward import FFNS, make_ffn
from llmcourse.transformer.norms import NORMS, make_norm


def check_block_config(d_model: int, n_heads: int, n_kv_heads: int | None = None, norm: str = "layernorm",
                       ffn: str = "gelu") -> None:
    """Raise a ValueError that says what is wrong with an impossible block configuration."""
    if d_model < 1 or n_heads < 1:
        raise ValueError(f"d_model and n_heads must be >= 1, got {d_model} and {n_heads}")
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}: "
                         f"each head needs head_dim = d_model / n_heads features")
    if n_kv_heads is not None and (n_kv_heads < 1 or n_heads % n_kv_heads):
        raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}: "
                         f"each key/value head must serve a whole group of query heads")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {NORMS}")
    if ffn not in FFNS:
        raise ValueError(f"unknown ffn {ffn!r}: choose one of {FFNS}")


class TransformerBlock(nn.Module):
    """One decoder block: self-attention and a feed-forward network, with residuals and norms.

    ``norm``: ``"layernorm"`` (GPT) or ``"rmsnorm"`` (LLaMA). ``ffn``: ``"gelu"``,
    ``"gelu_tanh"``, ``"relu"`` (d_hidden defaults to 4 * d_model) or ``"swiglu"``
    (d_hidden defaults to LLaMA's rounded 8/3 * d_model). ``bias`` is used by the
    attention and FFN projections (LayerNorm always has its bias). ``prenorm``
    chooses the order (see the module docstring). ``eps`` is both norms' epsilon
    (default: the norm's usual one, see :func:`~llmcourse.transformer.norms.make_norm`). ``dropout`` is applied to each
    sub-layer's output before it is added to the residual stream (and to the
    attention weights).

    Submodules: ``norm1``, ``attn`` (:class:`~llmcourse.transformer.attention.MultiHeadAttention`),
    ``norm2``, ``ffn``.
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, d_hidden: int | None = None,
                 norm: str = "layernorm", ffn: str = "gelu", prenorm: bool = True, bias: bool = True,
                 dropout: float = 0.0, eps: float | None = None):
        super().__init__()
        check_block_config(d_model, n_heads, n_kv_heads, norm, ffn)
        self.d_model, self.prenorm = d_model, prenorm
        self.norm_kind, self.ffn_kind = norm, ffn
        self.norm1 = make_norm(norm, d_model, eps=eps)
        self.attn = MultiHeadAttention(d_model, n_heads, n_kv_heads, bias=bias, dropout=dropout)
        self.norm2 = make_norm(norm, d_model, eps=eps)
        self.ffn = make_ffn(ffn, d_model, d_hidden, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, is_causal: bool = True, rope: tuple[Tensor, Tensor] | None = None,
                mask: Tensor | None = None, past_kv: KVCache | None = None, use_cache: bool = False):
        """x (batch, seq, d_model) -> (batch, seq, d_model); with a cache also returns ``present_kv``."""
        caching = use_cache or past_kv is not None

        def attend(h: Tensor):
            result = self.attn(h, mask=mask, is_causal=is_causal, rope=rope, past_kv=past_kv, use_cache=caching)
            return result if caching else (result, None)

        if self.prenorm:
            a, present = attend(self.norm1(x))
            x = x + self.dropout(a)
            x = x + self.dropout(self.ffn(self.norm2(x)))
        else:
            a, present = attend(x)
            x = self.norm1(x + self.dropout(a))
            x = self.norm2(x + self.dropout(self.ffn(x)))
        return (x, present) if caching else x

    def extra_repr(self) -> str:
        return f"prenorm={self.prenorm}"


# --------------------------------------------------------------------------- experiments for the lesson


def residual_gradient_norms(n_layers: int = 30, d_model: int = 64, residual: bool = True, batch: int = 64,
                            activation: str = "tanh", seed: int = 0) -> list[float]:
    """Gradient norm of the loss w.r.t. each layer's *input*, for a stack of ``n_layers`` Linear+activation layers.

    Each layer computes f(x) = act(W x + b) with PyTorch's default Linear
    initialisation; with ``residual=True`` it computes x + f(x) instead. The loss
    is the mean square of the final output. Entry i is ||dL/dx_i||, x_0 being the
    stack's input: a chain of plain layers makes it shrink geometrically with
    depth, the identity path of a residual connection keeps it from vanishing.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    act = {"tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid}[activation]
    layers = [nn.Linear(d_model, d_model) for _ in range(n_layers)]
    x = torch.randn(batch, d_model, generator=generator)
    inputs = []
    h = x
    for layer in layers:
        h = h.detach().requires_grad_() if not inputs else h
        h.retain_grad()
        inputs.append(h)
        f = act(layer(h))
        h = h + f if residual else f
    h.pow(2).mean().backward()
    return [float(t.grad.norm()) for t in inputs]


def make_stack(n_layers: int, d_model: int, n_heads: int, prenorm: bool = True, norm: str = "layernorm",
               ffn: str = "gelu", seed: int = 0, eps: float | None = None) -> nn.ModuleList:
    """``n_layers`` :class:`TransformerBlock` with the same seed for a fair pre/post-norm comparison."""
    torch.manual_seed(seed)
    return nn.ModuleList(TransformerBlock(d_model, n_heads, norm=norm, ffn=ffn, prenorm=prenorm, eps=eps)
                         for _ in range(n_layers))


class StackLM(nn.Module):
    """A tiny language model around a stack of blocks: embedding, blocks, (final norm if pre-norm), head."""

    def __init__(self, vocab_size: int, n_layers: int, d_model: int, n_heads: int, prenorm: bool = True,
                 max_len: int = 64, seed: int = 0, eps: float | None = None):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = make_stack(n_layers, d_model, n_heads, prenorm=prenorm, seed=seed, eps=eps)
        # pre-norm stacks need a final norm (the residual stream is never normalised); post-norm ends on one
        self.final_norm = make_norm("layernorm", d_model, eps=eps) if prenorm else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


def block_gradient_norms(model: StackLM, tokens: Tensor, targets: Tensor) -> list[float]:
    """The gradient norm of each block's parameters (all of them together) for one batch's cross-entropy."""
    model.zero_grad()
    logits = model(tokens)
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
    norms = []
    for block in model.blocks:
        norms.append(float(torch.sqrt(sum(p.grad.pow(2).sum() for p in block.parameters() if p.grad is not None))))
    model.zero_grad()
    return norms


def copy_task_batch(batch: int, seq_len: int, vocab_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A toy task for a causal model: a random first half, then the same tokens again; predict the next token."""
    half = seq_len // 2
    first = torch.randint(1, vocab_size, (batch, half), generator=generator)
    seq = torch.cat([first, first], dim=1)
    return seq[:, :-1], seq[:, 1:]


def train_stack(prenorm: bool, n_layers: int = 12, d_model: int = 64, n_heads: int = 4, vocab_size: int = 16,
                seq_len: int = 16, steps: int = 150, lr: float = 1e-3, batch: int = 32, seed: int = 0,
                on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train a :class:`StackLM` on :func:`copy_task_batch` with Adam at a constant ``lr`` (no warmup); the losses."""
    model = StackLM(vocab_size, n_layers, d_model, n_heads, prenorm=prenorm, max_len=seq_len, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed + 1)
    losses = []
    for step in range(steps):
        tokens, targets = copy_task_batch(batch, seq_len, vocab_size, generator)
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


__all__ = ["TransformerBlock", "check_block_config", "residual_gradient_norms", "make_stack", "StackLM",
           "block_gradient_norms", "copy_task_batch", "train_stack"]
