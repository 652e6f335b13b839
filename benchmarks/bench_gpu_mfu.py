"""GPU training throughput and MFU (chapter 08): GPT-2-small-sized steps through the Trainer, bf16.

MFU (model FLOPs utilisation) = tokens/s x training FLOPs per token / the GPU's
peak bf16 FLOP/s (:mod:`llmcourse.pretraining.estimates`). Needs a CUDA GPU; exits with a
message otherwise.

Run: .venv/bin/python benchmarks/bench_gpu_mfu.py [--batch 16] [--steps 20] [--compile]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from llmcourse.pretraining.estimates import flops_per_token, mfu, peak_flops
from llmcourse.models.gpt import GPT
from llmcourse.pretraining.trainer import TrainConfig, Trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "no"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu_mfu needs a CUDA GPU and none is visible: nothing to measure here.")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    # GPT-2 small, with the vocabulary padded to a multiple of 64 (50304) as nanoGPT does for speed
    cfg = TrainConfig(vocab_size=50304, context_length=args.context, d_model=768, n_layers=12, n_heads=12,
                      batch_size=args.batch, max_steps=10**6, warmup_steps=10, lr=6e-4, min_lr=6e-5,
                      mixed_precision=args.precision, progress=False)
    ids = torch.randint(0, cfg.vocab_size, (2_000_000,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = GPT(cfg.gpt_config())
    n_params = model.num_parameters() - model.wpe.table.weight.numel()  # matrices that multiply activations
    if args.compile:
        model = torch.compile(model)
    trainer = Trainer(cfg, ids, model=model)
    torch.use_deterministic_algorithms(False)  # the Trainer's seeding asks for deterministic kernels; speed here
    for _ in range(args.warmup):
        trainer.train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = trainer.train_step()  # .item() inside: every step waits for the GPU
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_per_s = cfg.tokens_per_step * args.steps / seconds
    fpt = flops_per_token(n_params, cfg.n_layers, cfg.context_length, cfg.d_model)
    peak = peak_flops()
    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}, precision {trainer.accelerator.mixed_precision}, "
          f"compile {args.compile}; GPT-2 small shape ({n_params / 1e6:.0f}M weights in matrices), context "
          f"{cfg.context_length}, batch {cfg.batch_size}; {args.steps} timed steps after {args.warmup}")
    print("| ms / step | tokens/s | FLOPs / token | peak bf16 FLOP/s | MFU | peak memory | last loss |")
    print("|---|---|---|---|---|---|---|")
    utilisation = f"{mfu(tokens_per_s, fpt, peak):.1%}" if peak else "unknown GPU"
    print(f"| {seconds / args.steps * 1000:.0f} | {tokens_per_s:,.0f} | {fpt / 1e6:.0f} M | "
          f"{(peak or 0) / 1e12:.0f} T | {utilisation} | {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB | "
          f"{loss:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
