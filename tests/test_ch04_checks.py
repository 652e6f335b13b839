"""Tests of chapter 04's graded checks: each fails on an unwritten stub, passes on a correct implementation,
refuses the built-ins it asks you to write, and catches every common mistake in wrong_solutions/ch04.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from check_contract import assert_passes, assert_registers
from torch import nn

from llmcourse.transformer import embeddings as E
from llmcourse.transformer import positions as P
from llmcourse.grading.chapters.ch04 import chapter
from llmcourse.grading.checks import run_checks


def _one_hot_embed(ids, weight):
    return F.one_hot(ids.long(), weight.shape[0]).to(weight.dtype) @ weight


def _sinusoidal_encoding(n_positions, d_model):
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * torch.exp(
        -math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.empty(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = angles.sin(), angles.cos()
    return table.float()


def _rope_rotate(x, positions, base=10000.0):
    """The paper's complex-number view, re-ordered to LLaMA's (i, i + half) pairs: independent of llmcourse."""
    half = x.shape[-1] // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    turn = torch.polar(torch.ones(len(positions), half, dtype=torch.float64),
                       positions.double()[:, None] * theta)
    z = torch.complex(x[..., :half].double(), x[..., half:].double()) * turn
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def _alibi_slopes(n_heads):
    p = 1 << (n_heads.bit_length() - 1)
    slopes = [2 ** (-8 * (h + 1) / p) for h in range(p)]
    slopes += [2 ** (-8 * (h + 1) / (2 * p)) for h in range(0, 2 * p, 2)][: n_heads - p]
    return torch.tensor(slopes)


def _alibi_bias(n_heads, seq_len):
    slopes = torch.tensor([2 ** (-8 * (h + 1) / n_heads) for h in range(n_heads)])
    bias = torch.full((n_heads, seq_len, seq_len), float("-inf"))
    for i in range(seq_len):
        for j in range(i + 1):
            bias[:, i, j] = -slopes * (i - j)
    return bias


def _alibi_look_back(n_heads, seq_len, head):
    # the last query's weights over its keys, written with a plain loop over the distances
    slope = 2 ** (-8 * (head + 1) / n_heads)
    weights = [math.exp(-slope * d) for d in range(seq_len)]
    return sum(d * w for d, w in enumerate(weights)) / sum(weights)


def _skipgram_grads(center_table, context_table, center_ids, context_ids):
    # one pair at a time: d(-log p_o)/dz = p - onehot(o), then the chain rule through z = context_table @ u
    grad_center, grad_context = torch.zeros_like(center_table), torch.zeros_like(context_table)
    n = len(center_ids)
    for c, o in zip(center_ids.tolist(), context_ids.tolist()):
        u = center_table[c]
        z = context_table @ u
        p = (z - z.max()).exp() / (z - z.max()).exp().sum()
        p[o] -= 1
        grad_center[c] += context_table.T @ p / n
        grad_context += torch.outer(p, u) / n
    return grad_center, grad_context


CORRECT = {
    "one_hot_embed": _one_hot_embed,
    "cosine_similarity": lambda a, b: (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)),
    "sinusoidal_encoding": _sinusoidal_encoding,
    "rope_rotate": _rope_rotate,
    "alibi_slopes": _alibi_slopes,
    "alibi_bias": _alibi_bias,
    "alibi_look_back": _alibi_look_back,
    "skipgram_grads": _skipgram_grads,
}


def test_chapter_registers_its_exercises():
    assert_registers(chapter, "04", CORRECT, at_least=5)


@pytest.mark.parametrize("exercise", sorted(CORRECT))
def test_checks_pass_for_a_correct_implementation(exercise):
    assert_passes(chapter, exercise, CORRECT[exercise])


def test_package_functions_pass_the_checks():
    def rope(x, positions, base=10000.0):
        cos, sin = P.rope_frequencies(x.shape[-1], int(positions.max()) + 1, base, dtype=torch.float64)
        return P.apply_rope(x.double(), cos, sin, positions).to(x.dtype)

    ns = {
        "one_hot_embed": E.one_hot_embed,
        "cosine_similarity": E.cosine_similarity,
        "sinusoidal_encoding": P.sinusoidal_encoding,
        "rope_rotate": rope,
        "alibi_slopes": P.alibi_slopes,
        "alibi_bias": P.alibi_bias,
    }
    results = [r for exercise in ns for r in run_checks(chapter, ns, exercise)]  # the package has no experiment
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]


def _skipgram_by_autograd(center_table, context_table, center_ids, context_ids, how):
    c, x = center_table.clone().requires_grad_(), context_table.clone().requires_grad_()
    loss = F.cross_entropy(c[center_ids] @ x.T, context_ids)
    if how == "grad":
        return torch.autograd.grad(loss, (c, x))
    loss.backward()
    return c.grad, x.grad


@pytest.mark.parametrize("exercise, builtin", [
    ("one_hot_embed", lambda ids, w: F.embedding(ids, w)),
    ("one_hot_embed", lambda ids, w: torch.embedding(w, ids)),
    ("one_hot_embed", lambda ids, w: nn.Embedding.from_pretrained(w, freeze=False)(ids)),
    ("one_hot_embed", lambda ids, w: w.index_select(0, ids.flatten()).reshape(*ids.shape, -1)),
    ("cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=-1)),
    ("cosine_similarity", lambda a, b: torch.cosine_similarity(a, b, dim=-1)),
    ("cosine_similarity", lambda a, b: (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)),
    ("skipgram_grads", lambda c, x, ci, xi: _skipgram_by_autograd(c, x, ci, xi, "grad")),
    ("skipgram_grads", lambda c, x, ci, xi: _skipgram_by_autograd(c, x, ci, xi, "backward")),
])
def test_checks_refuse_the_builtin_they_ask_you_to_write(exercise, builtin):
    results = run_checks(chapter, {exercise: builtin}, exercise)
    failed = [r for r in results if not r.passed]
    assert failed and all("asks you to write" in r.message for r in failed)
    w = torch.randn(4, 2)  # the built-ins are back afterwards
    assert torch.equal(F.embedding(torch.tensor([1]), w), w[1:2])
    assert F.cosine_similarity(torch.ones(3), torch.ones(3), dim=0).item() == pytest.approx(1.0)
    x = torch.ones(2, requires_grad=True)
    (x * 3).sum().backward()
    assert torch.equal(x.grad, torch.full((2,), 3.0))


def test_checks_are_deterministic_and_quick():
    import time

    start = time.perf_counter()
    first = [r.to_dict() for r in run_checks(chapter, CORRECT)]
    elapsed = time.perf_counter() - start
    second = [r.to_dict() for r in run_checks(chapter, CORRECT)]
    assert first == second
    assert elapsed < len(chapter.checks) * 1.0
