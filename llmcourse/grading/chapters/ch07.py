"""Graded checks of chapter 07, "Architectures and generation".

Six exercises on the output layer and decoding, each checked on seeded inputs
against an independent reference: ``torch.softmax``, transformers'
``TopKLogitsWarper`` / ``TopPLogitsWarper``, hand-computed examples, GNMT's
formula, ``llmcourse.models.generation.generate`` on a small GPT, and the keys and
values a real ``MultiHeadAttention`` layer caches. Then a whole ``GPT`` to build,
checked against transformers' GPT-2 with the same weights.

Last, an open experiment and a derivation. ``sampling_tail_share`` draws tokens
from a distribution with p ~ 1/rank and measures how many fall outside the k
likeliest; it is checked against the exact tail probability (harmonic sums written
out, within five standard deviations of a sampled share) and the lesson's claim
that plain sampling mostly draws from the long tail of a large vocabulary.
``temperature_gradient`` is the derivative of softmax(z / T) with respect to T,
checked against ``torch.autograd.functional.jacobian`` while every autograd entry
point is switched off for the learner's code.

Last, ``mask_tokens``, BERT's masked-language-model corruption: labels only at the
chosen positions, special tokens never chosen, the 80/10/10 rule within five
standard deviations of a binomial count on 40,000 tokens, random replacements that
are ordinary tokens, and a seeded generator. No check needs another exercise's
function.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper

from llmcourse.transformer.attention import MultiHeadAttention, scaled_dot_product_attention
from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    call,
    call_object,
    expect,
    expect_close,
    expect_raises_value_error,
    expect_shape,
    forbid_autograd,
    seeded_randn,
)

chapter = Chapter("07", "Architectures and generation")

Namespace = Mapping[str, Any]


def _expect_same_filter(got: Any, expected: torch.Tensor, what: str) -> None:
    got = expect_shape(got, tuple(expected.shape), what)
    kept, want_kept = torch.isfinite(got), torch.isfinite(expected)
    if not torch.equal(kept, want_kept):
        n_got, n_want = int(kept.sum()), int(want_kept.sum())
        raise CheckFailed(f"{what} keeps the wrong tokens: {n_got} finite logits where {n_want} were expected "
                          f"(removed tokens must become -inf).")
    if not torch.equal(got[kept], expected[want_kept]):
        raise CheckFailed(f"{what} changes the logits it keeps; they must come back unchanged.")
    if not bool((got[~kept] == float("-inf")).all()):
        raise CheckFailed(f"{what}: removed tokens must be set to -inf (so softmax gives them probability 0).")


# --------------------------------------------------------------------------- softmax_with_temperature

@chapter.check("softmax_with_temperature", points=1, hint="Divide the logits by the temperature, then take the "
               "softmax along the last dimension (the vocabulary), one distribution per row.")
def temperature_values(ns: Namespace) -> None:
    logits = seeded_randn(3, 7, seed=1) * 2
    for t in [0.3, 1.0, 2.5]:
        expect_close(call(ns, "softmax_with_temperature", logits, t), torch.softmax(logits / t, dim=-1),
                     f"softmax_with_temperature(logits (3, 7), {t})")


@chapter.check("softmax_with_temperature", points=1, hint="exp of a large logit overflows to inf. Subtract each row's "
               "maximum first: the softmax does not change, and the largest exponent becomes exp(0) = 1.")
def temperature_is_stable(ns: Namespace) -> None:
    logits = torch.tensor([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1003.0]])
    expect_close(call(ns, "softmax_with_temperature", logits, 0.5), torch.softmax(logits / 0.5, dim=-1),
                 "softmax_with_temperature of logits near +-1000 at temperature 0.5")


@chapter.check("softmax_with_temperature", points=1, hint="A temperature of 0 or less has no meaning (dividing by "
               "0, or flipping which token is likeliest): raise a ValueError for it.")
def temperature_rejects_zero(ns: Namespace) -> None:
    expect_raises_value_error(ns, "softmax_with_temperature", torch.zeros(4), 0.0)
    expect_raises_value_error(ns, "softmax_with_temperature", torch.zeros(4), -1.0)


# --------------------------------------------------------------------------- top_k_filter

@chapter.check("top_k_filter", points=1, hint="Keep the k largest logits of each row (along the last dimension) and "
               "set every other logit to -inf; the result has the same shape as the input.")
def top_k_matches_transformers(ns: Namespace) -> None:
    for k, seed in [(1, 1), (3, 2), (10, 3)]:
        logits = seeded_randn(4, 30, seed=seed)
        _expect_same_filter(call(ns, "top_k_filter", logits.clone(), k), TopKLogitsWarper(k)(None, logits.clone()),
                            f"top_k_filter(logits (4, 30), {k})")


@chapter.check("top_k_filter", points=1, hint="Remove the tokens whose logit is strictly below the k-th largest: "
               "exactly k remain (when there are no ties), and with k >= vocabulary size nothing is removed.")
def top_k_by_hand(ns: Namespace) -> None:
    inf = float("-inf")
    _expect_same_filter(call(ns, "top_k_filter", torch.tensor([1.0, 5.0, 3.0, 2.0]), 2),
                        torch.tensor([inf, 5.0, 3.0, inf]), "top_k_filter([1, 5, 3, 2], 2)")
    logits = seeded_randn(2, 5, seed=4)
    _expect_same_filter(call(ns, "top_k_filter", logits.clone(), 5), logits, "top_k_filter(logits (2, 5), 5)")
    _expect_same_filter(call(ns, "top_k_filter", logits.clone(), 9), logits, "top_k_filter(logits (2, 5), 9)")


# --------------------------------------------------------------------------- top_p_filter

@chapter.check("top_p_filter", points=2, hint="Sort the probabilities (softmax of the logits) from largest to "
               "smallest and keep tokens while the ones ranked BEFORE them add up to less than p: the token that "
               "crosses p is kept. Always keep the most likely token.")
def top_p_by_hand(ns: Namespace) -> None:
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()
    for p, keep in [(0.4, [False, True, False, False]), (0.7, [False, True, False, True]),
                    (0.9, [True, True, False, True]), (1.0, [True, True, True, True])]:
        expected = logits.masked_fill(~torch.tensor(keep), float("-inf"))
        _expect_same_filter(call(ns, "top_p_filter", logits.clone(), p), expected,
                            f"top_p_filter for probabilities [0.15, 0.5, 0.05, 0.3] and p={p}")


@chapter.check("top_p_filter", points=1, hint="Work row by row along the last dimension, and put the keep/remove "
               "decision back in the original token order (the sort shuffles the tokens).")
def top_p_matches_transformers(ns: Namespace) -> None:
    for p, seed in [(0.33, 5), (0.77, 6), (0.95, 7)]:
        logits = seeded_randn(6, 40, seed=seed) * 2
        _expect_same_filter(call(ns, "top_p_filter", logits.clone(), p), TopPLogitsWarper(p)(None, logits.clone()),
                            f"top_p_filter(logits (6, 40), {p})")


# --------------------------------------------------------------------------- greedy_decode

def _prefix_scorer(vocab: int = 11):
    """Next-token logits that depend on the whole prefix: the best token is (sum of i * id_i + 3) mod vocab."""
    def step(ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != 1:
            raise CheckFailed(f"step_fn expects ids of shape (1, seq); it was given "
                              f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}.")
        best = (int((ids[0] * torch.arange(1, ids.shape[1] + 1)).sum()) + 3) % vocab
        logits = torch.linspace(-1, 0, vocab)[None].clone()
        logits[0, best] = 5.0
        return logits
    return step


def _reference_greedy(step, ids: torch.Tensor, n: int, eos_id: int | None = None) -> list[int]:
    out = ids.tolist()
    for _ in range(n):
        token = int(step(torch.tensor([out]))[0].argmax())
        out.append(token)
        if eos_id is not None and token == eos_id:
            break
    return out


@chapter.check("greedy_decode", points=1, hint="At each of the n steps call step_fn on the WHOLE sequence so far "
               "(shape (1, seq)), append the arg max of the logits, and return prompt + new tokens as one 1-D tensor.")
def greedy_prefix_scorer(ns: Namespace) -> None:
    step, ids = _prefix_scorer(), torch.tensor([2, 7])
    got = call(ns, "greedy_decode", step, ids.clone(), 6)
    got = expect_shape(got, (8,), "greedy_decode(step_fn, [2, 7], 6)")
    expected = _reference_greedy(step, ids, 6)
    expect(got.tolist() == expected, f"greedy_decode(step_fn, [2, 7], 6) returned {got.tolist()}, expected {expected}.")


@chapter.check("greedy_decode", points=1, hint="Greedy decoding with a real model must give the same tokens as "
               "generate(..., top_k=1): the next token is the arg max of the LAST position's logits.")
def greedy_with_gpt(ns: Namespace) -> None:
    from llmcourse.models.generation import generate
    from llmcourse.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=30, context_length=24, d_model=16, n_layers=1, n_heads=2, tie_weights=False)
    model = GPT(config).eval()
    with torch.no_grad():
        for module in model.modules():  # larger weights: more varied tokens
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.mul_(5)

    def step(ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(ids)[:, -1]

    prompt = torch.tensor([3, 1, 4])
    got = as_list(call(ns, "greedy_decode", step, prompt.clone(), 10), "greedy_decode with a GPT")
    expected = generate(model, prompt, 10, top_k=1).tolist()
    expect(got == expected, f"greedy_decode with a small GPT returned {got}, expected {expected}.")


@chapter.check("greedy_decode", points=1, hint="With eos_id given, stop right after appending the end-of-text token "
               "(keep it in the output); without eos_id, always add exactly n tokens.")
def greedy_stops_at_eos(ns: Namespace) -> None:
    step, ids = _prefix_scorer(), torch.tensor([2, 7])
    full = _reference_greedy(step, ids, 6)
    eos = full[4]  # the third new token
    expected = _reference_greedy(step, ids, 6, eos_id=eos)
    got = as_list(call(ns, "greedy_decode", step, ids.clone(), 6, eos), "greedy_decode with eos_id")
    expect(got == expected, f"greedy_decode(step_fn, [2, 7], 6, eos_id={eos}) returned {got}, expected {expected}.")


def as_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, torch.Tensor) or value.dim() != 1:
        raise CheckFailed(f"{what} should return a 1-D tensor of token ids, got "
                          f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}.")
    return value.tolist()


# --------------------------------------------------------------------------- length_penalty

@chapter.check("length_penalty", points=1, hint="GNMT's penalty is ((5 + length) / 6) raised to the power alpha: "
               "the whole fraction is raised, and length 1 gives exactly 1.")
def length_penalty_values(ns: Namespace) -> None:
    for length, alpha in [(1, 0.6), (4, 1.0), (10, 0.6), (25, 2.0), (7, 0.0)]:
        expected = ((5 + length) / 6) ** alpha
        got = call(ns, "length_penalty", length, alpha)
        expect(isinstance(got, (int, float, torch.Tensor)) and math.isclose(float(got), expected, rel_tol=1e-6),
               f"length_penalty({length}, {alpha}) returned {got!r}, expected {expected:.6g}.")


@chapter.check("length_penalty", points=1, hint="Scores are log P / penalty. With alpha > 0 the penalty must grow "
               "with the length, so that longer beams are divided by more; alpha = 0 means no penalty (1).")
def length_penalty_ranks_beams(ns: Namespace) -> None:
    short, long = (-2.0, 2), (-2.6, 6)  # (log-probability, length)
    def score(beam, a):
        return beam[0] / float(call(ns, "length_penalty", beam[1], a))
    expect(score(short, 0.0) > score(long, 0.0), "with alpha = 0 the shorter, more likely beam should win "
           "(length_penalty should be 1).")
    expect(score(long, 1.0) > score(short, 1.0), "with alpha = 1 the longer beam (log P = -2.6, 6 tokens) should "
           "beat the shorter one (log P = -2.0, 2 tokens) once both are divided by their length penalty.")


# --------------------------------------------------------------------------- kv_cache_append

def _layer_cache(x: torch.Tensor, seed: int = 0):
    torch.manual_seed(seed)
    layer = MultiHeadAttention(16, 4, n_kv_heads=2).eval()
    with torch.no_grad():
        return layer, layer(x, is_causal=True, use_cache=True)


@chapter.check("kv_cache_append", points=2, hint="Keys and values have shape (batch, heads, seq, head_dim): join "
               "past and new along the sequence dimension (-2), past first, and return the pair (keys, values).")
def kv_append_matches_layer(ns: Namespace) -> None:
    x = seeded_randn(2, 7, 16, seed=8)
    layer, (_, full) = _layer_cache(x)
    with torch.no_grad():
        _, past = layer(x[:, :4], is_causal=True, use_cache=True)
        _, new = layer(x[:, 4:], use_cache=True)  # the new tokens' own keys and values
    got = call(ns, "kv_cache_append", past, new)
    expect(isinstance(got, (tuple, list)) and len(got) == 2, "kv_cache_append should return a pair (keys, values).")
    expect_close(got[0], full[0], "the appended keys (vs the layer's cache for all 7 tokens)")
    expect_close(got[1], full[1], "the appended values (vs the layer's cache for all 7 tokens)")


@chapter.check("kv_cache_append", points=1, hint="The first step has no cache yet: when past is None, the new keys "
               "and values ARE the cache. Appending one token at a time must build up the same cache.")
def kv_append_from_empty(ns: Namespace) -> None:
    k, v = seeded_randn(1, 2, 5, 8, seed=9), seeded_randn(1, 2, 5, 8, seed=10)
    cache = None
    for t in range(5):
        cache = call(ns, "kv_cache_append", cache, (k[:, :, t:t + 1], v[:, :, t:t + 1]))
    expect(isinstance(cache, (tuple, list)) and len(cache) == 2, "kv_cache_append should return a pair (keys, values).")
    expect_close(cache[0], k, "keys after appending 5 tokens one at a time")
    expect_close(cache[1], v, "values after appending 5 tokens one at a time")
    q = seeded_randn(1, 2, 1, 8, seed=11)
    expect_close(scaled_dot_product_attention(q, cache[0], cache[1]), scaled_dot_product_attention(q, k, v),
                 "attention of a new query over your cache")


__all__ = ["chapter"]


# --------------------------------------------------------------------------- GPT (build the model)

_GPT = "GPT"
_GPT_SHAPE = dict(vocab_size=40, context_length=12, d_model=32, n_layers=2, n_heads=4)


def _hf_gpt2(seed: int):
    """A small GPT-2 from ``transformers`` with seeded random weights and no dropout: the reference."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=_GPT_SHAPE["vocab_size"], n_positions=_GPT_SHAPE["context_length"],
                        n_embd=_GPT_SHAPE["d_model"], n_layer=_GPT_SHAPE["n_layers"], n_head=_GPT_SHAPE["n_heads"],
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 starts its biases and norms at 0 and 1: make every number count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _weights_for_learner(hf_model) -> dict:
    """GPT-2's weights under the parameter names the exercise fixes (the package's GPT, with wpe an nn.Embedding)."""
    from llmcourse.models.gpt import GPT as PackageGPT

    state = PackageGPT.from_hf(hf_model).state_dict()
    state["wpe.weight"] = state.pop("wpe.table.weight")
    return state


