"""Tests of chapter 07's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub, fail every common mistake, and are quick and deterministic."""
from __future__ import annotations

import torch
from check_contract import contract_tests
from wrong_solutions.ch07 import _GPT as _Build07  # the correct layer the wrong ones break

from llmcourse.models import sampling as S
from llmcourse.models.masked_lm import mask_tokens
from llmcourse.grading.chapters.ch07 import chapter
from llmcourse.grading.checks import run_checks

# --------------------------------------------------------------------------- correct solutions, written here


def _softmax_with_temperature(logits, temperature):
    if not temperature > 0:
        raise ValueError("temperature must be positive")
    z = logits / temperature
    z = z - z.max(dim=-1, keepdim=True).values
    return z.exp() / z.exp().sum(dim=-1, keepdim=True)


def _top_k_filter(logits, k):
    values = logits.sort(dim=-1, descending=True).values
    kth = values[..., min(k, logits.shape[-1]) - 1].unsqueeze(-1)
    return torch.where(logits >= kth, logits, torch.full_like(logits, float("-inf")))


def _top_p_filter(logits, p):
    probs = logits.softmax(-1)
    order = probs.argsort(dim=-1, descending=True)
    ranked = probs.gather(-1, order)
    before = ranked.cumsum(-1) - ranked
    keep_ranked = before < p
    keep_ranked[..., 0] = True
    keep = torch.empty_like(keep_ranked)
    keep.scatter_(-1, order, keep_ranked)
    return torch.where(keep, logits, torch.full_like(logits, float("-inf")))


def _greedy_decode(step_fn, ids, n, eos_id=None):
    tokens = ids.tolist()
    for _ in range(n):
        tokens.append(int(step_fn(torch.tensor([tokens]))[0].argmax()))
        if tokens[-1] == eos_id:
            break
    return torch.tensor(tokens)


def _length_penalty(length, alpha):
    return pow((length + 5) / 6, alpha)


def _kv_cache_append(past, new):
    if past is None:
        return new
    return tuple(torch.cat([old, fresh], dim=2) for old, fresh in zip(past, new))


def _sampling_tail_share(vocab_size, k, n_samples, seed):
    # written differently from the solution: inverse-transform sampling on the cumulative distribution
    generator = torch.Generator().manual_seed(seed)
    cdf = torch.cumsum(torch.tensor([1.0 / (i + 1) for i in range(vocab_size)], dtype=torch.float64), 0)
    draws = torch.searchsorted(cdf / cdf[-1], torch.rand(n_samples, generator=generator, dtype=torch.float64))
    return float(torch.count_nonzero(draws.clamp(max=vocab_size - 1) >= k)) / n_samples


def _temperature_gradient(logits, temperature):
    # d/dT of z_i / T - logsumexp(z / T) is -z_i / T^2 + sum_j p_j z_j / T^2; times p_i
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    d_log_p = (-logits + (log_p.exp() * logits).sum(-1, keepdim=True)) / temperature**2
    return log_p.exp() * d_log_p


def _mask_tokens(ids, mask_id, vocab_size, p=0.15, generator=None, special_ids=()):
    # written differently from the solution: a Bernoulli choice, then two more Bernoulli draws (0.8, then 0.5)
    special = torch.zeros(vocab_size, dtype=torch.bool)
    special[list(special_ids) + [mask_id]] = True
    chosen = torch.bernoulli(torch.full(ids.shape, float(p)), generator=generator).bool() & ~special[ids]
    as_mask = chosen & torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool()
    as_random = chosen & ~as_mask & torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool()
    ordinary = (~special).nonzero().flatten()
    inputs = ids.clone()
    inputs[as_mask] = mask_id
    inputs[as_random] = ordinary[torch.randint(len(ordinary), (int(as_random.sum()),), generator=generator)]
    labels = torch.full_like(ids, -100)
    labels[chosen] = ids[chosen]
    return inputs, labels


CORRECT = {
    "GPT": _Build07,
    "softmax_with_temperature": _softmax_with_temperature,
    "top_k_filter": _top_k_filter,
    "top_p_filter": _top_p_filter,
    "greedy_decode": _greedy_decode,
    "length_penalty": _length_penalty,
    "kv_cache_append": _kv_cache_append,
    "sampling_tail_share": _sampling_tail_share,
    "temperature_gradient": _temperature_gradient,
    "mask_tokens": _mask_tokens,
}

PACKAGE = {
    "softmax_with_temperature": S.softmax_with_temperature,
    "top_k_filter": S.top_k_filter,
    "top_p_filter": S.top_p_filter,
    "greedy_decode": S.greedy_decode,
    "length_penalty": S.length_penalty,
    "mask_tokens": mask_tokens,
}


# --------------------------------------------------------------------------- the tests


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "07", CORRECT, PACKAGE, at_least=5)


def test_greedy_check_uses_a_model_with_varied_output():
    from llmcourse.grading.chapters.ch07 import _prefix_scorer, _reference_greedy

    tokens = _reference_greedy(_prefix_scorer(), torch.tensor([2, 7]), 6)
    assert len(set(tokens[2:])) >= 4



def test_greedy_check_gpt_gives_varied_tokens():
    outputs = []

    def spy(step, ids, n, eos_id=None):
        outputs.append(_greedy_decode(step, ids, n, eos_id))
        return outputs[-1]

    run_checks(chapter, {"greedy_decode": spy}, "greedy_decode")
    gpt_output = [o for o in outputs if o[:3].tolist() == [3, 1, 4]]
    assert gpt_output and len(set(gpt_output[0][3:].tolist())) >= 4


def test_the_tail_check_uses_the_exact_harmonic_sums():
    from llmcourse.grading.chapters.ch07 import _zipf_tail

    assert abs(_zipf_tail(2, 1) - 1 / 3) < 1e-15
    assert abs(_zipf_tail(50_000, 10) - 0.743) < 1e-3  # the lesson's point: most draws come from the tail
    assert _zipf_tail(7, 7) == 0.0


def test_temperature_gradient_refuses_autograd():
    import torch.nn.functional as F

    def by_autograd(logits, temperature):
        t = torch.tensor(float(temperature), dtype=logits.dtype, requires_grad=True)
        p = F.softmax(logits / t, dim=-1)
        return torch.stack([torch.autograd.grad(q, t, retain_graph=True)[0] for q in p.flatten()]).view_as(p)

    def by_jacobian(logits, temperature):
        return torch.autograd.functional.jacobian(lambda t: torch.softmax(logits / t, -1),
                                                  torch.tensor(float(temperature), dtype=logits.dtype))

    def by_backward(logits, temperature):
        t = torch.tensor(float(temperature), dtype=logits.dtype, requires_grad=True)
        torch.softmax(logits / t, dim=-1).sum().backward()
        return torch.zeros_like(logits) + t.grad

    for builtin in (by_autograd, by_jacobian, by_backward):
        results = run_checks(chapter, {"temperature_gradient": builtin}, "temperature_gradient")
        failed = [r for r in results if not r.passed]
        assert failed and all("asks you to write" in r.message for r in failed), builtin.__name__
    leaf = torch.ones(2, requires_grad=True)  # autograd works again afterwards
    (leaf * 3).sum().backward()
    assert leaf.grad.tolist() == [3.0, 3.0]
