"""Where generation time goes: prefill vs decode, compute-bound vs memory-bound (chapter 11).

Generating text has two phases. **Prefill** reads the whole prompt in one forward pass: every weight matrix
multiplies a (prompt_len, d) block of activations, so each weight read from memory is used ``prompt_len``
times. **Decode** feeds one new token per step: every weight is read to be used once. The ratio of
arithmetic to memory traffic, the *arithmetic intensity* (FLOPs per byte), decides which limit a step hits:
below the machine's balance point (peak FLOP/s divided by memory bandwidth) the step waits on memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn


def matmul_flops(m: int, k: int, n: int) -> int:
    """Floating-point operations of (m, k) @ (k, n): one multiply and one add per term, 2·m·k·n."""
    return 2 * m * k * n


def matmul_bytes(m: int, k: int, n: int, bytes_per_value: int = 4) -> int:
    """Bytes moved by (m, k) @ (k, n) when each operand is read once and the result written once."""
    return bytes_per_value * (m * k + k * n + m * n)


def arithmetic_intensity(m: int, k: int, n: int, bytes_per_value: int = 4) -> float:
    """FLOPs per byte of (m, k) @ (k, n): about m for m tokens against a large (k, n) weight matrix."""
    return matmul_flops(m, k, n) / matmul_bytes(m, k, n, bytes_per_value)


@dataclass(frozen=True)
class Accelerator:
    """Peak numbers of a chip, as its maker's specification states them (not measured here)."""

    name: str
    peak_flops: float          # FLOP/s
    bandwidth: float           # bytes/s of its main memory
    source: str

    @property
    def balance(self) -> float:
        """FLOPs per byte at which compute and memory take equally long: the roofline's ridge point."""
        return self.peak_flops / self.bandwidth

    def attainable(self, intensity: float) -> float:
        """The roofline: min(peak, intensity · bandwidth) FLOP/s."""
        return min(self.peak_flops, intensity * self.bandwidth)


H100_SXM = Accelerator("H100 SXM (bf16 dense)", 989e12, 3.35e12,
                       "NVIDIA H100 Tensor Core GPU datasheet: 989 TFLOPS BF16 dense, 3.35 TB/s HBM3")


def decode_step_bytes(n_params: int, bytes_per_value: int, kv_bytes: int = 0) -> int:
    """Bytes a decode step must read at least: every weight once, plus the KV cache so far."""
    return n_params * bytes_per_value + kv_bytes


@torch.no_grad()
def time_prefill_and_decode(model: nn.Module, prompt_len: int, new_tokens: int, batch: int = 1,
                            repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Seconds (best of ``repeats``) for one prefill of ``prompt_len`` tokens and for ``new_tokens`` decode steps,
    with per-token times: the prefill handles all prompt tokens in one pass, each decode step one token per row."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.vocab_size, (batch, prompt_len), generator=gen)
    model.eval()
    best_prefill, best_decode = float("inf"), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        logits, past = model(ids, use_cache=True)
        prefill = time.perf_counter() - start
        token = logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(new_tokens):
            logits, past = model(token, past_kv=past, use_cache=True)
            token = logits[:, -1].argmax(-1, keepdim=True)
        decode = time.perf_counter() - start
        best_prefill, best_decode = min(best_prefill, prefill), min(best_decode, decode)
    return {"prefill_s": best_prefill, "decode_s": best_decode,
            "prefill_per_token_s": best_prefill / (batch * prompt_len),
            "decode_per_token_s": best_decode / (batch * new_tokens)}


__all__ = ["Accelerator", "H100_SXM", "arithmetic_intensity", "decode_step_bytes", "matmul_bytes", "matmul_flops",
           "time_prefill_and_decode"]
