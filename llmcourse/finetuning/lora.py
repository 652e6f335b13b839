"""LoRA: fine-tune a few small matrices instead of the whole model (chapter 09).

Fine-tuning changes a weight matrix W (out, in) by some ΔW. LoRA (Hu et al.,
2021) bets that a useful ΔW has low rank and writes it as a product of two thin
matrices, ΔW = (alpha / r) · B A, with A (r, in) and B (out, r). The layer
computes

    y = x W^T + b + (alpha / r) · (x A^T) B^T

W and b stay frozen; only A and B (r · (in + out) numbers instead of in · out)
are trained. B starts at zero, so before training the layer equals the original
one exactly. After training, W + (alpha / r) B A is one ordinary matrix again
(:func:`merge_lora`): the fine-tuned model runs as fast as the original.

How it is put into a model is plain PyTorch: walk the modules, and where a
child ``nn.Linear`` has a target name (``q_proj``, ``v_proj``...), replace it
with ``setattr(parent, name, LoRALinear(child, ...))`` (:func:`inject_lora`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------- the formulas


def lora_forward(x: Tensor, weight: Tensor, bias: Tensor | None, A: Tensor, B: Tensor, alpha: float,
                 r: int) -> Tensor:
    """x W^T + b + (alpha / r) (x A^T) B^T, for x (..., in), W (out, in), A (r, in), B (out, r)."""
    return F.linear(x, weight, bias) + (alpha / r) * F.linear(F.linear(x, A), B)


def merge_lora_weights(weight: Tensor, A: Tensor, B: Tensor, alpha: float, r: int) -> Tensor:
    """W + (alpha / r) B A: one matrix that computes the same as the frozen W plus the adapter."""
    return weight + (alpha / r) * (B @ A)


# --------------------------------------------------------------------------- the layer


class LoRALinear(nn.Module):
    """An ``nn.Linear`` whose weight is frozen, plus a trainable low-rank update (alpha / r) B A."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"the rank r must be a whole number >= 1, got {r!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (the update is scaled by alpha / r), got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the same start as an nn.Linear's weight
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """The update ΔW = (alpha / r) B A, shape (out, in)."""
        return self.scale * (self.B @ self.A)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(self.dropout(x), self.A), self.B)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight W + (alpha / r) B A and the base's bias."""
        base = self.base
        linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(merge_lora_weights(base.weight, self.A, self.B, self.alpha, self.r))
            if base.bias is not None:
                linear.bias.copy_(base.bias)
        linear.requires_grad_(base.weight.requires_grad)
        return linear

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


# --------------------------------------------------------------------------- putting it into a model


def _linear_children(model: nn.Module) -> list[tuple[nn.Module, str, str, nn.Module]]:
    """(parent, child name, full name, child) for every Linear / LoRALinear below ``model``."""
    found = []
    for parent_name, parent in model.named_modules():
        if isinstance(parent, LoRALinear):
            continue  # its `base` is not a separate target
        for name, child in parent.named_children():
            if isinstance(child, (nn.Linear, LoRALinear)):
                found.append((parent, name, f"{parent_name}.{name}" if parent_name else name, child))
    return found


def inject_lora(model: nn.Module, target_names: Iterable[str] = ("q_proj", "v_proj"), r: int = 8,
                alpha: float = 16.0, dropout: float = 0.0) -> list[str]:
    """Freeze ``model`` and replace every ``nn.Linear`` child named in ``target_names`` by a :class:`LoRALinear`.

    Returns the full names of the replaced layers (e.g. ``"blocks.0.attn.q_proj"``);
    afterwards only the adapters' A and B require gradients.
    """
    targets = {target_names} if isinstance(target_names, str) else set(target_names)
    children = _linear_children(model)
    if any(isinstance(child, LoRALinear) for *_, child in children):
        raise ValueError("this model already has LoRA layers; merge them (merge_lora) before injecting again")
    chosen = [(parent, name, full, child) for parent, name, full, child in children if name in targets]
    if not chosen:
        available = sorted({name for _, name, _, _ in children})
        raise ValueError(f"no nn.Linear in the model is named {sorted(targets)}; the linear layers are named "
                         f"{available}")
    adapters = [LoRALinear(child, r=r, alpha=alpha, dropout=dropout) for *_, child in chosen]  # checks r, alpha
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for (parent, name, _, _), adapter in zip(chosen, adapters):
        setattr(parent, name, adapter)
    return [full for *_, full, _ in chosen]


def merge_lora(model: nn.Module) -> list[str]:
    """Replace every :class:`LoRALinear` in ``model`` by its merged ``nn.Linear``; returns their names."""
    merged = []
    for parent, name, full, child in _linear_children(model):
        if isinstance(child, LoRALinear):
            setattr(parent, name, child.merged())
            merged.append(full)
    return merged


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once); with ``trainable_only``, only those that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["lora_forward", "merge_lora_weights", "LoRALinear", "inject_lora", "merge_lora", "count_parameters"]
