"""Back-of-the-envelope numbers for training: FLOPs, memory, throughput, MFU (chapter 08).

Before a run starts we can already estimate what it will cost:

* **compute** -- training a model of N parameters on D tokens takes about
  ``6 * N * D`` floating-point operations (FLOPs): 2 per parameter per token for the
  forward pass (a multiply and an add) and twice that for the backward pass
  (gradients with respect to the inputs and to the weights). Attention adds
  ``12 * n_layers * context_length * d_model`` per token (PaLM, appendix B).
* **memory** -- parameters, gradients and optimizer states take a fixed number of
  bytes per parameter (16 for Adam with mixed precision, the ZeRO paper's "16 Psi");
  activations grow with batch size and sequence length (Korthikanti et al., 2022).
* **utilisation** -- model FLOPs utilisation (MFU) is the FLOPs the model needs per
  second divided by the hardware's peak: how much of the machine the run really uses.
"""
from __future__ import annotations

import time

import torch

# --------------------------------------------------------------------------- compute


def training_flops(n_params: int, n_tokens: int) -> float:
    """Total training FLOPs ~ 6 * N * D (forward 2ND + backward 4ND)."""
    if n_params < 0 or n_tokens < 0:
        raise ValueError(f"n_params and n_tokens must be >= 0, got {n_params} and {n_tokens}")
    return 6.0 * n_params * n_tokens


def flops_per_token(n_params: int, n_layers: int, context_length: int, d_model: int,
                    include_attention: bool = True) -> float:
    """Training FLOPs per token: ``6 N + 12 L T d`` (PaLM, appendix B).

    ``n_params`` should count the weights that multiply activations (the matrices
    of the blocks and the output layer; a tied embedding counts once, as the
    output layer). The second term is the attention scores ``q k^T`` and the
    weighted sum of the values: ``2 * 2 * T * d`` FLOPs per token per layer
    forward, three times that with the backward pass. It counts the full T x T
    score matrix, as most kernels compute it even with a causal mask.
    """
    for name, value in (("n_params", n_params), ("n_layers", n_layers), ("context_length", context_length),
                        ("d_model", d_model)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    attention = 12.0 * n_layers * context_length * d_model if include_attention else 0.0
    return 6.0 * n_params + attention


def tokens_per_second(n_tokens: int, seconds: float) -> float:
    """Throughput: tokens processed per second of wall-clock time."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    return n_tokens / seconds


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the fraction of the hardware's peak FLOP/s that the model's math uses (0 to 1)."""
    if peak_flops is None or peak_flops <= 0:
        raise ValueError(f"peak_flops must be a positive number of FLOP/s, got {peak_flops!r} (peak_flops(device) "
                         "returns None for hardware it does not know; measure_matmul_flops() gives an estimate)")
    return tokens_per_second * flops_per_token / peak_flops


# Dense 16-bit (bf16/fp16) tensor-core peaks from the vendors' data sheets, in FLOP/s.
# Checked in order: the first name found in the device name wins.
PEAK_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),       # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("V100", 125e12),       # fp16 only (no bf16)
    ("T4", 65e12),          # fp16 only
]


def peak_flops(device: str | torch.device | None = None) -> float | None:
    """The peak dense bf16/fp16 FLOP/s of a known GPU, or None (CPU or an unknown GPU).

    ``device`` may be a GPU name (``"NVIDIA H100 80GB HBM3"``), a torch device or
    ``None`` (the current CUDA device if there is one).
    """
    name = None
    if isinstance(device, str) and device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        name = device
    else:
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type != "cuda" or not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS:
        if key.lower() in name.lower():
            return flops
    return None


