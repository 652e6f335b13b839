"""Common mistakes in chapter 06's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

from typing import Callable

import torch

# --------------------------------------------------------------------------- rms_norm


def rms_norm_subtracts_mean(x, weight, eps=1e-6):
    """Centres the vector first (that is LayerNorm without a bias, not RMSNorm)."""
    x = x - x.mean(dim=-1, keepdim=True)
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def rms_norm_sum_not_mean(x, weight, eps=1e-6):
    """Uses the sum of squares (the L2 norm) instead of their mean."""
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + eps) * weight


def rms_norm_eps_outside_sqrt(x, weight, eps=1e-6):
    """Adds eps after the square root."""
    return x / (torch.sqrt((x * x).mean(dim=-1, keepdim=True)) + eps) * weight


def rms_norm_over_first_dim(x, weight, eps=1e-6):
    """Averages over the first dimension instead of the features."""
    return x / torch.sqrt((x * x).mean(dim=0, keepdim=True) + eps) * weight


# --------------------------------------------------------------------------- layer_norm


def layer_norm_unbiased_variance(x, weight, bias, eps=1e-5):
    """Uses torch's default .var(), which divides by d - 1."""
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + eps) * weight + bias


def layer_norm_times_mean(x, weight, bias, eps=1e-5):
    """The formula written with products: multiplies by the mean and by beta instead of subtracting and adding."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return weight * (x * mean) / torch.sqrt(var + eps) * bias


def layer_norm_forgets_bias(x, weight, bias, eps=1e-5):
    """Never adds the bias."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight


def layer_norm_divides_by_variance(x, weight, bias, eps=1e-5):
    """Divides by the variance instead of the standard deviation."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / (var + eps) * weight + bias


# --------------------------------------------------------------------------- swiglu


def swiglu_silu_on_up(x, W_gate, W_up, W_down):
    """Puts the activation on the up projection instead of the gate."""
    up = x @ W_up.T
    return ((x @ W_gate.T) * (up * torch.sigmoid(up))) @ W_down.T


def swiglu_sigmoid_gate(x, W_gate, W_up, W_down):
    """Uses sigmoid instead of silu (that is GLU, not SwiGLU)."""
    return (torch.sigmoid(x @ W_gate.T) * (x @ W_up.T)) @ W_down.T


def swiglu_adds_instead_of_multiplies(x, W_gate, W_up, W_down):
    """Adds the two branches."""
    g = x @ W_gate.T
    return (g * torch.sigmoid(g) + x @ W_up.T) @ W_down.T


# --------------------------------------------------------------------------- prenorm_block


def block_postnorm(x, attn, ffn, norm1, norm2):
    """The post-norm order: normalise after the residual addition."""
    h = norm1(x + attn(x))
    return norm2(h + ffn(h))


def block_residual_of_normalised(x, attn, ffn, norm1, norm2):
    """Adds the sub-layer's output to the normalised input instead of the raw one."""
    h = norm1(x)
    h = h + attn(h)
    g = norm2(h)
    return g + ffn(g)


def block_parallel(x, attn, ffn, norm1, norm2):
    """Runs attention and FFN in parallel on x (GPT-J style), not one after the other."""
    return x + attn(norm1(x)) + ffn(norm2(x))


def block_swapped_norms(x, attn, ffn, norm1, norm2):
    """Uses norm2 before attention and norm1 before the FFN."""
    h = x + attn(norm2(x))
    return h + ffn(norm1(h))


# --------------------------------------------------------------------------- top_k_route


def route_unnormalised(logits, k):
    """Keeps the softmax probabilities of the chosen experts without renormalising them."""
    probs = torch.softmax(logits, dim=-1)
    weights, indices = probs.topk(k, dim=-1)
    return weights, indices


def route_smallest(logits, k):
    """Takes the k smallest scores."""
    probs = torch.softmax(logits, dim=-1)
    weights, indices = probs.topk(k, dim=-1, largest=False)
    return weights / weights.sum(-1, keepdim=True), indices


def route_softmax_over_tokens(logits, k):
    """Applies softmax over the tokens (dim 0) instead of the experts."""
    probs = torch.softmax(logits, dim=0)
    weights, indices = probs.topk(k, dim=-1)
    return weights / weights.sum(-1, keepdim=True), indices


