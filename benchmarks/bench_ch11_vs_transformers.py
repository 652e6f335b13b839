"""The course's generation loop vs transformers' ``generate`` on the same weights (chapter 11).

The course GPT of chapter 08 is copied into a ``transformers`` ``GPT2LMHeadModel`` built from a config (the
reverse of ``GPT.from_hf``; the script checks that both give the same logits and that ``from_hf`` gives the
course weights back). Both then decode greedily from the same real-text prompt to the end of the context,
with their KV caches, in the same process and with the same threads, taking turns round by round.
The course side is ``llmcourse.models.generation.generate(model, prompt, n, top_k=1)``; the peer is
``hf.generate(prompt, max_new_tokens=n, do_sample=False)``. Both must give the same tokens.
Ratio = transformers' time / the course's time (>= 1.0: the course loop is at least as fast). A third
contender, chapter 11's bare greedy loop (``batching.generate_alone``: the model's cache and an arg-max, no
sampler, no checks), shows what ``generate``'s sampling path (top-k filter, softmax, a draw) costs per token.

Run: .venv/bin/python benchmarks/bench_ch11_vs_transformers.py [--rounds 20] [--quick]
"""
from __future__ import annotations

import torch
import transformers

from bench_ch11_common import PROMPT_TEXT, alternate, course_gpt, machine_line, median, parse_args, prompt_ids, spread
from llmcourse.inference.batching import generate_alone
from llmcourse.models.generation import generate
from llmcourse.models.gpt import GPT


def to_gpt2(model: GPT) -> transformers.GPT2LMHeadModel:
    """A transformers GPT-2 with the course GPT's weights (Conv1D keeps (in, out): the transpose of nn.Linear)."""
    c = model.config
    if c.activation != "gelu_tanh" or not c.bias or not c.tie_weights:
        raise ValueError("only a GPT-2-shaped course GPT (gelu_tanh, biases, tied embeddings) can be copied")
    config = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.d_model,
                                     n_layer=c.n_layers, n_head=c.n_heads, layer_norm_epsilon=c.eps,
                                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    t = hf.transformer
    with torch.no_grad():
        t.wte.weight.copy_(model.wte.weight)
        t.wpe.weight.copy_(model.wpe.table.weight)
        for ours, theirs in zip(model.blocks, t.h):
            for a, b in [(ours.ln_1, theirs.ln_1), (ours.ln_2, theirs.ln_2)]:
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
            attn = ours.attn
            theirs.attn.c_attn.weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight,
                                                       attn.v_proj.weight]).t())
            theirs.attn.c_attn.bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
            for a, b in [(attn.o_proj, theirs.attn.c_proj), (ours.mlp.up, theirs.mlp.c_fc),
                         (ours.mlp.down, theirs.mlp.c_proj)]:
                b.weight.copy_(a.weight.t())
                b.bias.copy_(a.bias)
        t.ln_f.weight.copy_(model.ln_f.weight)
        t.ln_f.bias.copy_(model.ln_f.bias)
    return hf


def check_same_model(model: GPT, hf: transformers.GPT2LMHeadModel, ids: torch.Tensor) -> float:
    """Largest logit difference between the two (asserted below 1e-4); from_hf must give the course weights back."""
    with torch.no_grad():
        diff = float((model(ids) - hf(ids).logits).abs().max())
        back = GPT.from_hf(hf)
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    assert diff < 1e-4, diff
    return diff


def main() -> None:
    args = parse_args(__doc__, rounds=20)
    model, tokenizer = course_gpt()
    hf = to_gpt2(model)
    n_ctx = model.context_length
    settings = [(8, n_ctx - 8), (32, n_ctx - 32)]
    diff = check_same_model(model, hf, prompt_ids(tokenizer, PROMPT_TEXT, n_ctx))
    c = model.config
    print(machine_line(f"transformers {transformers.__version__}, hf attention '{hf.config._attn_implementation}'"))
    print(f"course GPT {c.n_layers} layers x {c.d_model} wide, {c.n_heads} heads, vocabulary {c.vocab_size}, context "
          f"{n_ctx}; {model.num_parameters():,} parameters; largest logit difference {diff:.1e}; "
          f"{args.rounds} rounds, alternating; greedy, batch 1")
    print("| prompt + new tokens | course `generate` ms (best / median / worst) | transformers `generate` ms "
          "(best / median / worst) | course tokens/s (best) | transformers tokens/s (best) | "
          "transformers ÷ course, best | median |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for prompt_len, new in settings:
        prompt = prompt_ids(tokenizer, PROMPT_TEXT, prompt_len)
        ours = generate(model, prompt, new, top_k=1)
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False)
        assert torch.equal(ours, theirs), "the two loops disagree"
        assert ours[0, prompt_len:].tolist() == generate_alone(model, prompt[0].tolist(), new)
        times = alternate({
            "course": lambda: generate(model, prompt, new, top_k=1),
            "hf": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                      min_new_tokens=new, do_sample=False),
            "bare": lambda: generate_alone(model, prompt[0].tolist(), new),
        }, args.rounds)
        a, b, bare = times["course"], times["hf"], times["bare"]
        rows.append((prompt_len, new, bare))
        print(f"| {prompt_len} + {new} | {spread(a)} | {spread(b)} | {new / min(a):,.0f} | {new / min(b):,.0f} | "
              f"{min(b) / min(a):.2f} | {median(b) / median(a):.2f} |")
    print("\n| prompt + new tokens | bare greedy loop (`generate_alone`) ms (best / median / worst) | tokens/s (best) |")
    print("|---|---|---|")
    for prompt_len, new, bare in rows:
        print(f"| {prompt_len} + {new} | {spread(bare)} | {new / min(bare):,.0f} |")


if __name__ == "__main__":
    main()
