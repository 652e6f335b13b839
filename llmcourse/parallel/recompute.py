"""Chapter 10: activation recomputation (gradient checkpointing).

For the backward pass, autograd keeps tensors from the forward pass: each
layer's input, the pre-activations a GeLU needs, attention weights... For a deep
model this *saved activation* memory grows with depth and batch size and often
exceeds the weights. Checkpointing a layer keeps only its input; during
backward the layer's forward pass runs again to rebuild the rest. Memory goes
down to about one tensor per layer, and compute goes up by about one extra
forward pass (roughly a third more work per step).

:func:`saved_activation_bytes` measures the saved memory exactly and on any
device: ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd
stores; we add up the distinct storages that are not parameters.
:func:`recompute_report` adds wall time and, on a CUDA GPU, the peak memory
allocated.
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint


def _layers(model: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    if isinstance(model, (nn.Sequential, nn.ModuleList, list, tuple)):
        layers = list(model)
    else:
        raise TypeError(f"model must be a stack of layers (nn.Sequential, nn.ModuleList or a list of modules), "
                        f"got {type(model).__name__}")
    if not layers or not all(isinstance(layer, nn.Module) for layer in layers):
        raise ValueError("model must hold at least one layer, and every layer must be an nn.Module")
    return layers


def _call(layer: nn.Module, x: Tensor) -> Tensor:
    out = layer(x)
    return out[0] if isinstance(out, tuple) else out  # e.g. a GPT Block returns (x, kv-cache)


def forward_layers(model: nn.Module | Sequence[nn.Module], x: Tensor, checkpoint: bool = False) -> Tensor:
    """Run the layers one after another; with ``checkpoint=True`` each layer keeps only its input for backward.

    Layers returning a tuple (like a GPT ``Block``) pass on its first element.
    """
    for layer in _layers(model):
        x = torch_checkpoint(_call, layer, x, use_reentrant=False) if checkpoint else _call(layer, x)
    return x


def saved_activation_bytes(model: nn.Module | Sequence[nn.Module], x: Tensor, checkpoint: bool = False) -> int:
    """Bytes autograd keeps for the backward pass of ``forward_layers(model, x, checkpoint)``, parameters excluded.

    Counts each storage once (a tensor saved by two operations, or a view of it, is one piece of memory).
    """
    parameters = {p.untyped_storage().data_ptr() for p in nn.ModuleList(_layers(model)).parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = forward_layers(model, x, checkpoint=checkpoint)
    del out
    return sum(storages.values())


def time_forward_backward(model: nn.Module | Sequence[nn.Module], x: Tensor, checkpoint: bool = False,
                          repeats: int = 3) -> float:
    """Median wall time (seconds) of one forward and backward pass, with or without checkpointing."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    layers = _layers(model)
    times = []
    for _ in range(repeats):
        _sync(x)
        start = time.perf_counter()
        forward_layers(layers, x, checkpoint=checkpoint).float().pow(2).mean().backward()
        _sync(x)
        times.append(time.perf_counter() - start)
    for layer in layers:
        layer.zero_grad(set_to_none=True)
    return statistics.median(times)


def peak_cuda_bytes(model: nn.Module | Sequence[nn.Module], x: Tensor, checkpoint: bool = False) -> int | None:
    """Peak CUDA memory allocated during one forward and backward pass (``None`` when ``x`` is not on a GPU)."""
    if x.device.type != "cuda":
        return None
    layers = _layers(model)
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    before = torch.cuda.memory_allocated(x.device)
    forward_layers(layers, x, checkpoint=checkpoint).float().pow(2).mean().backward()
    torch.cuda.synchronize(x.device)
    peak = torch.cuda.max_memory_allocated(x.device) - before
    for layer in layers:
        layer.zero_grad(set_to_none=True)
    return peak


def recompute_report(model: nn.Module | Sequence[nn.Module], x: Tensor, repeats: int = 3) -> list[dict]:
    """Saved bytes, time and (on CUDA) peak memory, without and with checkpointing: one dict per setting."""
    return [{"checkpoint": flag,
             "saved_bytes": saved_activation_bytes(model, x, checkpoint=flag),
             "seconds": time_forward_backward(model, x, checkpoint=flag, repeats=repeats),
             "peak_cuda_bytes": peak_cuda_bytes(model, x, checkpoint=flag)}
            for flag in (False, True)]


def mlp_stack(n_layers: int, width: int, hidden: int | None = None) -> nn.Sequential:
    """A deep stack of MLP layers ``Linear(width, hidden) -> GeLU -> Linear(hidden, width)`` (hidden = 4 width)."""
    if n_layers < 1 or width < 1:
        raise ValueError(f"n_layers and width must be >= 1, got {n_layers} and {width}")
    hidden = hidden or 4 * width
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
                           for _ in range(n_layers)])


def _sync(x: Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
