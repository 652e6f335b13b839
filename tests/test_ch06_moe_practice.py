"""Chapter 06, mixture of experts in practice: shared experts, capacity and dropped tokens, routing tables.

Each is checked against an independent reference: a loop over tokens for the capacity rule and the layers,
``torch.topk`` for the routes, the dense computation when capacity is unlimited, ``sum(p.numel())`` for counts.
"""
from __future__ import annotations

import math

import pytest
import torch

from llmcourse.transformer.moe import MoE
from llmcourse.transformer.moe_practice import (
    KINDS,
    SharedExpertMoE,
    TinyMoELM,
    capacity_keep,
    dropped_fraction,
    expert_capacity,
    first_choices,
    frequent_words,
    moe_with_capacity,
    mutual_information_bits,
    routing_table,
    shared_moe_parameter_counts,
    token_kind,
    train_tiny_moe_lm,
)


def _keep_by_loop(indices: torch.Tensor, n_experts: int, factor: float) -> torch.Tensor:
    """The capacity rule written as the queue it describes: first choices first, then token order."""
    n, k = indices.shape
    capacity = math.floor(factor * n * k / n_experts + 1e-9)
    taken = [0] * n_experts
    keep = torch.zeros(n, k, dtype=torch.bool)
    for slot in range(k):
        for token in range(n):
            e = int(indices[token, slot])
            if taken[e] < capacity:
                taken[e] += 1
                keep[token, slot] = True
    return keep


@pytest.mark.parametrize("n,e,k,factor,seed", [(40, 4, 1, 1.0, 0), (64, 8, 2, 1.25, 1), (33, 5, 3, 0.5, 2),
                                               (16, 4, 2, 2.0, 3), (100, 10, 2, 0.7, 4)])
def test_capacity_keep_matches_a_loop(n, e, k, factor, seed):
    logits = torch.randn(n, e, generator=torch.Generator().manual_seed(seed)) * 2
    indices = logits.topk(k, dim=-1).indices
    keep = capacity_keep(indices, e, factor)
    assert torch.equal(keep, _keep_by_loop(indices, e, factor))
    per_expert = torch.bincount(indices[keep], minlength=e)
    assert int(per_expert.max()) <= expert_capacity(n, e, k, factor)


def test_capacity_numbers_and_dropped_fraction():
    assert expert_capacity(64, 8, 2, 1.0) == 16 and expert_capacity(64, 8, 2, 1.25) == 20
    assert expert_capacity(10, 4, 1, 1.0) == 2  # floor(2.5)
    with pytest.raises(ValueError):
        expert_capacity(10, 4, 1, 0.0)
    everything_to_0 = torch.zeros(12, 1, dtype=torch.long)
    d = dropped_fraction(everything_to_0, 4, 1.0)
    assert d["capacity"] == 3 and d["assignments"] == pytest.approx(9 / 12) and d["tokens"] == pytest.approx(9 / 12)
    balanced = (torch.arange(12) % 4)[:, None]
    assert dropped_fraction(balanced, 4, 1.0)["assignments"] == 0.0
    # more room never drops more
    idx = torch.randn(200, 8, generator=torch.Generator().manual_seed(5)).topk(2, -1).indices
    drops = [dropped_fraction(idx, 8, f)["assignments"] for f in (0.25, 0.5, 1.0, 1.5, 2.0, 8.0)]
    assert drops == sorted(drops, reverse=True) and drops[-1] == 0.0 and drops[0] > 0.5


def test_moe_with_unlimited_capacity_is_the_moe_and_dense():
    torch.manual_seed(0)
    moe = MoE(8, 12, n_experts=4, top_k=2).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    out, keep = moe_with_capacity(moe, x, None)
    assert keep.all() and torch.allclose(out, moe(x)[0])
    out_big, _ = moe_with_capacity(moe, x, 100.0)
    assert torch.allclose(out_big, out)
    # dense reference: every expert on every token, gates from torch.topk of the softmax
    flat = x.reshape(-1, 8)
    probs = torch.softmax(flat @ moe.router.gate.weight.T, -1)
    top = probs.topk(2, -1)
    gates = torch.zeros_like(probs).scatter(1, top.indices, top.values / top.values.sum(-1, keepdim=True))
    dense = sum(gates[:, e:e + 1] * moe.experts[e](flat) for e in range(4))
    assert torch.allclose(out.reshape(-1, 8), dense)