def measure_matmul_flops(n: int = 512, repeats: int = 10, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu", min_seconds: float = 0.5) -> float:
    """The FLOP/s this machine reaches on an ``n x n`` matrix product: a practical peak for CPUs.

    One product costs ``2 n^3`` FLOPs; the best of at least ``repeats`` timings is used, and timing goes
    on for at least ``min_seconds`` so that a moment when another program holds the cores is not
    taken for the peak.
    """
    device = torch.device(device)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm up
    best = float("inf")
    count, began = 0, time.perf_counter()
    while count < repeats or time.perf_counter() - began < min_seconds:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
        count += 1
    return 2.0 * n ** 3 / best


# --------------------------------------------------------------------------- memory

# Bytes per parameter: (parameters, gradients, optimizer states) -- ZeRO paper, section 3.1.
_STATE_COPIES = {"adamw": 2, "adam": 2, "sgd_momentum": 1, "sgd": 0}  # fp32 tensors per parameter


def memory_breakdown(n_params: int, precision: str = "fp32", optimizer: str = "adamw",
                     activations_bytes: int = 0) -> dict[str, int]:
    """Training memory in bytes: parameters, gradients, optimizer states, activations and their total.

    ``precision``:

    * ``"fp32"`` -- everything in 4-byte floats: 4 bytes of parameters and 4 of
      gradients per parameter; Adam(W) keeps two more (m and v): 16 bytes in all;
    * ``"mixed"`` -- the forward and backward run in 16-bit (2-byte parameters and
      gradients) while the optimizer keeps a 4-byte master copy of the weights
      next to its states: 2 + 2 + (4 + 4 + 4) = 16 bytes per parameter for Adam,
      the "16 Psi" of the ZeRO paper. The master copy is counted in
      ``optimizer_states``.

    ``optimizer``: ``"adamw"`` / ``"adam"`` (two states), ``"sgd_momentum"`` (one),
    ``"sgd"`` (none). ``activations_bytes`` (e.g. from :func:`activation_bytes`) is
    added as is.
    """
    if precision not in ("fp32", "mixed"):
        raise ValueError(f"precision must be 'fp32' or 'mixed', got {precision!r}")
    if optimizer not in _STATE_COPIES:
        raise ValueError(f"optimizer must be one of {', '.join(_STATE_COPIES)}, got {optimizer!r}")
    if n_params < 0 or activations_bytes < 0:
        raise ValueError(f"n_params and activations_bytes must be >= 0, got {n_params} and {activations_bytes}")
    weight_bytes = 4 if precision == "fp32" else 2
    states = _STATE_COPIES[optimizer] + (1 if precision == "mixed" else 0)  # + the fp32 master weights
    parts = {
        "parameters": weight_bytes * n_params,
        "gradients": weight_bytes * n_params,
        "optimizer_states": 4 * states * n_params,
        "activations": int(activations_bytes),
    }
    parts["total"] = sum(parts.values())
    return parts


def activation_bytes(batch: int, seq: int, d_model: int, n_layers: int, n_heads: int, bytes_per_value: int = 2,
                     recompute: bool | str = False, dropout: bool = True) -> int:
    """Bytes of activations a Transformer's layers keep for the backward pass (Korthikanti et al., 2022).

    Per layer, with s = seq, b = batch, h = d_model, a = n_heads and 2-byte values,
    the paper's count is ``s b h (34 + 5 a s / h)`` bytes. It is made of
    ``16 s b h + 2 a s^2 b`` stored values (inputs of the layer norms, of the q/k/v,
    output and MLP projections, q, k, v, the GELU input, the softmax output and its
    dropout output) plus ``2 s b h + a s^2 b`` one-byte dropout masks. Here
    ``bytes_per_value`` sets the size of a value and ``dropout=False`` drops the
    masks (and the dropout output of the attention weights).

    ``recompute``: ``False`` keeps everything; ``True`` or ``"full"`` keeps only each
    layer's input (``s b h`` values) and recomputes the rest in the backward pass;
    ``"selective"`` recomputes only the attention's ``s x s`` parts (``34 s b h`` bytes
    per layer with 2-byte values). Embeddings and the output layer are not counted.
    """
    for name, value in (("batch", batch), ("seq", seq), ("d_model", d_model), ("n_layers", n_layers),
                        ("n_heads", n_heads), ("bytes_per_value", bytes_per_value)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if recompute not in (False, True, "full", "selective"):
        raise ValueError(f"recompute must be False, True/'full' or 'selective', got {recompute!r}")
    sbh, as2b = seq * batch * d_model, n_heads * seq * seq * batch
    if recompute is True or recompute == "full":
        per_layer = bytes_per_value * sbh
    else:
        values = 16 * sbh + (2 * as2b if dropout else as2b)
        masks = 2 * sbh + as2b if dropout else 0
        if recompute == "selective":
            values, masks = 16 * sbh, (2 * sbh if dropout else 0)
        per_layer = bytes_per_value * values + masks
    return n_layers * per_layer


__all__ = [
    "training_flops", "flops_per_token", "tokens_per_second", "mfu", "PEAK_FLOPS", "peak_flops",
    "measure_matmul_flops", "memory_breakdown", "activation_bytes",
]
