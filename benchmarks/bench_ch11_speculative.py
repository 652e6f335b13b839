"""Speculative vs plain greedy decoding on the course GPT, with chapter 11's trained draft model.

Target: the course GPT of chapter 08. Draft: ``llmcourse.inference.draft.course_draft_gpt`` (same tokenizer,
one layer, half the width, trained briefly on the same documentation). Both decode greedily from the same
real-text prompts to the end of the target's 64-token context. Contenders, taking turns round by round:

* plain: ``speculative.greedy_decode(target, prompt, n, use_cache=True)``, one cached target pass per token
  (the peer; ``generation.generate(..., top_k=1)`` is timed too);
* speculative: ``speculative.speculative_greedy(target, draft, prompt, n, k, use_cache=True)`` for several k,
  each checked to give exactly the plain tokens.

Speed-up = plain time / speculative time (> 1: speculative decoding is faster). Acceptance rate = accepted
drafted tokens / drafted tokens; tokens per target pass = new tokens / target passes. The last column estimates
how much of a run is forward passes: drafted tokens x one draft pass + target passes x one target pass over
k + 1 tokens (each timed alone after 32 cached tokens); the rest is the decoding loop's own work.

Run: .venv/bin/python benchmarks/bench_ch11_speculative.py [--rounds 7] [--quick]
"""
from __future__ import annotations

import torch

from bench_ch11_common import alternate, course_gpt, machine_line, median, parse_args, spread
from llmcourse.inference import speculative
from llmcourse.inference.draft import course_draft_gpt
from llmcourse.models.generation import generate

TEXTS = ["A function returns the value of", "If the file is", "This module provides", "Return a new",
         "The default value is", "Raise an exception when"]


@torch.no_grad()
def pass_seconds(model, n_new: int, past_len: int, rounds: int) -> float:
    """Best time of one cached forward pass feeding ``n_new`` tokens after ``past_len`` cached ones."""
    ids = torch.randint(0, model.vocab_size, (1, past_len + n_new), generator=torch.Generator().manual_seed(0))
    _, past = model(ids[:, :past_len], use_cache=True)
    return min(alternate({"pass": lambda: model(ids[:, past_len:], past_kv=past, use_cache=True)}, rounds,
                         warmup=3)["pass"])


def main() -> None:
    args = parse_args(__doc__, rounds=7)
    target, tokenizer = course_gpt()
    draft, _, _ = course_draft_gpt().value
    draft.eval()
    ks = [1, 2, 4] if args.quick else [1, 2, 3, 4, 6, 8]
    prompts = [torch.tensor([tokenizer.encode(t)]) for t in TEXTS]
    goal = target.context_length

    def plain():
        return [speculative.greedy_decode(target, p, goal - p.shape[1], use_cache=True) for p in prompts]

    def course_generate():
        return [generate(target, p, goal - p.shape[1], top_k=1) for p in prompts]

    def spec(k):
        return [speculative.speculative_greedy(target, draft, p, goal - p.shape[1], k=k, use_cache=True)
                for p in prompts]

    reference = plain()
    assert all(torch.equal(a, b) for a, b in zip(reference, course_generate()))
    new_tokens = sum(r.shape[1] - p.shape[1] for r, p in zip(reference, prompts))
    stats = {}
    for k in ks:
        runs = spec(k)
        assert all(torch.equal(out, ref) for (out, _), ref in zip(runs, reference)), f"k={k} changed the tokens"
        stats[k] = (sum(s.accepted for _, s in runs), sum(s.drafted for _, s in runs),
                    sum(s.target_calls for _, s in runs))
    contenders = {"plain": plain, "generate": course_generate}
    contenders.update({f"k={k}": (lambda k=k: spec(k)) for k in ks})
    times = alternate(contenders, args.rounds)
    one_draft = alternate({"draft": lambda: [speculative.greedy_decode(draft, p, goal - p.shape[1], use_cache=True)
                                             for p in prompts]}, args.rounds)["draft"]

    t, d = target.config, draft.config
    print(machine_line(f"{args.rounds} rounds, alternating; greedy, batch 1"))
    print(f"target: course GPT {t.n_layers} layers x {t.d_model}, {target.num_parameters():,} parameters; draft: "
          f"{d.n_layers} layer(s) x {d.d_model}, {draft.num_parameters():,} parameters; {len(prompts)} prompts, "
          f"each decoded to {goal} tokens ({new_tokens} new tokens in all)")
    plain_best, plain_med = min(times["plain"]), median(times["plain"])
    print(f"plain cached greedy, all prompts: {spread(times['plain'])} ms (best / median / worst), "
          f"{new_tokens / plain_best:,.0f} tokens/s; `generate(top_k=1)`: {spread(times['generate'])} ms; "
          f"the draft alone, plain cached greedy: {spread(one_draft)} ms "
          f"({min(times['plain']) / min(one_draft):.1f}x faster than the target)")
    draft_pass = pass_seconds(draft, 1, 32, args.rounds * 5)
    target_pass = {n: pass_seconds(target, n, 32, args.rounds * 5) for n in sorted({1} | {k + 1 for k in ks})}
    print("one cached pass after 32 tokens, ms (best): draft, 1 token " + f"{draft_pass * 1e3:.2f}; target, "
          + ", ".join(f"{n} token(s) {t * 1e3:.2f}" for n, t in target_pass.items()))
    print("\n| k | acceptance rate | tokens per target pass | target passes | ms (best / median / worst) | "
          "tokens/s (best) | speed-up, best | median | of which forward passes (estimate) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| plain | — | 1.00 | {new_tokens} | {spread(times['plain'])} | {new_tokens / plain_best:,.0f} | 1.00 | 1.00 "
          f"| {new_tokens * target_pass[1] * 1e3:.0f} ms |")
    for k in ks:
        accepted, drafted, calls = stats[k]
        a = times[f"k={k}"]
        print(f"| {k} | {accepted / drafted:.1%} | {new_tokens / calls:.2f} | {calls} | {spread(a)} | "
              f"{new_tokens / min(a):,.0f} | {plain_best / min(a):.2f} | {plain_med / median(a):.2f} | "
              f"{(drafted * draft_pass + calls * target_pass[k + 1]) * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