def test_moe_with_capacity_drops_exactly_the_overflow():
    torch.manual_seed(1)
    moe = MoE(8, 12, n_experts=4, top_k=2).double()
    x = torch.randn(30, 8, dtype=torch.float64)
    out, keep = moe_with_capacity(moe, x, 0.5)
    weights, indices, _ = moe.router(x)
    assert torch.equal(keep, _keep_by_loop(indices, 4, 0.5)) and not keep.all()
    for t in range(30):
        expected = sum((weights[t, j] * moe.experts[int(indices[t, j])](x[t]) for j in range(2) if keep[t, j]),
                       torch.zeros(8, dtype=torch.float64))
        assert torch.allclose(out[t], expected)


def test_shared_expert_moe_by_a_loop_and_counts():
    torch.manual_seed(2)
    layer = SharedExpertMoE(8, 12, n_routed=5, top_k=2, n_shared=2).double()
    x = torch.randn(7, 8, dtype=torch.float64)
    out, aux = layer(x)
    for t in range(7):
        w, idx, _ = layer.routed.router(x[t:t + 1])
        expected = sum(layer.shared[s](x[t]) for s in range(2))
        expected = expected + sum(w[0, j] * layer.routed.experts[int(idx[0, j])](x[t]) for j in range(2))
        assert torch.allclose(out[t], expected)
    assert aux.item() >= 1.0 - 1e-9
    counts = shared_moe_parameter_counts(8, 12, 5, 2, 2)
    assert counts["total"] == sum(p.numel() for p in layer.parameters())
    active = 4 * sum(p.numel() for p in layer.shared[0].parameters()) + layer.routed.router.gate.weight.numel()
    assert counts["active"] == active
    with pytest.raises(ValueError):
        SharedExpertMoE(8, 12, 4, 2, ffn="tanh")


def test_token_kinds_and_tables():
    freq = {" the"}
    assert token_kind(" the", freq) == "frequent words" and token_kind(" cat", freq) == "other words"
    assert token_kind(".\n\n") == "spaces & punctuation" and token_kind(" 2024") == "digits"
    assert token_kind("_name") == "code names" and token_kind("getName") == "code names"
    assert token_kind("ment") == "word pieces" and set(KINDS) >= {token_kind(p) for p in (" a", "1", ",", "x_")}
    assert frequent_words([" the", " the", " a", "b", " 1"], n=1) == {" the"}
    cats, counts = routing_table([0, 1, 1, 2], ["a", "b", "b", "a"], 3)
    assert cats == ["a", "b"] and counts.tolist() == [[1, 0, 1], [0, 2, 0]]
    assert mutual_information_bits(counts) == pytest.approx(1.0)          # the expert tells the category exactly
    assert mutual_information_bits(torch.tensor([[5, 5], [5, 5]])) == pytest.approx(0.0)


def test_tiny_moe_lm_trains_and_routes():
    ids = torch.arange(2000) % 50
    model, losses = train_tiny_moe_lm(ids, 50, steps=30, batch=8, context=16, d_model=16, n_heads=2, d_hidden=16,
                                      n_experts=4, top_k=2)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5
    routes = model.routes(ids[:32].reshape(2, 16))
    assert routes.shape == (2, 16, 2) and int(routes.max()) < 4
    assert torch.equal(first_choices(model, ids[:40], context=16), routes.reshape(-1, 2)[:, 0])
    h = model.norm2(model._router_input(ids[:16][None]))
    assert torch.equal(routes[:1], torch.topk(h @ model.moe.routed.router.gate.weight.T, 2, -1).indices)
    assert isinstance(TinyMoELM(50, d_model=16, n_heads=2, context=16, n_shared=1).moe.shared[0], torch.nn.Module)