def _learner_gpt(ns: Namespace, hf_model):
    from torch import nn

    from llmcourse.models.gpt import GPT as PackageGPT, Block

    model = call(ns, _GPT, **_GPT_SHAPE)
    if not isinstance(model, nn.Module):
        raise CheckFailed(f"`{_GPT}(...)` should build an nn.Module, got {type(model).__name__}")
    if any(isinstance(m, (PackageGPT, Block, MultiHeadAttention)) for m in model.modules()):
        raise CheckFailed(f"`{_GPT}` must be built here from PyTorch layers, not from llmcourse's GPT, Block or "
                          f"MultiHeadAttention.")
    state = _weights_for_learner(hf_model)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise CheckFailed(f"the model's parameters must have the exercise's names and shapes: missing {missing[:6]}, "
                          f"unexpected {extra[:6]}, wrong shape {wrong[:6]}")
    model.load_state_dict(state)
    return model.eval()


def _gpt_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return call_object(f"`{_GPT}.forward`", model, ids)


@chapter.check(_GPT, points=1, hint="Use exactly the names in the task: wte and wpe (nn.Embedding), blocks (an "
               "nn.ModuleList of blocks with ln_1, attn.q_proj/k_proj/v_proj/o_proj, ln_2, mlp.up and mlp.down, all "
               "with biases), ln_f and lm_head (no bias, tied to wte).")
