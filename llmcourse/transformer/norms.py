"""Normalisation layers: LayerNorm and RMSNorm (chapter 06).

Both rescale each token's feature vector (the last dimension) so that its size
is under control, then multiply by a learned per-feature ``weight`` (gain).

* LayerNorm (Ba et al. 2016, used by GPT-2/GPT-3): subtract the mean over the
  features, divide by the standard deviation, then ``* weight + bias``.
* RMSNorm (Zhang & Sennrich 2019, used by LLaMA): skip the mean; divide by the
  root mean square sqrt(mean(x^2) + eps), then ``* weight``. One reduction fewer
  and no bias.

The functions show the formula; the modules hold the parameters and are
state_dict-compatible with ``nn.LayerNorm`` and transformers' ``LlamaRMSNorm``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dimension (biased variance, like torch)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # divide by d, not d - 1
    out = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def rms_norm(x: Tensor, weight: Tensor | None, eps: float = 1e-6) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension, computed in float32 (as LlamaRMSNorm).

    The result is cast back to x's dtype before multiplying by ``weight``, which is
    what transformers' LlamaRMSNorm does for half-precision inputs.
    """
    dtype = x.dtype
    h = x.to(torch.float32) if dtype in (torch.float16, torch.bfloat16) else x
    h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)
    h = h.to(dtype)
    return h if weight is None else weight * h


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with parameters ``weight`` (ones) and ``bias`` (zeros, optional).

    Same parameter names and initial values as ``nn.LayerNorm(d_model, eps)``,
    so ``load_state_dict`` works both ways.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1, got {d_model}")
        self.d_model, self.eps = d_model, eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"LayerNorm({self.d_model}) got input with last dimension {x.shape[-1]}")
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension with one parameter, ``weight`` (ones).

    Same parameter name and computation as transformers' ``LlamaRMSNorm``:
    float32 statistics, x * rsqrt(mean(x^2) + eps) * weight.
    """

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1, got {d_model}")
        self.d_model, self.eps = d_model, eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"RMSNorm({self.d_model}) got input with last dimension {x.shape[-1]}")
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


def make_norm(kind: str, d_model: int, bias: bool = True, eps: float | None = None) -> nn.Module:
    """``"layernorm"`` -> :class:`LayerNorm`, ``"rmsnorm"`` -> :class:`RMSNorm`.

    ``eps`` defaults to each norm's usual value: 1e-5 for LayerNorm (GPT-2, PyTorch), 1e-6 for RMSNorm (LLaMA).
    """
    if eps is not None and not eps > 0:
        raise ValueError(f"a norm's eps must be a small positive number (it keeps sqrt(var + eps) away from 0); "
                         f"got {eps}")
    if kind == "layernorm":
        return LayerNorm(d_model, eps=1e-5 if eps is None else eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=1e-6 if eps is None else eps)
    raise ValueError(f"unknown norm {kind!r}: choose 'layernorm' or 'rmsnorm'")


NORMS = ("layernorm", "rmsnorm")


def benchmark_norms(n_tokens: int = 4096, d_model: int = 1024, repeats: int = 50, dtype: torch.dtype = torch.float32,
                    backward: bool = False, seed: int = 0) -> dict[str, float]:
    """Median milliseconds per call of LayerNorm and RMSNorm on (n_tokens, d_model), ours and PyTorch's.

    Keys: ``layernorm_ours``, ``rmsnorm_ours`` (the formulas above, several kernels
    each), ``layernorm_torch``, ``rmsnorm_torch`` (nn.LayerNorm, nn.RMSNorm). With
    ``backward=True`` each call also back-propagates a sum.
    """
    import time

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, d_model, generator=generator).to(dtype).requires_grad_(backward)
    weight, bias = torch.ones(d_model, dtype=dtype), torch.zeros(d_model, dtype=dtype)
    fns = {
        "layernorm_ours": lambda: layer_norm(x, weight, bias, 1e-5),
        "rmsnorm_ours": lambda: rms_norm(x, weight, 1e-6),
        "layernorm_torch": lambda: torch.nn.functional.layer_norm(x, (d_model,), weight, bias, 1e-5),
        "rmsnorm_torch": lambda: torch.nn.functional.rms_norm(x, (d_model,), weight, 1e-6),
    }
    result = {}
    for name, fn in fns.items():
        times = []
        for i in range(repeats + 3):
            start = time.perf_counter()
            out = fn()
            if backward:
                out.sum().backward()
                x.grad = None
            if i >= 3:  # warm-up calls are not timed
                times.append(time.perf_counter() - start)
        result[name] = 1000 * sorted(times)[len(times) // 2]
    return result

__all__ = ["layer_norm", "rms_norm", "LayerNorm", "RMSNorm", "make_norm", "NORMS", "benchmark_norms"]
