"""Tests of chapter 06's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub, fail every common mistake, refuse the built-in norms the
learner must write, and are quick and deterministic."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from check_contract import contract_tests
from wrong_solutions.ch06 import _MoE as _Build06  # the correct layer the wrong ones break

from llmcourse.transformer import moe, moe_practice, norms
from llmcourse.grading.chapters.ch06 import chapter
from llmcourse.grading.checks import run_checks

# --------------------------------------------------------------------------- correct solutions, written here


def _rms_norm(x, weight, eps=1e-6):
    return weight * x * (x.square().mean(-1, keepdim=True) + eps).rsqrt()


def _layer_norm(x, weight, bias, eps=1e-5):
    centred = x - x.mean(-1, keepdim=True)
    return centred * (centred.square().mean(-1, keepdim=True) + eps).rsqrt() * weight + bias


def _swiglu(x, W_gate, W_up, W_down):
    g = torch.einsum("...i,hi->...h", x, W_gate)
    u = torch.einsum("...i,hi->...h", x, W_up)
    return torch.einsum("...h,oh->...o", g / (1 + torch.exp(-g)) * u, W_down)


def _prenorm_block(x, attn, ffn, norm1, norm2):
    after_attention = x + attn(norm1(x))
    return after_attention + ffn(norm2(after_attention))


def _top_k_route(logits, k):
    top_logits, indices = torch.sort(logits, dim=-1, descending=True)
    top_logits, indices = top_logits[..., :k], indices[..., :k]
    e = torch.exp(top_logits - top_logits[..., :1])
    return e / e.sum(-1, keepdim=True), indices


def _count_block_parameters(d_model, d_hidden, n_heads, n_kv_heads=None, bias=True, ffn="gelu", norm="layernorm"):
    kv_dim = (n_heads if n_kv_heads is None else n_kv_heads) * (d_model // n_heads)
    q_o = 2 * (d_model * d_model + (d_model if bias else 0))
    k_v = 2 * (d_model * kv_dim + (kv_dim if bias else 0))
    ins = 2 if ffn == "swiglu" else 1
    ffn_params = ins * (d_model * d_hidden + (d_hidden if bias else 0)) + d_hidden * d_model + (d_model if bias else 0)
    norm_params = 2 * d_model * (2 if norm == "layernorm" else 1)
    return q_o + k_v + ffn_params + norm_params


def _residual_stream_rms(n_layers, prenorm=True, d_model=64, n_heads=4):
    from llmcourse.transformer.block import make_stack

    stack = make_stack(n_layers, d_model, n_heads, prenorm=prenorm, seed=7).eval()
    x, sizes = torch.randn(8, 32, d_model, generator=torch.Generator().manual_seed(8)), []
    with torch.no_grad():
        for block in stack:
            x = block(x)
            sizes.append(torch.linalg.vector_norm(x).item() / x.numel() ** 0.5)
    return sizes


def _rms_norm_grads(x, weight, grad_out, eps=1e-6):
    n = x.shape[-1]
    inv = (x.square().sum(-1, keepdim=True) / n + eps).rsqrt()
    h = grad_out * weight
    grad_x = inv * h - inv.pow(3) * x * torch.einsum("...i,...i->...", h, x)[..., None] / n
    grad_weight = (grad_out * x * inv).reshape(-1, n).sum(0)
    return grad_x, grad_weight


def _capacity_keep(indices, n_experts, capacity_factor):
    """Vectorised: each assignment's place in its expert's queue, first choices first."""
    n, k = indices.shape
    capacity = int(capacity_factor * n * k / n_experts + 1e-9)
    order = indices.T.reshape(-1)
    place = torch.zeros_like(order)
    for e in range(n_experts):
        mine = order == e
        place[mine] = torch.arange(1, int(mine.sum()) + 1)
    return (place <= capacity).reshape(k, n).T


CORRECT = {
    "MixtureOfExperts": _Build06,
    "capacity_keep": _capacity_keep,
    "rms_norm": _rms_norm,
    "layer_norm": _layer_norm,
    "swiglu": _swiglu,
    "prenorm_block": _prenorm_block,
    "top_k_route": _top_k_route,
    "count_block_parameters": _count_block_parameters,
    "residual_stream_rms": _residual_stream_rms,
    "rms_norm_grads": _rms_norm_grads,
}


def _package_count(d_model, d_hidden, n_heads, n_kv_heads=None, bias=True, ffn="gelu", norm="layernorm"):
    from llmcourse.transformer.counting import BlockConfig, count_parameters

    config = BlockConfig(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads, d_hidden=d_hidden, norm=norm,
                         ffn=ffn, bias=bias)
    return count_parameters(config)["total"]


PACKAGE = {
    "rms_norm": norms.rms_norm,
    "layer_norm": norms.layer_norm,
    "top_k_route": moe.top_k_route,
    "capacity_keep": moe_practice.capacity_keep,
    "count_block_parameters": _package_count,
}


# --------------------------------------------------------------------------- the tests


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "06", CORRECT, PACKAGE, at_least=5)


@pytest.mark.parametrize("exercise,builtin", [
    ("rms_norm", lambda x, weight, eps=1e-6: F.rms_norm(x, (x.shape[-1],), weight, eps=eps)),
    ("layer_norm", lambda x, weight, bias, eps=1e-5: F.layer_norm(x, (x.shape[-1],), weight, bias, eps)),
])
def test_norm_exercises_refuse_torch_norms(exercise, builtin):
    results = run_checks(chapter, {exercise: builtin}, exercise)
    assert results and not any(r.passed for r in results)
    assert all("asks you to write" in r.message for r in results)
    x = torch.ones(2, 3)
    assert F.layer_norm(x, (3,)).shape == (2, 3)  # restored afterwards


def test_count_accepts_a_whole_float_but_not_millions():
    as_float = lambda *a: float(_count_block_parameters(*a))  # noqa: E731
    assert all(r.passed for r in run_checks(chapter, {"count_block_parameters": as_float}, "count_block_parameters"))
    in_millions = lambda *a: _count_block_parameters(*a) / 1e6  # noqa: E731
    assert not any(r.passed for r in run_checks(chapter, {"count_block_parameters": in_millions},
                                                "count_block_parameters"))

