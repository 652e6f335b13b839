"""Pretraining quality (chapter 08): how close does the Trainer get to the best possible loss, and how fast?

(a) synthetic: the default Markov source, whose entropy rate (the lowest loss any
    model can reach) is known exactly. Goal: validation loss within 0.05 nats of it
    in at most 2 minutes on a CPU.
(b) real text: Python's documentation, one token per character, with nanoGPT's CPU
    configuration for Shakespeare (4 layers, 4 heads, 128 wide, context 64, batch 12,
    2,000 iterations, lr 1e-3 decaying to 1e-4, no dropout): validation loss and time.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pretrain_quality.py [synthetic|text|both]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from llmcourse.pretraining.data import char_tokenize, real_text_corpus, split_ids
from llmcourse.pretraining.synthetic import default_source
from llmcourse.pretraining.trainer import TrainConfig, Trainer


def conditions() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"{platform.processor() or platform.machine()}, load average {load:.2f}")


def synthetic() -> None:
    source = default_source()
    # context 64: in a window only the first position lacks part of its context, so the best reachable mean
    # loss (optimal_loss) is within 0.02 nats of the entropy rate; at context 32 it is 0.04 above it
    cfg = TrainConfig(vocab_size=source.vocab_size, context_length=64, d_model=64, n_layers=2, n_heads=4,
                      batch_size=16, max_steps=1000, lr=6e-3, min_lr=6e-4, warmup_steps=50, weight_decay=0.1,
                      eval_interval=200, eval_steps=40, progress=False, cpu=True, seed=0)
    train, val = source.sample(400_000, seed=0), source.sample(60_000, seed=1)
    start = time.perf_counter()
    trainer = Trainer(cfg, train, val)
    history = trainer.fit()
    seconds = time.perf_counter() - start
    h, best = source.entropy_rate(), source.optimal_loss(cfg.context_length)
    final = history.val_loss[-1]
    print(f"(a) synthetic {source}: {cfg.max_steps} steps, {trainer.unwrapped_model.num_parameters():,} parameters, "
          f"{seconds:.0f} s")
    print("| step | validation loss | minus entropy rate | minus best possible for this context |")
    print("|---|---|---|---|")
    for step, loss in zip(history.val_step, history.val_loss):
        print(f"| {step} | {loss:.4f} | {loss - h:+.4f} | {loss - best:+.4f} |")
    print(f"entropy rate {h:.4f} nats/token; best possible mean loss over windows of {cfg.context_length} tokens "
          f"(the first {source.order - 1} position(s) see less than a full context) {best:.4f}; final gap to the "
          f"entropy rate "
          f"{final - h:+.4f} ({'goal met' if final - h <= 0.05 and seconds <= 120 else 'goal NOT met'})")


def text() -> None:
    cfg = TrainConfig(context_length=64, d_model=128, n_layers=4, n_heads=4, dropout=0.0, batch_size=12,
                      max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.1, betas=(0.9, 0.99),
                      grad_clip=1.0, eval_interval=500, eval_steps=200, progress=False, cpu=True, seed=1337)
    tokenizer, ids = char_tokenize(real_text_corpus(1_000_000))
    train, val = split_ids(ids, 0.1)
    start = time.perf_counter()
    trainer = Trainer(cfg, train, val, tokenizer=tokenizer)
    history = trainer.fit()
    seconds = time.perf_counter() - start
    tokens = cfg.tokens_per_step * cfg.max_steps
    print(f"(b) python-docs, characters (vocabulary {tokenizer.vocab_size}, {len(train):,} training tokens): "
          f"{trainer.unwrapped_model.num_parameters():,} parameters, {cfg.max_steps} steps, {tokens:,} tokens seen, "
          f"{seconds:.0f} s ({tokens / seconds:,.0f} tokens/s)")
    print("| step | train loss (mean of last 50 steps) | validation loss |")
    print("|---|---|---|")
    for step, loss in zip(history.val_step, history.val_loss):
        recent = history.train_loss[max(0, step - 50):step]
        print(f"| {step} | {sum(recent) / len(recent):.4f} | {loss:.4f} |")
    from llmcourse.models.generation import generate

    prompt = torch.tensor(tokenizer.encode("The "))
    sample = generate(trainer.unwrapped_model.eval(), prompt, 60, temperature=0.8,
                      generator=torch.Generator().manual_seed(0))
    print(f"sample: {tokenizer.decode(sample.tolist())!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="both", choices=["synthetic", "text", "both"],
                        help="which corpus to train on (default: both)")
    which = parser.parse_args().which
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(conditions())
    if which in ("synthetic", "both"):
        synthetic()
    if which in ("text", "both"):
        text()


if __name__ == "__main__":
    main()
