"""Generation with the KV cache vs without, and prefill vs decode tokens/s (chapter 11).

(a) ``llmcourse.models.generation.generate(model, prompt, n, top_k=1, use_cache=...)`` on the course GPT of
chapter 08, from a real-text prompt to the end of its 64-token context; with and without the cache the tokens
must be equal. Without the cache every step feeds the whole sequence again, so the saving grows with the
length; the course GPT's context stops at 64, so the same shape with a longer position table (random weights:
speed does not depend on what the weights learned) shows 128 and 256 tokens.
(b) Prefill vs decode on the course GPT: one forward pass over a 32-token prompt against 32 one-token decode
steps with the cache, per token, for 1 and 8 sequences.

Both contenders of a row take turns round by round; best and median rounds are reported.

Run: .venv/bin/python benchmarks/bench_ch11_kv_cache.py [--rounds 7] [--quick]
"""
from __future__ import annotations

import dataclasses

import torch

from bench_ch11_common import PROMPT_TEXT, alternate, course_gpt, machine_line, median, parse_args, prompt_ids, spread
from llmcourse.models.generation import generate
from llmcourse.models.gpt import GPT


@torch.no_grad()
def prefill(model: GPT, ids: torch.Tensor) -> None:
    model(ids, use_cache=True)


@torch.no_grad()
def decode(model: GPT, first: torch.Tensor, past: list, steps: int) -> None:
    token = first
    for _ in range(steps):
        logits, past = model(token, past_kv=past, use_cache=True)
        token = logits[:, -1:].argmax(-1)


def main() -> None:
    args = parse_args(__doc__, rounds=7)
    model, tokenizer = course_gpt()
    c = model.config
    longer = GPT(dataclasses.replace(c, context_length=64 if args.quick else 256)).eval()
    torch.manual_seed(0)
    print(machine_line(f"{args.rounds} rounds, alternating; greedy, batch 1"))
    print(f"course GPT {c.n_layers} layers x {c.d_model} wide, {c.n_heads} heads, vocabulary {c.vocab_size}, "
          f"context {c.context_length}, {model.num_parameters():,} parameters")
    print("\n| model | prompt + new tokens | with cache ms (best / median / worst) | without cache ms (best / median / "
          "worst) | with cache tokens/s (best) | without tokens/s (best) | without ÷ with, best | median |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [("course GPT", model, 8, 56), ("course GPT", model, 1, 63)]
    cases += [(f"same shape, random weights, context {longer.context_length}", longer, 8, n - 8) for n in
              ([64] if args.quick else [128, 256])]
    for name, net, prompt_len, new in cases:
        prompt = prompt_ids(tokenizer, PROMPT_TEXT, prompt_len)
        cached = generate(net, prompt, new, top_k=1, use_cache=True)
        assert torch.equal(cached, generate(net, prompt, new, top_k=1, use_cache=False)), "cache changed the tokens"
        times = alternate({"cache": lambda: generate(net, prompt, new, top_k=1, use_cache=True),
                           "none": lambda: generate(net, prompt, new, top_k=1, use_cache=False)}, args.rounds)
        a, b = times["cache"], times["none"]
        print(f"| {name} | {prompt_len} + {new} | {spread(a)} | {spread(b)} | {new / min(a):,.0f} | "
              f"{new / min(b):,.0f} | {min(b) / min(a):.2f} | {median(b) / median(a):.2f} |")

    print("\n| course GPT, sequences | prefill of 32 tokens ms (best / median) | 32 decode steps ms (best / median) | "
          "prefill tokens/s (best) | decode tokens/s (best) | prefill ÷ decode tokens/s |")
    print("|---|---|---|---|---|---|")
    for batch in (1, 8):
        ids = prompt_ids(tokenizer, PROMPT_TEXT, 64)[:, :32].repeat(batch, 1)
        ids[:, 0] = torch.arange(batch)  # rows differ
        with torch.no_grad():
            logits, past = model(ids, use_cache=True)
        first = logits[:, -1:].argmax(-1)
        times = alternate({"prefill": lambda: prefill(model, ids),
                           "decode": lambda: decode(model, first, past, 32)}, args.rounds * 3)
        a, b = times["prefill"], times["decode"]
        pre, dec = batch * 32 / min(a), batch * 32 / min(b)
        print(f"| {batch} | {min(a) * 1e3:.2f} / {median(a) * 1e3:.2f} | {min(b) * 1e3:.2f} / {median(b) * 1e3:.2f} | "
              f"{pre:,.0f} | {dec:,.0f} | {pre / dec:.1f} |")


if __name__ == "__main__":
    main()