def route_logits_as_weights(logits, k):
    """Returns the raw logits of the chosen experts divided by their sum."""
    weights, indices = logits.topk(k, dim=-1)
    return weights / weights.sum(-1, keepdim=True), indices


# --------------------------------------------------------------------------- count_block_parameters


def count_without_biases(d_model, d_hidden, n_heads, n_kv_heads=None, bias=True, ffn="gelu", norm="layernorm"):
    """Forgets every bias (and the LayerNorm's beta)."""
    n_mats = 3 if ffn == "swiglu" else 2
    kv = (n_kv_heads or n_heads) * (d_model // n_heads)
    return 2 * d_model * d_model + 2 * d_model * kv + n_mats * d_model * d_hidden + 2 * d_model


def count_swiglu_two_matrices(d_model, d_hidden, n_heads, n_kv_heads=None, bias=True, ffn="gelu",
                              norm="layernorm"):
    """Counts two FFN matrices even for SwiGLU, and ignores grouped key/value heads."""
    d = d_model
    attention = 4 * d * d + (4 * d if bias else 0)
    ffn_params = 2 * d * d_hidden + ((d_hidden + d) if bias else 0)
    norms = 2 * (2 * d if norm == "layernorm" else d)
    return attention + ffn_params + norms


def count_one_norm(d_model, d_hidden, n_heads, n_kv_heads=None, bias=True, ffn="gelu", norm="layernorm"):
    """Counts a single norm per block."""
    d = d_model
    kv = (n_kv_heads or n_heads) * (d // n_heads)
    attention = 2 * d * d + 2 * d * kv + ((2 * d + 2 * kv) if bias else 0)
    n_mats = 3 if ffn == "swiglu" else 2
    ffn_params = n_mats * d * d_hidden + ((d_hidden * (n_mats - 1) + d) if bias else 0)
    return attention + ffn_params + (2 * d if norm == "layernorm" else d)


# --------------------------------------------------------------------------- MixtureOfExperts (build the module)


class _Expert(torch.nn.Module):
    def __init__(self, d_model, d_hidden):
        super().__init__()
        self.gate_proj = torch.nn.Linear(d_model, d_hidden, bias=False)
        self.up_proj = torch.nn.Linear(d_model, d_hidden, bias=False)
        self.down_proj = torch.nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class _MoE(torch.nn.Module):
    """A correct mixture of experts (the checks must pass it); the wrong ones below each change one part."""

    def __init__(self, d_model, d_hidden, n_experts, top_k):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError("top_k must be between 1 and n_experts")
        self.n_experts, self.top_k = n_experts, top_k
        self.router = torch.nn.Linear(d_model, n_experts, bias=False)
        self.experts = torch.nn.ModuleList(_Expert(d_model, d_hidden) for _ in range(n_experts))

    def route(self, flat):
        probs = self.router(flat).softmax(dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        return weights / weights.sum(dim=-1, keepdim=True), chosen, probs

    def aux_loss(self, probs, chosen):
        share = torch.stack([(chosen == e).sum() for e in range(self.n_experts)]).to(probs.dtype) / chosen.numel()
        return self.n_experts * (share * probs.mean(dim=0)).sum()

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        weights, chosen, probs = self.route(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(chosen == e, as_tuple=True)
            if len(token):
                out = out.index_add(0, token, expert(flat[token]) * weights[token, slot].unsqueeze(-1))
        return out.reshape(x.shape), self.aux_loss(probs, chosen)


class MoEWithoutRenormalising(_MoE):
    """Weights the chosen experts by their raw softmax probabilities, which do not sum to 1."""

    def route(self, flat):
        probs = self.router(flat).softmax(dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        return weights, chosen, probs


class MoEWeightsByLogits(_MoE):
    """Weights the chosen experts by their raw router scores instead of probabilities."""

    def route(self, flat):
        logits = self.router(flat)
        weights, chosen = logits.topk(self.top_k, dim=-1)
        return weights, chosen, logits.softmax(dim=-1)


class MoEDense(_MoE):
    """Runs every expert on every token and multiplies the unchosen ones by zero: right answer, no saving."""

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        weights, chosen, probs = self.route(flat)
        gates = torch.zeros(flat.shape[0], self.n_experts, dtype=flat.dtype).scatter(1, chosen, weights)
        out = sum(gates[:, e:e + 1] * expert(flat) for e, expert in enumerate(self.experts))
        return out.reshape(x.shape), self.aux_loss(probs, chosen)


class MoEDetachedWeights(_MoE):
    """Detaches the routing weights, so the router never learns."""

    def route(self, flat):
        weights, chosen, probs = super().route(flat)
        return weights.detach(), chosen, probs


class MoEBalanceWithoutTopK(_MoE):
    """Counts only each token's first choice in the balancing loss's shares f_i."""

    def aux_loss(self, probs, chosen):
        return super().aux_loss(probs, chosen[:, :1])


class MoEBalanceOfMeanProbabilities(_MoE):
    """Leaves out the factor n_experts, so a uniform router scores 1 / n_experts instead of 1."""

    def aux_loss(self, probs, chosen):
        return super().aux_loss(probs, chosen) / self.n_experts


class MoEReLUExperts(_MoE):
    """Gives the experts a plain ReLU MLP path: silu replaced by relu."""

    def forward(self, x):
        for expert in self.experts:
            expert.forward = lambda h, ex=expert: ex.down_proj(torch.relu(ex.gate_proj(h)) * ex.up_proj(h))
        return super().forward(x)


# --------------------------------------------------------------------------- residual_stream_rms


def _stream(n_layers, prenorm, d_model, n_heads, measure):
    from llmcourse.transformer.block import TransformerBlock

    blocks = [TransformerBlock(d_model, n_heads, prenorm=prenorm).eval() for _ in range(n_layers)]
    x, values = torch.randn(8, 32, d_model), []
    with torch.no_grad():
        for block in blocks:
            x = block(x)
            values.append(measure(x))
    return values


def stream_ignores_prenorm(n_layers, prenorm=True, d_model=64, n_heads=4):
    """Always builds pre-norm blocks, so it never sees post-norm's stream."""
    return _stream(n_layers, True, d_model, n_heads, lambda x: float(x.pow(2).mean().sqrt()))


def stream_mean_absolute_value(n_layers, prenorm=True, d_model=64, n_heads=4):
    """Measures mean(|x|) instead of the root mean square (about 0.8 of it for Gaussian numbers)."""
    return _stream(n_layers, prenorm, d_model, n_heads, lambda x: float(x.abs().mean()))


def stream_variance(n_layers, prenorm=True, d_model=64, n_heads=4):
    """Returns the mean square (the variance), not its square root."""
    return _stream(n_layers, prenorm, d_model, n_heads, lambda x: float(x.pow(2).mean()))


def stream_measured_after_a_norm(n_layers, prenorm=True, d_model=64, n_heads=4):
    """Measures the stream after a LayerNorm, as the next block's attention sees it: always about 1."""
    return _stream(n_layers, prenorm, d_model, n_heads,
                   lambda x: float(torch.nn.functional.layer_norm(x, (x.shape[-1],)).pow(2).mean().sqrt()))


# --------------------------------------------------------------------------- rms_norm_grads


def _rms(x, eps):
    return torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def rms_grads_without_the_shared_term(x, weight, grad_out, eps=1e-6):
    """Treats r as a constant: forgets that every output depends on x_j through r."""
    r = _rms(x, eps)
    lead = tuple(range(x.dim() - 1))
    return grad_out * weight / r, (grad_out * x / r).sum(dim=lead)


def rms_grads_weight_not_summed(x, weight, grad_out, eps=1e-6):
    """Averages grad_weight over the positions instead of summing it."""
    r, h = _rms(x, eps), grad_out * weight
    lead = tuple(range(x.dim() - 1))
    return h / r - x * (h * x).mean(-1, keepdim=True) / r ** 3, (grad_out * x / r).mean(dim=lead)


def rms_grads_sum_instead_of_mean(x, weight, grad_out, eps=1e-6):
    """Uses the sum over the features where the derivative of the mean needs 1/n."""
    r, h = _rms(x, eps), grad_out * weight
    lead = tuple(range(x.dim() - 1))
    return h / r - x * (h * x).sum(-1, keepdim=True) / r ** 3, (grad_out * x / r).sum(dim=lead)


def rms_grads_eps_outside_sqrt(x, weight, grad_out, eps=1e-6):
    """Puts eps outside the square root: r = sqrt(mean(x^2)) + eps."""
    r, h = x.pow(2).mean(-1, keepdim=True).sqrt() + eps, grad_out * weight
    lead = tuple(range(x.dim() - 1))
    return h / r - x * (h * x).mean(-1, keepdim=True) / r ** 3, (grad_out * x / r).sum(dim=lead)


# --------------------------------------------------------------------------- capacity_keep


def _keep(indices, n_experts, capacity, order, full=lambda taken, capacity: taken >= capacity):
    keep = torch.zeros(indices.shape, dtype=torch.bool)
    taken = [0] * n_experts
    for token, slot in order:
        expert = int(indices[token, slot])
        if not full(taken[expert], capacity):
            taken[expert] += 1
            keep[token, slot] = True
    return keep


def _slot_major(indices):
    return [(t, s) for s in range(indices.shape[1]) for t in range(indices.shape[0])]


def keep_token_by_token(indices, n_experts, capacity_factor):
    """Serves each token's choices together (token-major), so a second choice can push out a first choice."""
    import math
    n, k = indices.shape
    order = [(t, s) for t in range(n) for s in range(k)]
    return _keep(indices, n_experts, math.floor(capacity_factor * n * k / n_experts), order)


def keep_ceil_capacity(indices, n_experts, capacity_factor):
    """Rounds the capacity up instead of down."""
    import math
    n, k = indices.shape
    return _keep(indices, n_experts, math.ceil(capacity_factor * n * k / n_experts - 1e-9), _slot_major(indices))


def keep_capacity_without_k(indices, n_experts, capacity_factor):
    """Forgets that each token makes k assignments: capacity = factor * n_tokens / n_experts."""
    import math
    n, _ = indices.shape
    return _keep(indices, n_experts, math.floor(capacity_factor * n / n_experts), _slot_major(indices))


def keep_one_too_many(indices, n_experts, capacity_factor):
    """Off by one: an expert accepts capacity + 1 assignments."""
    import math
    n, k = indices.shape
    return _keep(indices, n_experts, math.floor(capacity_factor * n * k / n_experts), _slot_major(indices),
                 full=lambda taken, capacity: taken > capacity)


WRONG: dict[str, list[Callable]] = {
    "capacity_keep": [keep_token_by_token, keep_ceil_capacity, keep_capacity_without_k, keep_one_too_many],
    "MixtureOfExperts": [MoEWithoutRenormalising, MoEWeightsByLogits, MoEDense, MoEDetachedWeights,
                         MoEBalanceWithoutTopK, MoEBalanceOfMeanProbabilities, MoEReLUExperts],
    "rms_norm": [rms_norm_subtracts_mean, rms_norm_sum_not_mean, rms_norm_eps_outside_sqrt, rms_norm_over_first_dim],
    "layer_norm": [layer_norm_unbiased_variance, layer_norm_times_mean, layer_norm_forgets_bias,
                   layer_norm_divides_by_variance],
    "swiglu": [swiglu_silu_on_up, swiglu_sigmoid_gate, swiglu_adds_instead_of_multiplies],
    "prenorm_block": [block_postnorm, block_residual_of_normalised, block_parallel, block_swapped_norms],
    "top_k_route": [route_unnormalised, route_smallest, route_softmax_over_tokens, route_logits_as_weights],
    "count_block_parameters": [count_without_biases, count_swiglu_two_matrices, count_one_norm],
    "residual_stream_rms": [stream_ignores_prenorm, stream_mean_absolute_value, stream_variance,
                            stream_measured_after_a_norm],
    "rms_norm_grads": [rms_grads_without_the_shared_term, rms_grads_weight_not_summed, rms_grads_sum_instead_of_mean,
                       rms_grads_eps_outside_sqrt],
}
