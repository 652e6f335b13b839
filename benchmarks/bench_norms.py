"""LayerNorm vs RMSNorm speed (chapter 06): ours (plain PyTorch ops) and PyTorch's fused kernels.

Run: .venv/bin/python benchmarks/bench_norms.py   (prints a Markdown table; median ms per call)
"""
from __future__ import annotations

import platform

import torch

from llmcourse.transformer.norms import benchmark_norms


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| tokens x d_model | pass | LN ours | RMS ours | RMS/LN ours | LN torch | RMS torch | RMS/LN torch |")
    print("|---|---|---|---|---|---|---|---|")
    for n, d in [(4096, 768), (4096, 4096), (512, 1024)]:
        for backward in (False, True):
            r = benchmark_norms(n, d, repeats=30, backward=backward)
            print(f"| {n} x {d} | {'fwd+bwd' if backward else 'fwd'} | {r['layernorm_ours']:.2f} | "
                  f"{r['rmsnorm_ours']:.2f} | {r['rmsnorm_ours'] / r['layernorm_ours']:.2f} | "
                  f"{r['layernorm_torch']:.2f} | {r['rmsnorm_torch']:.2f} | "
                  f"{r['rmsnorm_torch'] / r['layernorm_torch']:.2f} |")


if __name__ == "__main__":
    main()
