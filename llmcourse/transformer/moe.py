"""Mixture of experts (chapter 06): many feed-forward networks, and a router that sends each token to a few.

A MoE layer replaces the block's single FFN by ``n_experts`` FFNs ("experts")
and a router, a Linear layer d_model -> n_experts. For every token:

1. the router scores the experts; softmax turns the scores into probabilities;
2. the ``top_k`` most probable experts are chosen and their probabilities
   renormalised to sum to 1 (as in Mixtral; with top_k = 1 this gives weight 1);
3. the output is the weighted sum of the chosen experts' outputs.

The layer holds n_experts FFNs' parameters but each token only uses top_k of
them: more parameters at the same compute per token.

Left alone, a router tends to collapse onto a few experts. The Switch
Transformer's auxiliary loss (Fedus et al. 2022, eq. 4) pushes towards balance:
``n_experts * sum_i f_i * P_i`` with f_i the fraction of routing assignments that
went to expert i and P_i the mean router probability of expert i. It equals 1
when routing is uniform and n_experts when everything goes to one expert.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.feedforward import FFNS, make_ffn


def top_k_route(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(..., n_experts) router logits -> (weights, indices), each (..., k): top-k experts, weights renormalised.

    softmax over all experts, keep the k largest, divide by their sum (equivalently:
    softmax over the k largest logits). Indices are in decreasing order of weight.
    """
    n_experts = logits.shape[-1]
    if not 1 <= k <= n_experts:
        raise ValueError(f"top_k={k} must be between 1 and n_experts={n_experts}")
    probs = torch.softmax(logits, dim=-1)
    top, indices = probs.topk(k, dim=-1)
    return top / top.sum(dim=-1, keepdim=True), indices


def load_balancing_loss(router_probs: Tensor, expert_index: Tensor, n_experts: int) -> Tensor:
    """Switch-style auxiliary loss n_experts * sum_i f_i * P_i.

    ``router_probs``: (tokens, n_experts) softmax probabilities; ``expert_index``:
    (tokens,) or (tokens, k) chosen experts. f_i = share of the tokens x k
    assignments that went to expert i; P_i = mean probability of expert i.
    Equals 1 for uniform routing. (transformers' Mixtral version is k times this.)
    """
    probs = router_probs.reshape(-1, n_experts)
    index = expert_index.reshape(probs.shape[0], -1)
    counts = F.one_hot(index, n_experts).to(probs.dtype).sum(dim=(0, 1))  # assignments per expert
    f = counts / counts.sum()
    p = probs.mean(dim=0)
    return n_experts * (f * p).sum()


class TopKRouter(nn.Module):
    """A Linear gate d_model -> n_experts (no bias); forward gives (weights, indices, probs).

    ``weights``/``indices``: (tokens..., top_k), see :func:`top_k_route`;
    ``probs``: (tokens..., n_experts), the full softmax (for the balancing loss).
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int):
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and n_experts={n_experts}: "
                             f"a token cannot be sent to more experts than exist")
        self.n_experts, self.top_k = n_experts, top_k
        self.gate = nn.Linear(d_model, n_experts, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.gate(x)
        weights, indices = top_k_route(logits, self.top_k)
        return weights, indices, torch.softmax(logits, dim=-1)


class MoE(nn.Module):
    """A mixture-of-experts FFN: ``forward(x) -> (output, aux_loss)``, output shaped like x.

    ``ffn``: the experts' kind, ``"swiglu"`` (Mixtral) or ``"gelu"``/``"relu"``/
    ``"gelu_tanh"``; experts have no bias. ``aux_loss`` is
    :func:`load_balancing_loss` of this batch (add a small multiple, e.g. 0.01, to
    the training loss).
    """

    def __init__(self, d_model: int, d_hidden: int, n_experts: int, top_k: int, ffn: str = "swiglu"):
        super().__init__()
        if ffn not in FFNS:
            raise ValueError(f"unknown ffn {ffn!r}: choose one of {FFNS}")
        self.router = TopKRouter(d_model, n_experts, top_k)
        self.experts = nn.ModuleList(make_ffn(ffn, d_model, d_hidden, bias=False) for _ in range(n_experts))
        self.n_experts, self.top_k = n_experts, top_k

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, indices, probs = self.router(flat)            # (N, k), (N, k), (N, E)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(indices == e)             # the tokens that chose expert e, and in which slot
            if token.numel() == 0:
                continue
            y = expert(flat[token]) * weights[token, slot, None]
            out = out.index_add(0, token, y.to(out.dtype))
        return out.reshape(shape), load_balancing_loss(probs, indices, self.n_experts)

    def expert_counts(self, x: Tensor) -> Tensor:
        """How many tokens of x each expert receives (over all top_k slots)."""
        _, indices, _ = self.router(x.reshape(-1, x.shape[-1]))
        return torch.bincount(indices.flatten(), minlength=self.n_experts)


def moe_parameter_counts(d_model: int, d_hidden: int, n_experts: int, top_k: int, ffn: str = "swiglu") -> dict:
    """Parameters of one MoE layer: ``total`` (all experts + router) and ``active`` (top_k experts + router) per token."""
    per_expert = (3 if ffn == "swiglu" else 2) * d_model * d_hidden
    router = d_model * n_experts
    return {"per_expert": per_expert, "router": router, "total": n_experts * per_expert + router,
            "active": top_k * per_expert + router}


__all__ = ["top_k_route", "load_balancing_loss", "TopKRouter", "MoE", "moe_parameter_counts"]
