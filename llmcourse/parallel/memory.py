"""Chapter 10: how much memory training needs per device, with mixed precision and ZeRO.

The model states of a model with ``n_params`` (the ZeRO paper's Psi) parameters:

* fp32 training with Adam: parameters 4, gradients 4, optimizer states 8 bytes per parameter;
* mixed precision with Adam: fp16 parameters 2, fp16 gradients 2, and K = 12 bytes of fp32
  optimizer states (a master copy of the weights, Adam's m and v) — (2 + 2 + K) Psi = 16 Psi.

ZeRO (Rajbhandari et al. 2020) splits these across the ``N`` data-parallel devices:
stage 1 splits the optimizer states, stage 2 also the gradients, stage 3 also the
parameters. Sizes are in bytes; the paper's GB are 10**9 bytes.
"""
from __future__ import annotations

import math

from llmcourse.pretraining.estimates import memory_breakdown

MODEL_SIZES: dict[str, float] = {"7B": 7e9, "13B": 13e9, "70B": 70e9}
"""Named model sizes (nominal parameter counts)."""

MODEL_SHAPES: dict[str, dict[str, int]] = {
    "7B": {"d_model": 4096, "n_layers": 32, "n_heads": 32},
    "13B": {"d_model": 5120, "n_layers": 40, "n_heads": 40},
    "70B": {"d_model": 8192, "n_layers": 80, "n_heads": 64},
}
"""Llama-2-like shapes for the named sizes, for activation estimates with
:func:`llmcourse.pretraining.estimates.activation_bytes`."""

GB = 1e9

_PARTS = ("parameters", "gradients", "optimizer_states")


def _check_count(name: str, value: float, minimum: float = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum:g}, got {value!r}.")


def resolve_size(n_params: float | str) -> float:
    """A parameter count from a number or a name in :data:`MODEL_SIZES` (``"7B"``)."""
    if isinstance(n_params, str):
        if n_params not in MODEL_SIZES:
            raise ValueError(f"unknown model size {n_params!r}; known sizes: {sorted(MODEL_SIZES)}.")
        return MODEL_SIZES[n_params]
    _check_count("n_params", n_params)
    return float(n_params)


def model_memory(n_params: float | str, precision: str = "mixed", optimizer: str = "adamw") -> dict[str, float]:
    """Bytes of parameters, gradients and optimizer states on one device without any splitting.

    ``precision`` is ``"fp32"`` or ``"mixed"`` (16-bit weights and gradients, fp32 optimizer states
    including a master copy of the weights); ``optimizer`` is ``"sgd"``, ``"sgd_momentum"`` or ``"adamw"``.
    The numbers come from :func:`llmcourse.pretraining.estimates.memory_breakdown` (chapter 08).
    """
    parts = memory_breakdown(resolve_size(n_params), precision, optimizer)
    return {key: parts[key] for key in _PARTS}


def zero_memory_breakdown(n_params: float | str, world_size: int, stage: int, k: float = 12) -> dict[str, float]:
    """Bytes of fp16 parameters, fp16 gradients and K-byte optimizer states per device under ZeRO ``stage``."""
    psi = resolve_size(n_params)
    _check_count("world_size", world_size)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0 (plain data parallelism), 1, 2 or 3, got {stage!r}.")
    n = world_size
    return {
        "parameters": 2 * psi / (n if stage >= 3 else 1),
        "gradients": 2 * psi / (n if stage >= 2 else 1),
        "optimizer_states": k * psi / (n if stage >= 1 else 1),
    }


def zero_memory_per_device(n_params: float | str, world_size: int, stage: int, k: float = 12) -> float:
    """Model-state bytes per device: stage 0 (2+2+K)Psi, 1: 4Psi + K Psi/N, 2: 2Psi + (2+K)Psi/N, 3: (2+2+K)Psi/N."""
    return sum(zero_memory_breakdown(n_params, world_size, stage, k).values())


def gpus_needed(n_params: float | str, stage: int, gpu_memory: float = 80 * GB, k: float = 12,
                activations: float = 0.0) -> int | None:
    """The fewest devices whose memory holds the model states (plus ``activations`` bytes per device).

    Returns ``None`` when no number of devices is enough: the part ZeRO ``stage`` does not split
    is already larger than one device.
    """
    _check_count("gpu_memory", gpu_memory, minimum=1e-9)
    whole = zero_memory_breakdown(n_params, 1, 0, k)
    split = zero_memory_breakdown(n_params, 2, stage, k)
    fixed = activations + sum(v for key, v in split.items() if v == whole[key])  # what every device keeps
    shared = sum(whole.values()) + activations - fixed  # what is divided by the number of devices
    if fixed + shared <= gpu_memory:
        return 1
    if fixed >= gpu_memory:
        return None
    n = max(1, math.ceil(shared / (gpu_memory - fixed)))
    while n > 1 and fixed + shared / (n - 1) <= gpu_memory:  # guard against rounding up too far
        n -= 1
    return n
