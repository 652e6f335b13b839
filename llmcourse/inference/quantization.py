"""Smaller numbers: weight quantization to int8 and 4 bits (chapter 11).

A weight tensor becomes small integers ``q`` plus a float *scale* (and for the asymmetric kind a
*zero point*), so that ``w ≈ scale · (q - zero_point)``:

* **absmax** (symmetric): ``scale = max|w| / (2^(b-1) - 1)``, ``q = round(w / scale)``, zero stays exactly 0;
* **zero-point** (asymmetric): ``scale = (max - min) / (2^b - 1)``, ``zero_point = round(-min / scale)``,
  ``q = round(w / scale) + zero_point`` in ``0 .. 2^b - 1``: the whole integer range covers [min, max];
* per **tensor** (one scale), per **channel** (one scale per output row), or **group-wise** (one scale per
  ``group_size`` consecutive weights of a row, as 4-bit formats such as GPTQ's and llama.cpp's Q4 do).

:func:`quantize_model` gives a copy of a model whose linear layers hold the dequantized weights, so its loss
shows what the rounding costs; :func:`weight_bytes` counts what storing the integers and scales would take.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def absmax_quantize(w: Tensor, bits: int = 8, dim: int | None = None) -> tuple[Tensor, Tensor]:
    """(q, scale): symmetric quantization, one scale per tensor (``dim=None``) or per slice along ``dim``
    (``dim=0``: one per output row of a (out, in) weight). ``q`` is int8, in -(2^(b-1)-1) .. 2^(b-1)-1."""
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().amax() if dim is None else w.abs().amax(dim=[d for d in range(w.dim()) if d != dim],
                                                             keepdim=True)
    scale = absmax.clamp(min=1e-12) / qmax
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale


def zero_point_quantize(w: Tensor, bits: int = 8, dim: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(q, scale, zero_point): asymmetric quantization onto 0 .. 2^b - 1 (stored as uint8)."""
    levels = 2 ** bits - 1
    others = [d for d in range(w.dim()) if d != dim]
    low = w.amin() if dim is None else w.amin(dim=others, keepdim=True)
    high = w.amax() if dim is None else w.amax(dim=others, keepdim=True)
    low, high = low.clamp(max=0), high.clamp(min=0)  # keep 0 representable exactly
    scale = ((high - low) / levels).clamp(min=1e-12)
    zero_point = torch.round(-low / scale)
    q = (torch.round(w / scale) + zero_point).clamp(0, levels)
    return q.to(torch.uint8), scale, zero_point


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor | float = 0.0) -> Tensor:
    """scale · (q - zero_point) as float32."""
    return scale * (q.float() - zero_point)


def group_quantize(w: Tensor, bits: int = 4, group_size: int = 32) -> tuple[Tensor, Tensor]:
    """(q, scales): absmax quantization of each run of ``group_size`` weights along the last dimension.
    ``q`` has ``w``'s shape; ``scales`` has shape (..., in / group_size, 1)."""
    if w.shape[-1] % group_size:
        raise ValueError(f"the last dimension ({w.shape[-1]}) must be a multiple of group_size={group_size}")
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // group_size, group_size)
    q, scale = _absmax_last(groups, bits)
    return q.reshape(w.shape), scale


def _absmax_last(groups: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    qmax = 2 ** (bits - 1) - 1
    scale = groups.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    return torch.round(groups / scale).clamp(-qmax, qmax).to(torch.int8), scale


def group_dequantize(q: Tensor, scales: Tensor, group_size: int = 32) -> Tensor:
    """The float weights back from :func:`group_quantize`."""
    groups = q.reshape(*q.shape[:-1], q.shape[-1] // group_size, group_size).float()
    return (groups * scales).reshape(q.shape)


SCHEMES = ("int8 per tensor", "int8 per channel", "int8 zero-point per channel", "int4 group 32", "int4 per channel")


def fake_quantize(w: Tensor, scheme: str) -> Tensor:
    """``w`` after quantizing with ``scheme`` (one of :data:`SCHEMES`) and dequantizing again."""
    if scheme == "int8 per tensor":
        return dequantize(*absmax_quantize(w, 8))
    if scheme == "int8 per channel":
        return dequantize(*absmax_quantize(w, 8, dim=0))
    if scheme == "int8 zero-point per channel":
        return dequantize(*zero_point_quantize(w, 8, dim=0))
    if scheme == "int4 group 32":
        return group_dequantize(*group_quantize(w, 4, 32), group_size=32)
    if scheme == "int4 per channel":
        return dequantize(*absmax_quantize(w, 4, dim=0))
    raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")


def _linear_weights(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def quantize_model(model: nn.Module, scheme: str) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` weights are replaced by their quantized-then-dequantized values
    (the tied embedding/output matrix included: it is the output layer's weight)."""
    quantized = copy.deepcopy(model)
    for layer in _linear_weights(quantized):
        layer.weight.copy_(fake_quantize(layer.weight, scheme))
    return quantized


def weight_bytes(model: nn.Module, scheme: str | None) -> int:
    """Bytes to store the linear layers' weights: float32 (``scheme=None``) or integers plus float32 scales
    (and zero points); biases and LayerNorms stay float32 and are counted too."""
    total, seen = 0, set()
    for layer in _linear_weights(model):
        w = layer.weight
        if id(w) in seen:
            continue
        seen.add(id(w))
        rows, cols = w.shape
        if scheme is None:
            total += 4 * w.numel()
        elif scheme == "int8 per tensor":
            total += w.numel() + 4
        elif scheme == "int8 per channel":
            total += w.numel() + 4 * rows
        elif scheme == "int8 zero-point per channel":
            total += w.numel() + 8 * rows
        elif scheme == "int4 group 32":
            total += w.numel() // 2 + 4 * rows * (cols // 32)
        elif scheme == "int4 per channel":
            total += w.numel() // 2 + 4 * rows
        else:
            raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
    others = {id(p): p for p in model.parameters() if id(p) not in seen}
    return total + 4 * sum(p.numel() for p in others.values())


@torch.no_grad()
def mean_loss(model: nn.Module, ids: Tensor, window: int, n_windows: int) -> float:
    """Average next-token cross-entropy (nats) over the first ``n_windows`` non-overlapping windows of ``ids``."""
    model.eval()
    starts = torch.arange(n_windows) * window
    x = torch.stack([ids[s:s + window] for s in starts])
    y = torch.stack([ids[s + 1:s + window + 1] for s in starts])
    logits = model(x)
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)))


def pytorch_dynamic_int8(model: nn.Module) -> nn.Module:
    """The reference: PyTorch's own dynamic int8 quantization of every ``nn.Linear`` (weights int8 per tensor,
    activations quantized on the fly)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic
    with warnings.catch_warnings():  # PyTorch announces that its quantized tensors will move to another package
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


__all__ = ["SCHEMES", "absmax_quantize", "dequantize", "fake_quantize", "group_dequantize", "group_quantize",
           "mean_loss", "pytorch_dynamic_int8", "quantize_model", "weight_bytes", "zero_point_quantize"]
