"""Batched vs one-at-a-time generation, and continuous vs static batching on one request stream (chapter 11).

(a) ``batching.generate_batch(model, prompts, n)`` (left padding, masks, one KV cache for all rows) against
``[batching.generate_alone(model, p, n) for p in prompts]`` on the course GPT of chapter 08, greedy, real
prompts; the tokens must be equal. Ratio = one-at-a-time time / batched time (the throughput gain).

(b) Static vs continuous batching. Without a scheduler that runs real requests, this part measures the cost
of one batched decode step of the course GPT (``batching.masked_forward`` over a 32-token cache) for batch
sizes 1 to 16, fits ``fixed + per_row * batch`` by least squares, and plays one seeded request stream through
``batching.simulate`` with that cost under both policies. The throughput and latencies are simulated from
measured step times, not measured end to end.

Run: .venv/bin/python benchmarks/bench_ch11_batching.py [--rounds 7] [--quick]
"""
from __future__ import annotations

import torch

from bench_ch11_common import alternate, course_gpt, machine_line, median, parse_args, spread
from llmcourse.inference import batching

TEXTS = ["The", "A function returns the value of", "If the file is", "This module provides", "Return a new",
         "The default value is", "Raise an exception when", "For example, the list", "Each thread has",
         "The following methods", "When the object is", "This function takes", "An iterator over", "Note that the",
         "Create a new socket", "The result is"]


@torch.no_grad()
def step_seconds(model, batch: int, past_len: int, rounds: int) -> float:
    """Best time of one decode step over ``batch`` rows with ``past_len`` cached tokens (masked_forward)."""
    ids = torch.randint(1, model.vocab_size, (batch, past_len), generator=torch.Generator().manual_seed(batch))
    mask = torch.ones(batch, past_len, dtype=torch.bool)
    logits, past = batching.masked_forward(model, ids, mask)
    token = logits[:, -1].argmax(-1)[:, None]
    mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.bool)], dim=1)
    times = alternate({"step": lambda: batching.masked_forward(model, token, mask, past)}, rounds, warmup=3)
    return min(times["step"])


def main() -> None:
    args = parse_args(__doc__, rounds=7)
    model, tokenizer = course_gpt()
    c = model.config
    print(machine_line(f"{args.rounds} rounds, alternating; greedy"))
    print(f"course GPT {c.n_layers} layers x {c.d_model} wide, {c.n_heads} heads, vocabulary {c.vocab_size}, "
          f"context {c.context_length}, {model.num_parameters():,} parameters")

    print("\n| prompts x new tokens | one at a time ms (best / median / worst) | one batch ms (best / median / worst) "
          "| one at a time tokens/s (best) | batch tokens/s (best) | one at a time ÷ batch, best | median |")
    print("|---|---|---|---|---|---|---|")
    all_prompts = [tokenizer.encode(t) for t in TEXTS]
    new = 30
    for n in (4, 16) if args.quick else (1, 4, 8, 16):
        prompts = all_prompts[:n]
        assert batching.generate_batch(model, prompts, new) == [batching.generate_alone(model, p, new)
                                                                for p in prompts], "batched tokens differ"
        times = alternate({"alone": lambda: [batching.generate_alone(model, p, new) for p in prompts],
                           "batch": lambda: batching.generate_batch(model, prompts, new)}, args.rounds)
        a, b = times["alone"], times["batch"]
        print(f"| {n} x {new} | {spread(a)} | {spread(b)} | {n * new / min(a):,.0f} | {n * new / min(b):,.0f} | "
              f"{min(a) / min(b):.2f} | {median(a) / median(b):.2f} |")

    sizes = [1, 2, 4, 8, 16]
    measured = [step_seconds(model, b, 32, args.rounds * 5) for b in sizes]
    x = torch.tensor([[1.0, b] for b in sizes], dtype=torch.float64)
    fixed, per_row = torch.linalg.lstsq(x, torch.tensor(measured, dtype=torch.float64)[:, None]).solution[:, 0].tolist()
    print("\n| decode step, batch | " + " | ".join(str(b) for b in sizes) + " | fit: fixed + per row |")
    print("|---|" + "---|" * len(sizes) + "---|")
    print("| ms (best) | " + " | ".join(f"{t * 1e3:.2f}" for t in measured) +
          f" | {fixed * 1e3:.2f} + {per_row * 1e3:.3f} × batch |")

    max_batch, n_requests, shortest, longest = 16, 300, 4, 60
    mean_len = (shortest + longest) / 2
    capacity = max_batch / (fixed + per_row * max_batch) / mean_len  # requests/s with every slot always busy
    print(f"\nstream: {n_requests} requests, answers {shortest}-{longest} tokens (uniform), exponential gaps, "
          f"seed 0; at most {max_batch} in a batch; a full continuous batch serves {capacity:.0f} requests/s")
    print("| arrival rate | policy | tokens/s | mean latency s | 95th percentile s | steps | continuous ÷ static "
          "throughput | static ÷ continuous mean latency |")
    print("|---|---|---|---|---|---|---|---|")
    for load in (0.5, 1.0, 2.0):
        stream = batching.request_stream(n_requests, rate=load * capacity, shortest=shortest, longest=longest,
                                         seed=0)
        res = {p: batching.simulate(stream, max_batch, p, (fixed, per_row)) for p in ("static", "continuous")}
        for policy, r in res.items():
            lat = sorted(r["latency"])
            gain = (f"{res['continuous']['throughput'] / res['static']['throughput']:.2f} | "
                    f"{res['static']['mean_latency'] / res['continuous']['mean_latency']:.2f}"
                    if policy == "continuous" else "— | —")
            print(f"| {load * capacity:.0f}/s ({load:.1f}× capacity) | {policy} | {r['throughput']:,.0f} | "
                  f"{r['mean_latency']:.3f} | {lat[int(0.95 * len(lat))]:.3f} | {r['steps']} | {gain} |")


if __name__ == "__main__":
    main()
