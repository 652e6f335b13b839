"""Speculative vs plain greedy decoding on the course GPT, with chapter 11's trained draft model.

Target: the course GPT of chapter 08. Draft: ``llmcourse.inference.draft.course_draft_gpt`` (same tokenizer,
one layer, half the width, trained briefly on the same documentation). Both decode greedily from the same
real-text prompts to the end of the target's 64-token context. Contenders, taking turns round by round:

* plain: ``speculative.greedy_decode(target, prompt, n, use_cache=True)``, one cached target pass per token
  (the peer; ``generation.generate(..., top_k=1)`` is timed too);
* speculative: ``speculative.speculative_greedy(target, draft, prompt, n, k, use_cache=True)`` for several k,
  each checked to give exactly the plain tokens.

Speed-up = plain time / speculative time (> 1: speculative decoding is faster). Acceptance rate = accepted
drafted tokens / drafted tokens; tokens per target pass = new tokens / target passes.

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
    print("\n| k | acceptance rate | tokens per target pass | target passes | ms (best / median / worst) | "
          "tokens/s (best) | speed-up, best | median |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| plain | — | 1.00 | {new_tokens} | {spread(times['plain'])} | {new_tokens / plain_best:,.0f} | 1.00 | 1.00 |")
    for k in ks:
        accepted, drafted, calls = stats[k]
        a = times[f"k={k}"]
        print(f"| {k} | {accepted / drafted:.1%} | {new_tokens / calls:.2f} | {calls} | {spread(a)} | "
              f"{new_tokens / min(a):,.0f} | {plain_best / min(a):.2f} | {plain_med / median(a):.2f} |")


if __name__ == "__main__":
    main()
