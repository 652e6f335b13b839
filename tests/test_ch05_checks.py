"""Tests of chapter 05's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub, fail every common mistake, refuse the built-in the learner
must write, and are quick and deterministic."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from check_contract import contract_tests
from wrong_solutions.ch05 import _Attention as _Build05  # the correct layer the wrong ones break

from llmcourse.transformer import attention as A
from llmcourse.transformer.recurrent_and_conv import causal_conv1d, lstm_cell_step
from llmcourse.grading.chapters.ch05 import chapter
from llmcourse.grading.checks import run_checks

# --------------------------------------------------------------------------- correct solutions, written here


def _attention_scores(q, k):
    return torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])


def _causal_mask(seq_len):
    return torch.ones(seq_len, seq_len).tril() > 0


def _attention(q, k, v, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.full_like(scores, -math.inf))
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)
    return weights @ v


def _split_heads(x, n_heads):
    head_dim = x.shape[-1] // n_heads
    return torch.stack(x.split(head_dim, dim=-1), dim=1)


def _merge_heads(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def _repeat_kv(x, n_rep):
    batch, kv, seq, head_dim = x.shape
    return x[:, :, None].expand(batch, kv, n_rep, seq, head_dim).reshape(batch, kv * n_rep, seq, head_dim)


def _kv_cache_bytes(n_layers, n_kv_heads, head_dim, bytes_per_value=2):
    keys = values = n_layers * n_kv_heads * head_dim
    return (keys + values) * bytes_per_value


def _attention_entropy(d_k, scaled=True, n_keys=16, n_queries=2000):
    # one query and its own keys at a time, in float64, from the weights themselves
    g = torch.Generator().manual_seed(d_k * 1000 + n_keys)
    total = 0.0
    for _ in range(n_queries):
        scores = torch.randn(n_keys, d_k, generator=g, dtype=torch.float64) @ torch.randn(
            d_k, generator=g, dtype=torch.float64)
        if scaled:
            scores = scores / math.sqrt(d_k)
        w = torch.exp(scores - scores.max())
        w = w / w.sum()
        total += float(-(w * torch.log(w.clamp_min(1e-300))).sum())
    return total / n_queries


def _attention_grads(q, k, v, grad_out):
    # written with einsum, naming every index: S_ij = q_i . k_j / sqrt(d), O_i = sum_j P_ij v_j
    scale = q.shape[-1] ** -0.5
    p = torch.softmax(torch.einsum("...id,...jd->...ij", q, k) * scale, dim=-1)
    grad_v = torch.einsum("...ij,...ie->...je", p, grad_out)
    grad_p = torch.einsum("...ie,...je->...ij", grad_out, v)
    grad_s = p * grad_p - p * torch.einsum("...ij,...ij->...i", p, grad_p)[..., None]
    grad_q = torch.einsum("...ij,...jd->...id", grad_s, k) * scale
    grad_k = torch.einsum("...ij,...id->...jd", grad_s, q) * scale
    return grad_q, grad_k, grad_v


def _lstm_cell_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    # gate by gate, each block of rows of the weights on its own
    d = h.shape[-1]
    block = lambda n: x @ w_ih[n * d:(n + 1) * d].T + b_ih[n * d:(n + 1) * d] + h @ w_hh[n * d:(n + 1) * d].T \
        + b_hh[n * d:(n + 1) * d]  # noqa: E731
    gate_in, gate_forget, gate_out = (1 / (1 + torch.exp(-block(n))) for n in (0, 1, 3))
    candidate = torch.tanh(block(2))
    c_new = gate_forget * c + gate_in * candidate
    return gate_out * torch.tanh(c_new), c_new


def _causal_conv1d(x, weight, bias=None, dilation=1):
    # nn.Conv1d padded on both sides, its last outputs cut off
    k = weight.shape[-1]
    conv = torch.nn.Conv1d(weight.shape[1], weight.shape[0], k, dilation=dilation, padding=(k - 1) * dilation,
                           bias=bias is not None).to(x.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv(x)[..., :x.shape[-1]]


CORRECT = {
    "CausalSelfAttention": _Build05,
    "attention_scores": _attention_scores,
    "causal_mask": _causal_mask,
    "attention": _attention,
    "split_heads": _split_heads,
    "merge_heads": _merge_heads,
    "repeat_kv": _repeat_kv,
    "kv_cache_bytes": _kv_cache_bytes,
    "attention_entropy": _attention_entropy,
    "attention_grads": _attention_grads,
    "lstm_cell_step": _lstm_cell_step,
    "causal_conv1d": _causal_conv1d,
}

PACKAGE = {
    "attention_scores": A.attention_scores,
    "causal_mask": A.causal_mask,
    "attention": lambda q, k, v, mask=None: A.scaled_dot_product_attention(q, k, v, mask=mask),
    "split_heads": A.split_heads,
    "merge_heads": A.merge_heads,
    "repeat_kv": A.repeat_kv,
    "kv_cache_bytes": A.kv_cache_bytes_per_token,
    "lstm_cell_step": lstm_cell_step,
    "causal_conv1d": causal_conv1d,
}


# --------------------------------------------------------------------------- the tests


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "05", CORRECT, PACKAGE, at_least=5)


def test_attention_refuses_torch_sdpa():
    def builtin(q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    results = run_checks(chapter, {"attention": builtin}, "attention")
    assert results and not any(r.passed for r in results)
    assert all("asks you to write" in r.message for r in results)
    q = torch.zeros(1, 2, 3)
    assert F.scaled_dot_product_attention(q, q, q).shape == (1, 2, 3)  # restored afterwards


def test_kv_cache_bytes_accepts_a_whole_float_but_not_gib():
    as_float = lambda n_layers, n_kv_heads, head_dim, bytes_per_value=2: float(
        _kv_cache_bytes(n_layers, n_kv_heads, head_dim, bytes_per_value))
    assert all(r.passed for r in run_checks(chapter, {"kv_cache_bytes": as_float}, "kv_cache_bytes"))
    in_gib = lambda n_layers, n_kv_heads, head_dim, bytes_per_value=2: (
        _kv_cache_bytes(n_layers, n_kv_heads, head_dim, bytes_per_value) / 2**30)
    assert not any(r.passed for r in run_checks(chapter, {"kv_cache_bytes": in_gib}, "kv_cache_bytes"))



def test_attention_grads_refuses_autograd():
    def by_autograd(q, k, v, grad_out):
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        return torch.autograd.grad(_attention(q, k, v), (q, k, v), grad_out)

    def by_backward(q, k, v, grad_out):
        q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
        _attention(q, k, v).backward(grad_out)
        return q.grad, k.grad, v.grad

    for builtin in (by_autograd, by_backward):
        results = run_checks(chapter, {"attention_grads": builtin}, "attention_grads")
        assert results and not any(r.passed for r in results)
        assert all("asks you to write" in r.message for r in results)
    x = torch.ones(2, requires_grad=True)
    (x * 3).sum().backward()  # restored afterwards
    assert torch.equal(x.grad, torch.full((2,), 3.0))


def test_lstm_cell_step_refuses_torch_lstm_kernels():
    def builtin(x, h, c, w_ih, w_hh, b_ih, b_hh):
        return torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)

    results = run_checks(chapter, {"lstm_cell_step": builtin}, "lstm_cell_step")
    assert results and not any(r.passed for r in results)
    assert all("asks you to write" in r.message for r in results)
    x = torch.zeros(1, 2)
    assert torch.lstm_cell(x, (x, x), torch.zeros(8, 2), torch.zeros(8, 2))[0].shape == (1, 2)  # restored
