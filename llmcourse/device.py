"""Choosing where tensors live (chapter 00).

The whole course asks this one module for a device. It defers to
``accelerate`` so the same notebook uses a CUDA GPU, an Apple GPU (MPS) or the
CPU without edits. Set ``LLMCOURSE_DEVICE=cpu`` to force the CPU.
"""
from __future__ import annotations

import os

import torch


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then MPS, then CPU.

    ``prefer`` (or the ``LLMCOURSE_DEVICE`` environment variable) forces one,
    e.g. ``"cpu"``; asking for a device that is not there raises a clear error.
    """
    wanted = prefer or os.environ.get("LLMCOURSE_DEVICE") or None
    if wanted is not None:
        device = torch.device(wanted)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("A CUDA device was requested but PyTorch sees no CUDA GPU on this machine.")
        if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeError("An MPS (Apple GPU) device was requested but it is not available here.")
        return device
    from accelerate import PartialState

    return PartialState().device


def describe_device(device: torch.device | None = None) -> str:
    """A one-line description of a device, e.g. ``'cuda:0 (NVIDIA H100, 80 GiB)'``."""
    device = device or get_device()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"