def gpt_parameters(ns: Namespace) -> None:
    _learner_gpt(ns, _hf_gpt2(seed=0))


@chapter.check(_GPT, points=3, hint="Pre-norm blocks: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)); the MLP is "
               "up -> GELU (tanh approximation) -> down; token plus position embeddings go in, ln_f and lm_head come "
               "out. Attention is causal, with 1/sqrt(head_dim) scaling.")
def gpt_matches_gpt2(ns: Namespace) -> None:
    hf = _hf_gpt2(seed=1)
    model = _learner_gpt(ns, hf)
    ids = torch.randint(0, _GPT_SHAPE["vocab_size"], (2, _GPT_SHAPE["context_length"]),
                        generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(ids).logits
    expect_close(_gpt_logits(model, ids), expected, "the logits for 2 sequences of 12 tokens (transformers' GPT-2 "
                 "with the same weights)", atol=1e-4)


@chapter.check(_GPT, points=1, hint="Each position's logits may depend on that token and the ones before it only, "
               "and the model must accept any length up to context_length.")
def gpt_is_causal_for_any_length(ns: Namespace) -> None:
    hf = _hf_gpt2(seed=3)
    model = _learner_gpt(ns, hf)
    ids = torch.randint(0, _GPT_SHAPE["vocab_size"], (1, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = hf(ids[:, :5]).logits
    expect_close(_gpt_logits(model, ids)[:, :5], expected, "the logits of the first 5 of 7 tokens", atol=1e-4)


# --------------------------------------------------------------------------- an experiment: how much plain sampling draws from the tail

def _zipf_tail(vocab_size: int, k: int) -> float:
    """The probability that a draw from p_i ~ 1/i (i = 1 .. vocab_size) falls outside the k likeliest tokens."""
    tail = math.fsum(1.0 / i for i in range(k + 1, vocab_size + 1))
    return tail / math.fsum(1.0 / i for i in range(1, vocab_size + 1))


def _tail_share(ns: Namespace, vocab_size: int, k: int, n_samples: int, seed: int) -> float:
    what = f"sampling_tail_share({vocab_size}, {k}, {n_samples}, seed={seed})"
    got = as_number(call(ns, "sampling_tail_share", vocab_size, k, n_samples, seed=seed), what)
    expect(0.0 <= got <= 1.0, f"{what} returned {got:.6g}; a share of the draws lies between 0 and 1.")
    return got


@chapter.check("sampling_tail_share", points=1, hint="Token i (counting from 0) gets probability proportional to "
               "1 / (i + 1). Draw n_samples tokens WITH replacement (torch.multinomial(..., replacement=True), with a "
               "torch.Generator seeded by seed) and return the share of draws whose id is k or more.")
def tail_share_matches_the_tail_probability(ns: Namespace) -> None:
    for vocab_size, k, seed in [(10, 1, 0), (10, 3, 1), (1000, 10, 2), (50_000, 100, 3)]:
        n_samples = 20_000
        got = _tail_share(ns, vocab_size, k, n_samples, seed)
        want = _zipf_tail(vocab_size, k)
        allowed = 5 * math.sqrt(want * (1 - want) / n_samples) + 1e-9  # five standard deviations of a share
        expect(abs(got - want) <= allowed,
               f"sampling_tail_share({vocab_size}, {k}, {n_samples}) returned {got:.4f}, but the tokens outside the "
               f"{k} likeliest have probability {want:.4f} together; {n_samples} draws land within {allowed:.4f} "
               f"of that.")


@chapter.check("sampling_tail_share", points=1, hint="Count the draws OUTSIDE the k likeliest tokens (ids k and "
               "above), not inside. With k = vocab_size nothing is outside; with a 50,000-token vocabulary most "
               "draws come from outside the ten likeliest tokens.")
def tail_share_of_a_large_vocabulary(ns: Namespace) -> None:
    got = _tail_share(ns, 50_000, 10, 20_000, 4)
    expect(got > 0.7, f"with 50,000 tokens and p ~ 1/rank, the tokens outside the 10 likeliest hold "
                      f"{_zipf_tail(50_000, 10):.3f} of the probability, but only {got:.4f} of your draws "
                      f"came from them.")
    got = _tail_share(ns, 50, 50, 5_000, 5)
    expect(got == 0.0, f"sampling_tail_share(50, 50, ...) returned {got:.4f}: with k equal to the vocabulary "
                       f"size no token is outside the top k.")


# --------------------------------------------------------------------------- a derivation: how probabilities move with the temperature


def _temperature_gradient_reference(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    z = logits.detach().to(torch.float64)
    t = torch.tensor(float(temperature), dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda u: torch.softmax(z / u, dim=-1), t)


def _expect_temperature_gradient(ns: Namespace, logits: torch.Tensor, temperature: float, what: str) -> None:
    want = _temperature_gradient_reference(logits, temperature)
    with forbid_autograd("temperature_gradient"):
        got = call(ns, "temperature_gradient", logits.clone(), temperature)
    expect_close(got, want, f"temperature_gradient {what}", atol=1e-9, rtol=1e-6)


@chapter.check("temperature_gradient", points=1, hint="Write p_i = exp(z_i / T) / sum_j exp(z_j / T), take the log, "
               "differentiate with respect to T (the chain rule gives a -1/T^2), and multiply back by p_i. The sum "
               "over j turns into a p-weighted average of the logits.")
def temperature_gradient_matches_autograd(ns: Namespace) -> None:
    logits = seeded_randn(4, 6, seed=90, dtype=torch.float64) * 2
    for t in (0.5, 1.0, 3.0):
        _expect_temperature_gradient(ns, logits, t, f"for logits (4, 6) at T = {t}")


@chapter.check("temperature_gradient", points=1, hint="Your formula needs the probabilities: take them stably "
               "(torch.softmax, or subtract each row's maximum before exp), or logits near 1000 give inf and nan.")
def temperature_gradient_large_logits(ns: Namespace) -> None:
    _expect_temperature_gradient(ns, torch.tensor([1000.0, 999.0, 990.0], dtype=torch.float64), 0.5,
                                 "for the logits [1000, 999, 990] at T = 0.5")
    _expect_temperature_gradient(ns, torch.tensor([[-3.0, 4.0], [2.0, 2.0]], dtype=torch.float64), 2.0,
                                 "for the logits [[-3, 4], [2, 2]] at T = 2")


@chapter.check("temperature_gradient", points=1, hint="Every row of the last dimension is its own distribution: take "
               "the weighted average of the logits per row (keepdim=True), for any number of leading dimensions.")
def temperature_gradient_any_shape(ns: Namespace) -> None:
    logits = seeded_randn(2, 3, 5, seed=91, dtype=torch.float64) * 3
    for t in (0.2, 7.0):
        _expect_temperature_gradient(ns, logits, t, f"for logits (2, 3, 5) at T = {t}")


# --------------------------------------------------------------------------- mask_tokens: BERT's corruption rule

_N_ORDINARY = 96
_SPECIALS = (96, 97, 98, 99)  # [CLS], [SEP], [MASK], [PAD]
_MASK_ID = 98


def _masking_sample(seed: int, shape: tuple[int, int] = (200, 250)) -> torch.Tensor:
    """Ordinary ids in 0..95 with every fifth position one of the four special ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, _N_ORDINARY, shape, generator=g)
    ids[:, ::5] = torch.tensor(_SPECIALS)[torch.randint(0, 4, (shape[0], len(range(0, shape[1], 5))), generator=g)]
    return ids


def _learner_masking(ns: Namespace, ids: torch.Tensor, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    what = f"mask_tokens(ids {tuple(ids.shape)}, mask_id={_MASK_ID}, vocab_size=100, p={p}, ...)"
    got = call(ns, "mask_tokens", ids.clone(), _MASK_ID, 100, p, torch.Generator().manual_seed(seed), _SPECIALS)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what} should return two tensors, (inputs, labels); got {type(got).__name__}.")
    inputs = expect_shape(got[0], tuple(ids.shape), f"{what}, inputs,")
    labels = expect_shape(got[1], tuple(ids.shape), f"{what}, labels,")
    return inputs.long(), labels.long()


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


@chapter.check("mask_tokens", points=1, hint="labels is -100 everywhere except at the chosen positions, where it holds "
               "the ORIGINAL token (also where the input became [MASK] or a random token, or was kept). Only chosen "
               "positions may change in inputs, and a special id is never chosen: with p = 1 every ordinary token is "
               "chosen, with p = 0 none. Start from copies (ids.clone()), so that ids itself is not changed.")
def mask_tokens_labels_and_specials(ns: Namespace) -> None:
    ids = _masking_sample(30)
    ordinary = ~torch.isin(ids, torch.tensor(_SPECIALS))
    for p, seed in [(0.15, 31), (1.0, 32), (0.0, 33)]:
        inputs, labels = _learner_masking(ns, ids, p, seed)
        chosen = labels != -100
        expect(not bool(chosen[~ordinary].any()),
               f"with p={p}, {int(chosen[~ordinary].sum())} special tokens got a label: [CLS], [SEP], [MASK] and "
               f"[PAD] are never chosen (their label stays -100).")
        expect(torch.equal(labels[chosen], ids[chosen]),
               f"with p={p}, some labels are not the original token: at a chosen position the label is the token "
               f"that was there before masking.")
        expect(torch.equal(inputs[~chosen], ids[~chosen]),
               f"with p={p}, inputs changed at {int((inputs != ids)[~chosen].sum())} positions whose label is -100; "
               f"only chosen positions may change, and each chosen position needs its label.")
        if p == 1.0:
            expect(torch.equal(chosen, ordinary), "with p=1 every ordinary token must be chosen (and no special one).")
        if p == 0.0:
            expect(not bool(chosen.any()), "with p=0 no token is chosen: labels must be -100 everywhere.")


@chapter.check("mask_tokens", points=1, hint="Choose each ordinary token with probability p (torch.rand(...) < p, "
               "with the generator). Of the chosen ones 80% become mask_id, 10% a random ordinary token, and 10% stay "
               "as they are: one more uniform draw per token decides which (below 0.8, 0.8 to 0.9, above 0.9).")
def mask_tokens_80_10_10(ns: Namespace) -> None:
    ids = _masking_sample(40)
    n_ordinary = int((~torch.isin(ids, torch.tensor(_SPECIALS))).sum())
    for p, seed in [(0.15, 41), (0.4, 42)]:
        inputs, labels = _learner_masking(ns, ids, p, seed)
        chosen = labels != -100
        n_chosen = int(chosen.sum())
        expect(_within(n_chosen, n_ordinary, p),
               f"with p={p}, {n_chosen} of {n_ordinary} ordinary tokens were chosen ({n_chosen / n_ordinary:.3f}); "
               f"about {p} of them should be (within five standard deviations, "
               f"{5 * math.sqrt(p * (1 - p) / n_ordinary):.4f}).")
        masked = int((chosen & (inputs == _MASK_ID)).sum())
        kept = int((chosen & (inputs == ids)).sum())
        replaced = n_chosen - masked - kept
        for name, count, share in [("became [MASK]", masked, 0.8), ("became another token", replaced, 0.1 * 95 / 96),
                                   ("were kept", kept, 0.1 + 0.1 / 96)]:
            expect(_within(count, n_chosen, share),
                   f"with p={p}, {count} of the {n_chosen} chosen tokens {name} ({count / max(n_chosen, 1):.3f}); "
                   f"BERT's rule gives {share:.3f} (80% [MASK], 10% random, 10% unchanged; a random token is the "
                   f"original one 1 time in 96).")


@chapter.check("mask_tokens", points=1, hint="The random replacement is an ORDINARY token: draw it from the ids "
               "0..vocab_size-1 that are not in special_ids (and not mask_id), every one equally likely. Use the "
               "generator for every random draw, so that the same seed gives the same result.")
def mask_tokens_random_tokens_and_seed(ns: Namespace) -> None:
    ids = _masking_sample(50)
    inputs, labels = _learner_masking(ns, ids, 0.5, 51)
    changed = (labels != -100) & (inputs != ids) & (inputs != _MASK_ID)
    swapped_in = inputs[changed]
    bad = swapped_in[torch.isin(swapped_in, torch.tensor(_SPECIALS)) | (swapped_in < 0) | (swapped_in >= 100)]
    expect(len(bad) == 0, f"{len(bad)} random replacements are special or out-of-range ids (e.g. {bad[:3].tolist()}); "
                          f"a replacement is an ordinary token, 0..95 here.")
    expect(len(swapped_in.unique()) >= 90, f"the random replacements use only {len(swapped_in.unique())} of the 96 "
                                           f"ordinary ids; draw them uniformly from all of them.")
    again, again_labels = _learner_masking(ns, ids, 0.5, 51)
    other, other_labels = _learner_masking(ns, ids, 0.5, 52)
    expect(torch.equal(again, inputs) and torch.equal(again_labels, labels),
           "two calls with generators seeded alike gave different results; draw every random number from the "
           "generator you are given (torch.rand(..., generator=generator)).")
    expect(not torch.equal(other_labels, labels), "generators with different seeds gave the same choice of tokens.")
