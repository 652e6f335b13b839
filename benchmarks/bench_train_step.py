"""Training-step speed (chapter 08): llmcourse's Trainer vs a plain PyTorch GPT loop of the same shape.

The peer is the simplest fast GPT one would write by hand (nanoGPT's layout: one
fused q/k/v matrix, ``F.scaled_dot_product_attention``, ``nn.LayerNorm``), with
the same optimizer (AdamW, decay on matrices only), gradient clipping, learning
rate schedule, batch size and context. Both are timed alternately in one run;
the ratio is plain time / llmcourse time (>= 1.0: ours is not slower). On a
shared machine the best (minimum) block is the fairer number: load only ever
adds time; the median is printed too.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_step.py [--rounds 5] [--steps 10]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.pretraining.schedules import warmup_cosine_schedule
from llmcourse.pretraining.trainer import TrainConfig, Trainer, configure_optimizer

# --------------------------------------------------------------------------- the plain peer


class PlainBlock(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc_out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, context: int, d: int, n_layers: int, n_heads: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(PlainBlock(d, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# --------------------------------------------------------------------------- timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = TrainConfig(vocab_size=96, context_length=64, d_model=128, n_layers=4, n_heads=4, batch_size=12,
                      max_steps=10**6, warmup_steps=10, lr=1e-3, weight_decay=0.1, grad_clip=1.0, progress=False,
                      cpu=True)
    ids = torch.randint(0, cfg.vocab_size, (200_000,), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(cfg, ids)

    plain = PlainGPT(cfg.vocab_size, cfg.context_length, cfg.d_model, cfg.n_layers, cfg.n_heads)
    opt = configure_optimizer(plain, cfg.lr, cfg.weight_decay, cfg.betas)
    sched = warmup_cosine_schedule(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, min_lr=cfg.min_lr)
    gen = torch.Generator().manual_seed(1)

    def plain_step() -> float:
        starts = torch.randint(0, len(ids) - cfg.context_length - 1, (cfg.batch_size,), generator=gen)
        chunk = torch.stack([ids[s:s + cfg.context_length + 1] for s in starts.tolist()])
        x, y = chunk[:, :-1], chunk[:, 1:]
        loss = F.cross_entropy(plain(x).flatten(0, 1), y.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(plain.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def timed(step) -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - start) / args.steps * 1000

    for _ in range(3):  # warm-up
        trainer.train_step(), plain_step()
    ours, peer = [], []
    for _ in range(args.rounds):
        ours.append(timed(trainer.train_step))
        peer.append(timed(plain_step))
    n_ours = trainer.unwrapped_model.num_parameters()
    n_plain = sum(p.numel() for p in plain.parameters())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}"
          f", load average {load:.2f}; GPT {cfg.n_layers} layers x {cfg.d_model} wide, {cfg.n_heads} heads, context "
          f"{cfg.context_length}, batch {cfg.batch_size}; {n_ours:,} parameters (plain: {n_plain:,}); "
          f"{args.rounds} rounds x {args.steps} steps, alternating")
    best_ours, best_peer = min(ours), min(peer)
    med_ours, med_peer = statistics.median(ours), statistics.median(peer)
    tokens = cfg.batch_size * cfg.context_length
    print("| loop | ms / step (best) | ms / step (median) | tokens/s (best) | plain ÷ this (best) | "
          "plain ÷ this (median) |")
    print("|---|---|---|---|---|---|")
    print(f"| llmcourse `Trainer.train_step` (GPT, accelerate) | {best_ours:.1f} | {med_ours:.1f} | "
          f"{tokens / best_ours * 1000:,.0f} | {best_peer / best_ours:.2f} | {med_peer / med_ours:.2f} |")
    print(f"| plain PyTorch GPT loop | {best_peer:.1f} | {med_peer:.1f} | {tokens / best_peer * 1000:,.0f} | "
          f"1.00 | 1.00 |")

if __name__ == "__main__":
    main()
