"""Batched vs one-at-a-time generation, and continuous vs static batching on one request stream (chapter 11).

(a) ``batching.generate_batch(model, prompts, n)`` (left padding, masks, one KV cache for all rows) against
``[batching.generate_alone(model, p, n) for p in prompts]`` on the course GPT of chapter 08, greedy, real
prompts; the tokens must be equal. Ratio = one-at-a-time time / batched time (the throughput gain).

(b) Static vs continuous batching, measured: ``scheduler.serve(model, requests, 16, policy)`` serves one seeded
stream of real prompts (arrival times and answer lengths from ``batching.request_stream``) with the course GPT
under both policies; every step really runs (prefill of the newly admitted prompts, one batched decode step)
and advances a virtual clock by its measured duration, so latencies include queueing. Both policies must give
every request the same tokens. Rounds alternate the policies; the best round (highest throughput) is shown,
with the median throughput. A slow step (another job taking the CPU) delays every later request on the
virtual clock, so latencies from a busy machine are noisy; the "all at once" row (every request waiting at
time 0) measures pure throughput.

(c) The same, simulated: the scheduler's measured step durations are fitted as ``fixed + per_row * batch``
(``scheduler.fit_step_time``) and the same arrivals and answer lengths are played through ``batching.simulate``
with that cost, as the lesson does, to show how far the cost model is from the real run. For comparison, one
batched decode step of the model alone (``batching.masked_forward`` over a 32-token cache) is timed for batch
sizes 1 to 16.

Run: .venv/bin/python benchmarks/bench_ch11_batching.py [--rounds 7] [--quick]
"""
from __future__ import annotations

import math

import torch

from bench_ch11_common import alternate, course_gpt, machine_line, median, parse_args, spread
from llmcourse.inference import batching, scheduler

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

    max_batch, n_requests, shortest, longest = 16, (24 if args.quick else 300), 4, 56
    prompts = [all_prompts[i % len(all_prompts)] for i in range(n_requests)]
    # requests/s that keep a full continuous batch busy, from a first measured run
    at_once = scheduler.prompt_stream(prompts, 1e9, shortest, longest, seed=0)
    probe = max(scheduler.serve(model, at_once, max_batch)["throughput"] for _ in range(3))
    capacity = probe / ((shortest + longest) / 2)
    print(f"\nstream: {n_requests} real prompts ({TEXTS[0]!r}, {TEXTS[1]!r}, ... in turn), answers of {shortest}-"
          f"{longest} tokens (uniform, no stop token), exponential gaps, seed 0; at most {max_batch} in a batch; "
          f"all arriving at once, continuous batching serves {capacity:.0f} requests/s")
    print("| arrival rate | policy | tokens/s (best / median) | mean latency s | 95th percentile s | mean time to "
          "first token s | steps (with a prefill pass) | ms per step | continuous ÷ static throughput, best | median "
          "| static ÷ continuous mean latency |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    loads = (0.5, 1.0, 2.0, math.inf)
    streams = {load: scheduler.prompt_stream(prompts, min(load * capacity, 1e9), shortest, longest, seed=0)
               for load in loads}
    best_runs: dict[float, dict] = {}
    for load, stream in streams.items():
        runs: dict[str, list[dict]] = {"static": [], "continuous": []}
        for _ in range(max(3, args.rounds // 2)):
            for policy in runs:
                runs[policy].append(scheduler.serve(model, stream, max_batch, policy))
        assert runs["static"][0]["tokens"] == runs["continuous"][0]["tokens"], "the policies gave different tokens"
        top = {p: max(r, key=lambda x: x["throughput"]) for p, r in runs.items()}
        best_runs[load] = top
        mid = {p: median([x["throughput"] for x in r]) for p, r in runs.items()}
        rate = "all at once" if load == math.inf else f"{load * capacity:.0f}/s ({load:.1f}×)"
        for policy, r in top.items():
            lat = sorted(r["latency"])
            gain = (f"{r['throughput'] / top['static']['throughput']:.2f} | {mid[policy] / mid['static']:.2f} | "
                    f"{top['static']['mean_latency'] / r['mean_latency']:.2f}" if policy == "continuous"
                    else "— | — | —")
            print(f"| {rate} | {policy} | {r['throughput']:,.0f} / {mid[policy]:,.0f} | "
                  f"{r['mean_latency']:.3f} | {lat[int(0.95 * len(lat))]:.3f} | {r['mean_time_to_first_token']:.3f} | "
                  f"{r['steps']} ({sum(1 for n in r['prefills'] if n)}) | {r['busy_s'] / r['steps'] * 1e3:.2f} | "
                  f"{gain} |")
    check = [batching.generate_alone(model, list(q.prompt), q.max_new_tokens) for q in streams[loads[-1]][:16]]
    assert runs["continuous"][0]["tokens"][:16] == check, "served tokens differ from each prompt alone"
    fitted = {load: scheduler.fit_step_time(best_runs[load]["continuous"]) for load in loads}

    sizes = [1, 2, 4, 8, 16]
    measured = [step_seconds(model, b, 32, args.rounds * 5) for b in sizes]
    x = torch.tensor([[1.0, b] for b in sizes], dtype=torch.float64)
    fixed, per_row = torch.linalg.lstsq(x, torch.tensor(measured, dtype=torch.float64)[:, None]).solution[:, 0].tolist()
    print("\n| one decode step of the model alone (`masked_forward`, 32 cached tokens), batch | "
          + " | ".join(str(b) for b in sizes) + " | fit: fixed + per row |")
    print("|---|" + "---|" * len(sizes) + "---|")
    print("| ms (best) | " + " | ".join(f"{t * 1e3:.2f}" for t in measured) +
          f" | {fixed * 1e3:.2f} + {per_row * 1e3:.3f} × batch |")
    print("the scheduler's steps (prefill + decode + cache work), least-squares fit of the best continuous run: "
          + "; ".join(f"{f * 1e3:.2f} + {r * 1e3:.3f} ms × batch at {load:.1f}×".replace("inf×", "all at once") for load, (f, r) in fitted.items()))

    print("\nsimulated (`batching.simulate`) on the same arrivals and answer lengths, with each load's fitted step "
          "cost of the scheduler:")
    print("| arrival rate | policy | tokens/s | mean latency s | 95th percentile s | steps | continuous ÷ static "
          "throughput | static ÷ continuous mean latency |")
    print("|---|---|---|---|---|---|---|---|")
    for load in loads:
        stream = scheduler.as_simulated(best_runs[load]["continuous"])
        res = {p: batching.simulate(stream, max_batch, p, fitted[load]) for p in ("static", "continuous")}
        for policy, r in res.items():
            lat = sorted(r["latency"])
            gain = (f"{res['continuous']['throughput'] / res['static']['throughput']:.2f} | "
                    f"{res['static']['mean_latency'] / res['continuous']['mean_latency']:.2f}"
                    if policy == "continuous" else "— | —")
            rate = "all at once" if load == math.inf else f"{load * capacity:.0f}/s ({load:.1f}×)"
            print(f"| {rate} | {policy} | {r['throughput']:,.0f} | "
                  f"{r['mean_latency']:.3f} | {lat[int(0.95 * len(lat))]:.3f} | {r['steps']} | {gain} |")


if __name__ == "__main__":
    main()
