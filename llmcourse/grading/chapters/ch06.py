"""Graded checks of chapter 06, "The Transformer block".

Six warm-up exercises, each checked on seeded random inputs against an independent
reference: PyTorch's ``F.layer_norm`` / ``F.rms_norm``, the package's
``SwiGLU``, ``TransformerBlock`` and ``top_k_route``, and ``sum(p.numel())`` of
a real block. The norms must be written by hand, so their checks run the
learner's function with the PyTorch norm functions switched off. Each exercise
is checked on its own: no check needs any other exercise's function.

Then a module to build, ``MixtureOfExperts``: the weights of transformers'
Mixtral MoE layer (random, seeded) are loaded into the learner's layer, whose
outputs and gradients must equal it; each expert must run only on the tokens
routed to it, and the Switch balancing loss must equal its formula.

Last, an experiment and a derivation:

* ``residual_stream_rms``, an experiment: the size of the residual stream after
  each block of a freshly built stack, compared with fresh stacks built here,
  and with what the block's order predicts (post-norm stays at 1, pre-norm grows);
* ``rms_norm_grads``, a derivation: the gradients of RMSNorm with respect to its
  input and its weight, compared with ``torch.autograd`` through ``F.rms_norm``
  while every autograd entry point is switched off for the learner's code;
* ``capacity_keep``, mixture of experts in practice: which assignments fit an
  expert's capacity, compared with the queue the rule describes (first choices
  first, floor of the capacity), on skewed routes and on a case made by hand.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from llmcourse.transformer.block import TransformerBlock
from llmcourse.transformer.feedforward import SwiGLU
from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    beside_the_learner,
    call,
    call_object,
    expect,
    expect_close,
    expect_shape,
    expect_tensors,
    forbid,
    forbid_autograd,
    run_learner,
    seeded_randn,
)
from llmcourse.transformer.moe import top_k_route as reference_top_k_route

chapter = Chapter("06", "The Transformer block")

Namespace = Mapping[str, Any]

_NORMS = [(F, "layer_norm", "F.layer_norm"), (F, "rms_norm", "F.rms_norm"),
          (torch, "layer_norm", "torch.layer_norm"), (torch, "rms_norm", "torch.rms_norm")]


def _call_without_norms(ns: Namespace, name: str, *args: Any) -> Any:
    with forbid(name, _NORMS):
        return call(ns, name, *args)


# --------------------------------------------------------------------------- rms_norm

@chapter.check("rms_norm", points=1, hint="Divide each vector (the last dimension) by the square root of the MEAN "
               "of its squares plus eps, then multiply by the weight. Do not subtract the mean.")
def rms_norm_values(ns: Namespace) -> None:
    x, w = seeded_randn(2, 5, 16, seed=1) * 3 + 1, seeded_randn(16, seed=2)
    expect_close(_call_without_norms(ns, "rms_norm", x, w, 1e-6), F.rms_norm(x, (16,), w, eps=1e-6),
                 "rms_norm(x (2, 5, 16), weight (16,), eps=1e-6)")


@chapter.check("rms_norm", points=1, hint="eps goes inside the square root, added to the mean of the squares; "
               "use the eps you are given. Normalise over the last dimension only.")
def rms_norm_eps_and_shapes(ns: Namespace) -> None:
    for shape, eps, seed in [((7,), 1e-2, 3), ((3, 4), 0.5, 4), ((2, 3, 8), 1e-6, 5)]:
        x, w = seeded_randn(*shape, seed=seed) * 0.1, seeded_randn(shape[-1], seed=seed + 10)
        out = expect_shape(_call_without_norms(ns, "rms_norm", x, w, eps), shape, f"rms_norm of shape {shape}")
        expect_close(out, F.rms_norm(x, (shape[-1],), w, eps=eps), f"rms_norm with shape {shape}, eps={eps}")


@chapter.check("rms_norm", points=1, hint="With weight all ones the output's root mean square must be 1 for every "
               "vector (when eps is 0).")
def rms_norm_unit_rms(ns: Namespace) -> None:
    x = seeded_randn(6, 32, seed=6) * 5
    out = _call_without_norms(ns, "rms_norm", x, torch.ones(32), 0.0)
    expect_close(torch.as_tensor(out).pow(2).mean(-1), torch.ones(6), "mean of squares of rms_norm(x, ones, 0)")


# --------------------------------------------------------------------------- layer_norm

@chapter.check("layer_norm", points=1, hint="Subtract the mean of each vector (last dimension), divide by "
               "sqrt(variance + eps), then multiply by weight and ADD bias.")
def layer_norm_values(ns: Namespace) -> None:
    x, w, b = seeded_randn(2, 5, 16, seed=11) * 2 + 3, seeded_randn(16, seed=12), seeded_randn(16, seed=13)
    expect_close(_call_without_norms(ns, "layer_norm", x, w, b, 1e-5), F.layer_norm(x, (16,), w, b, 1e-5),
                 "layer_norm(x (2, 5, 16), weight, bias, eps=1e-5)")


@chapter.check("layer_norm", points=1, hint="The variance is the mean of squared deviations: divide by d, not d - 1 "
               "(torch's .var() divides by d - 1 unless told otherwise). Visible for short vectors.")
def layer_norm_biased_variance(ns: Namespace) -> None:
    x, w, b = seeded_randn(5, 3, seed=14), torch.ones(3), torch.zeros(3)
    expect_close(_call_without_norms(ns, "layer_norm", x, w, b, 1e-5), F.layer_norm(x, (3,), w, b, 1e-5),
                 "layer_norm of vectors of length 3")


@chapter.check("layer_norm", points=1, hint="eps belongs inside the square root, and normalisation is over the last "
               "dimension only, whatever the number of leading dimensions.")
def layer_norm_eps_and_shapes(ns: Namespace) -> None:
    for shape, eps, seed in [((9,), 0.5, 15), ((2, 2, 2, 6), 1e-5, 16), ((4, 10), 2.0, 17)]:
        x, w, b = seeded_randn(*shape, seed=seed) * 0.3, seeded_randn(shape[-1], seed=seed + 1), seeded_randn(shape[-1], seed=seed + 2)
        out = expect_shape(_call_without_norms(ns, "layer_norm", x, w, b, eps), shape, f"layer_norm of {shape}")
        expect_close(out, F.layer_norm(x, (shape[-1],), w, b, eps), f"layer_norm with shape {shape}, eps={eps}")


# --------------------------------------------------------------------------- swiglu

def _swiglu_reference(d_model: int, d_hidden: int, seed: int) -> tuple[SwiGLU, tuple[torch.Tensor, ...]]:
    torch.manual_seed(seed)
    module = SwiGLU(d_model, d_hidden)
    return module, (module.gate_proj.weight.detach(), module.up_proj.weight.detach(),
                    module.down_proj.weight.detach())


@chapter.check("swiglu", points=1, hint="down(silu(gate(x)) * up(x)): the weights are stored like nn.Linear's, "
               "(out_features, in_features), so a projection is x @ W.T. silu(a) = a * sigmoid(a).")
def swiglu_values(ns: Namespace) -> None:
    module, (wg, wu, wd) = _swiglu_reference(8, 20, seed=21)
    x = seeded_randn(3, 8, seed=22)
    with torch.no_grad():
        expect_close(call(ns, "swiglu", x, wg, wu, wd), module(x), "swiglu(x (3, 8), d_hidden = 20)")


@chapter.check("swiglu", points=1, hint="The activation goes on the gate projection only; the up projection is "
               "multiplied in unchanged. Leading dimensions (batch, sequence) must pass through.")
def swiglu_batched(ns: Namespace) -> None:
    module, (wg, wu, wd) = _swiglu_reference(6, 10, seed=23)
    x = seeded_randn(2, 4, 6, seed=24) * 2
    with torch.no_grad():
        out = expect_shape(call(ns, "swiglu", x, wg, wu, wd), (2, 4, 6), "swiglu(x (2, 4, 6))")
        expect_close(out, module(x), "swiglu(x (2, 4, 6), d_hidden = 10)")


# --------------------------------------------------------------------------- prenorm_block

def _block(seed: int, norm: str = "layernorm", ffn: str = "gelu") -> TransformerBlock:
    torch.manual_seed(seed)
    block = TransformerBlock(16, 4, norm=norm, ffn=ffn).eval()
    with torch.no_grad():
        for p in (block.norm1.weight, block.norm2.weight):
            p.uniform_(0.5, 1.5)
    return block


@chapter.check("prenorm_block", points=1, hint="Pre-norm: normalise, run the sub-layer, ADD its output to the "
               "un-normalised input. First x + attn(norm1(x)), then the same with ffn and norm2 on the result.")
def prenorm_block_matches_block(ns: Namespace) -> None:
    block = _block(31)
    x = seeded_randn(2, 5, 16, seed=32)
    attn = lambda h: block.attn(h, is_causal=True)  # noqa: E731
    with torch.no_grad():
        expect_close(call(ns, "prenorm_block", x, attn, block.ffn, block.norm1, block.norm2), block(x),
                     "prenorm_block with a TransformerBlock's parts (LayerNorm, GELU)")


@chapter.check("prenorm_block", points=1, hint="The order matters: the feed-forward part sees the output of the "
               "attention part (with its residual added), and nothing is normalised after the additions.")
def prenorm_block_simple_parts(ns: Namespace) -> None:
    x = seeded_randn(3, 4, seed=33)
    attn = lambda h: 2.0 * h + 1.0      # noqa: E731
    ffn = lambda h: h ** 2              # noqa: E731
    norm1 = lambda h: h - 0.5           # noqa: E731
    norm2 = lambda h: 0.1 * h           # noqa: E731
    h = x + attn(norm1(x))
    expected = h + ffn(norm2(h))
    expect_close(call(ns, "prenorm_block", x, attn, ffn, norm1, norm2), expected,
                 "prenorm_block with attn(h) = 2h + 1, ffn(h) = h^2, norm1(h) = h - 0.5, norm2(h) = 0.1 h")


@chapter.check("prenorm_block", points=1, hint="Use norm1 before attention and norm2 before the feed-forward network, "
               "not the other way round.")
def prenorm_block_rmsnorm_swiglu(ns: Namespace) -> None:
    block = _block(34, norm="rmsnorm", ffn="swiglu")
    x = seeded_randn(1, 6, 16, seed=35) * 3
    attn = lambda h: block.attn(h, is_causal=True)  # noqa: E731
    with torch.no_grad():
        expect_close(call(ns, "prenorm_block", x, attn, block.ffn, block.norm1, block.norm2), block(x),
                     "prenorm_block with a LLaMA-style block's parts (RMSNorm, SwiGLU)")


# --------------------------------------------------------------------------- top_k_route

def _route(ns: Namespace, logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    result = call(ns, "top_k_route", logits, k)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailed(f"top_k_route should return a pair (weights, indices), got {type(result).__name__}")
    return result[0], result[1]


@chapter.check("top_k_route", points=1, hint="Pick the k experts with the largest router scores (largest first) and "
               "give them weights from a softmax that are renormalised to sum to 1 over the chosen k.")
def top_k_route_values(ns: Namespace) -> None:
    logits = seeded_randn(6, 8, seed=41) * 2
    weights, indices = _route(ns, logits, 2)
    ref_w, ref_i = reference_top_k_route(logits, 2)
    expect_shape(indices, (6, 2), "indices for 6 tokens, k = 2")
    expect(torch.equal(torch.as_tensor(indices).long(), ref_i),
           f"indices: expected {ref_i.tolist()}, got {torch.as_tensor(indices).tolist()}")
    expect_close(weights, ref_w, "weights for 6 tokens, 8 experts, k = 2")


@chapter.check("top_k_route", points=1, hint="The k weights of each token must sum to 1: divide the chosen "
               "probabilities by their own sum. With k = 1 every weight is 1.")
def top_k_route_sums(ns: Namespace) -> None:
    logits = seeded_randn(2, 5, 4, seed=42)
    for k in (1, 3, 4):
        weights, indices = _route(ns, logits, k)
        w = expect_shape(weights, (2, 5, k), f"weights for logits (2, 5, 4), k = {k}")
        expect_close(w.sum(-1), torch.ones(2, 5), f"sum of the weights over the k = {k} chosen experts")
        ref_w, ref_i = reference_top_k_route(logits, k)
        expect_close(w, ref_w, f"weights for logits (2, 5, 4), k = {k}")


# --------------------------------------------------------------------------- count_block_parameters

def _numel(d_model: int, d_hidden: int, n_heads: int, n_kv_heads: int | None, bias: bool, ffn: str,
           norm: str) -> int:
    torch.manual_seed(0)
    with torch.device("meta"):
        block = TransformerBlock(d_model, n_heads, n_kv_heads, d_hidden, norm=norm, ffn=ffn, bias=bias)
    return sum(p.numel() for p in block.parameters())


def _count(ns: Namespace, *args: Any) -> int:
    value = call(ns, "count_block_parameters", *args)
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"count_block_parameters should return a number, got {type(value).__name__}") from None
    if as_int != value:
        raise CheckFailed(f"count_block_parameters should return a whole number, got {value}")
    return as_int


def _check_counts(ns: Namespace, cases: list[tuple]) -> None:
    for case in cases:
        got, expected = _count(ns, *case), _numel(*case)
        expect(got == expected, f"count_block_parameters{case}: expected {expected:,}, got {got:,}")


_GPT_CASES = [(768, 3072, 12, None, True, "gelu", "layernorm"), (64, 100, 4, None, False, "gelu", "layernorm"),
              (32, 128, 8, None, True, "gelu", "rmsnorm")]
_LLAMA_CASES = [(4096, 11008, 32, None, False, "swiglu", "rmsnorm"), (128, 344, 8, 2, False, "swiglu", "rmsnorm"),
                (64, 96, 8, 1, True, "swiglu", "layernorm")]


@chapter.check("count_block_parameters", points=1, hint="Attention: four d x d matrices (q, k, v, o), plus d biases "
               "each if bias. FFN: two matrices d x d_hidden plus biases (d_hidden and d). LayerNorm: weight and bias "
               "(2d); RMSNorm: weight only (d); a block has two norms.")
def count_gpt_blocks(ns: Namespace) -> None:
    _check_counts(ns, _GPT_CASES)


@chapter.check("count_block_parameters", points=1, hint="SwiGLU has THREE matrices d x d_hidden (gate, up, down). "
               "With n_kv_heads key/value heads, W_k and W_v have n_kv_heads * (d / n_heads) outputs, not d.")
def count_llama_blocks(ns: Namespace) -> None:
    _check_counts(ns, _LLAMA_CASES)


# --------------------------------------------------------------------------- MixtureOfExperts (build the module)

_MOE = "MixtureOfExperts"


def _mixtral_block(d_model: int, d_hidden: int, n_experts: int, top_k: int, seed: int):
    """transformers' Mixtral MoE layer with seeded random weights: the independent reference."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    config = MixtralConfig(hidden_size=d_model, intermediate_size=d_hidden, num_local_experts=n_experts,
                           num_experts_per_tok=top_k, router_jitter_noise=0.0)
    config._experts_implementation = "eager"  # the plain loop over experts (and no warning about choosing one)
    block = MixtralSparseMoeBlock(config).eval()
    with torch.no_grad():
        block.gate.weight.copy_(seeded_randn(n_experts, d_model, seed=seed))
        block.experts.gate_up_proj.copy_(seeded_randn(n_experts, 2 * d_hidden, d_model, seed=seed + 1) * 0.3)
        block.experts.down_proj.copy_(seeded_randn(n_experts, d_model, d_hidden, seed=seed + 2) * 0.3)
    return block


def _learner_moe(ns: Namespace, d_model: int, d_hidden: int, n_experts: int, top_k: int, seed: int):
    """The learner's layer with the reference's weights loaded, and the reference."""
    from torch import nn

    from llmcourse.transformer.moe import MoE

    reference = _mixtral_block(d_model, d_hidden, n_experts, top_k, seed)
    module = call(ns, _MOE, d_model, d_hidden, n_experts, top_k)
    if not isinstance(module, nn.Module):
        raise CheckFailed(f"`{_MOE}(...)` should build an nn.Module, got {type(module).__name__}")
    if isinstance(module, MoE):
        raise CheckFailed(f"`{_MOE}` must be written here, not taken from llmcourse.transformer.moe.")
    router, experts = getattr(module, "router", None), getattr(module, "experts", None)
    if not isinstance(router, nn.Linear):
        raise CheckFailed("the layer needs `router`, an nn.Linear(d_model, n_experts, bias=False)")
    if not isinstance(experts, nn.ModuleList) or len(experts) != n_experts:
        raise CheckFailed(f"the layer needs `experts`, an nn.ModuleList of {n_experts} experts")
    gate, up = reference.experts.gate_up_proj.detach().chunk(2, dim=1)
    weights = {"router.weight": reference.gate.weight.detach()}
    for e in range(n_experts):
        weights[f"experts.{e}.gate_proj.weight"] = gate[e]
        weights[f"experts.{e}.up_proj.weight"] = up[e]
        weights[f"experts.{e}.down_proj.weight"] = reference.experts.down_proj.detach()[e]
    own = dict(module.state_dict())
    if set(own) != set(weights):
        extra, missing = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise CheckFailed(f"the layer's parameters must be named as in the task; missing {missing[:4]}, "
                          f"unexpected {extra[:4]}")
    for name, value in weights.items():
        expect_shape(own[name], tuple(value.shape), f"`{name}`")
    module.load_state_dict(weights)
    return module, reference


def _rows_per_expert(module, x: torch.Tensor) -> list[int]:
    """How many token rows each of ``module.experts`` is run on during one forward of ``module`` on ``x``."""
    rows = [0] * len(module.experts)
    hooks = [expert.gate_proj.register_forward_pre_hook(
        lambda mod, args, e=e: rows.__setitem__(e, rows[e] + args[0].reshape(-1, args[0].shape[-1]).shape[0]))
        for e, expert in enumerate(module.experts)]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for hook in hooks:
            hook.remove()
    return rows


def _moe_forward(module, x: torch.Tensor, what: str):
    result = call_object(what, module, x)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise CheckFailed(f"forward should return a pair (output, aux_loss), got {type(result).__name__}")
    return result


@chapter.check(_MOE, points=2, hint="For each token: softmax over the router's scores, keep the top_k experts, divide "
               "their probabilities by their sum, and add up those experts' outputs weighted by them. An expert is "
               "down_proj(silu(gate_proj(x)) * up_proj(x)).")
def moe_matches_mixtral(ns: Namespace) -> None:
    for n_experts, top_k, seed in ((4, 2, 1), (5, 1, 4), (3, 3, 7)):
        module, reference = _learner_moe(ns, 8, 12, n_experts, top_k, seed)
        x = seeded_randn(2, 5, 8, seed=seed + 10)
        with torch.no_grad():
            out, _ = _moe_forward(module, x, f"the layer ({n_experts} experts, top_k={top_k})")
            expect_close(out, reference(x), f"the output of {n_experts} experts with top_k={top_k}, after loading "
                         f"the weights of transformers' Mixtral MoE layer", atol=1e-5, rtol=1e-4)


@chapter.check(_MOE, points=1, hint="The point of experts is that a token pays only for its top_k of them: run each "
               "expert on just the tokens that chose it (torch.where on the chosen indices), never on every token.")
def moe_runs_each_expert_on_its_tokens(ns: Namespace) -> None:
    module, reference = _learner_moe(ns, 8, 12, 6, 2, seed=20)
    x = seeded_randn(3, 7, 8, seed=21)
    # the counting hooks go on the learner's experts beside the learner's code (in their kernel when grading)
    rows = run_learner("the layer", lambda: beside_the_learner(ns, _rows_per_expert, module, x.clone()))
    with torch.no_grad():
        chosen = reference.gate(x.reshape(-1, 8))[2]
    want = torch.bincount(chosen.flatten(), minlength=6).tolist()
    expect(rows == want, f"with 21 tokens and top_k=2 the experts should see {want} tokens (42 in all: the tokens "
           f"routed to each), but they were run on {rows}")


@chapter.check(_MOE, points=1, hint="aux_loss = n_experts * sum_i f_i * P_i: f_i is the share of the tokens x top_k "
               "choices that went to expert i, P_i the mean router probability of expert i over the tokens.")
def moe_balancing_loss(ns: Namespace) -> None:
    for n_experts, top_k, seed in ((4, 2, 30), (6, 1, 33)):
        module, _ = _learner_moe(ns, 8, 12, n_experts, top_k, seed)
        x = seeded_randn(4, 6, 8, seed=seed + 1)
        with torch.no_grad():
            _, aux = _moe_forward(module, x, "the layer")
            probs = torch.softmax(x.reshape(-1, 8) @ module.router.weight.T, dim=-1)
            chosen = probs.topk(top_k, dim=-1).indices
        share = torch.bincount(chosen.flatten(), minlength=n_experts).double() / chosen.numel()
        want = n_experts * float((share * probs.double().mean(dim=0)).sum())
        got = as_number(aux, "aux_loss")
        expect(abs(got - want) < 1e-5, f"aux_loss with {n_experts} experts and top_k={top_k} is {got:.6f}, "
               f"expected {want:.6f}")


@chapter.check(_MOE, points=1, hint="The router learns only through the weights it gives the chosen experts: keep "
               "them differentiable (no .detach(), no .item(), no torch.no_grad()) and every gradient flows.")
def moe_gradients_match(ns: Namespace) -> None:
    module, reference = _learner_moe(ns, 8, 12, 4, 2, seed=40)
    x = seeded_randn(2, 6, 8, seed=41)
    out, aux = _moe_forward(module, x, "the layer")
    try:
        (out.pow(2).sum() + 0 * aux).backward()
    except Exception as exc:
        raise CheckFailed(f"backward through the layer's output raised {type(exc).__name__}: {exc}") from None
    reference(x).pow(2).sum().backward()
    router_grad = module.router.weight.grad
    expect(router_grad is not None, "the router's weight got no gradient: the expert weights must stay in the graph")
    expect_close(router_grad, reference.gate.weight.grad, "the router weight's gradient", atol=1e-4, rtol=1e-3)
    gate_grad = reference.experts.gate_up_proj.grad.chunk(2, dim=1)[0]
    for e, expert in enumerate(module.experts):
        got = expert.gate_proj.weight.grad
        expect(got is not None or not gate_grad[e].any(), f"expert {e}'s gate_proj got no gradient")
        if got is not None:
            expect_close(got, gate_grad[e], f"the gradient of expert {e}'s gate_proj", atol=1e-4, rtol=1e-3)


# --------------------------------------------------------------------------- residual_stream_rms (an experiment)

def _stream_rms_estimate(n_layers: int, prenorm: bool, d_model: int, n_heads: int, seeds: tuple[int, ...]) -> list[float]:
    """The RMS of the residual stream after each block, averaged over fresh stacks built from ``seeds``."""
    runs = []
    for seed in seeds:
        torch.manual_seed(seed)
        blocks = [TransformerBlock(d_model, n_heads, prenorm=prenorm).eval() for _ in range(n_layers)]
        x = torch.randn(8, 32, d_model)
        rms = []
        with torch.no_grad():
            for block in blocks:
                x = block(x)
                rms.append(float(x.pow(2).mean().sqrt()))
        runs.append(rms)
    return [sum(values) / len(values) for values in zip(*runs)]


def _learner_stream_rms(ns: Namespace, n_layers: int, prenorm: bool, d_model: int = 64, n_heads: int = 4) -> list[float]:
    what = f"residual_stream_rms({n_layers}, prenorm={prenorm})"
    got = call(ns, "residual_stream_rms", n_layers, prenorm, d_model, n_heads)
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    expect(isinstance(got, (list, tuple)) and len(got) == n_layers, f"{what} should return a list of {n_layers} "
           f"numbers (the stream's RMS after each block), got {type(got).__name__} of length "
           f"{len(got) if hasattr(got, '__len__') else '?'}.")
    return [as_number(v, f"{what}[{i}]") for i, v in enumerate(got)]


@chapter.check("residual_stream_rms", points=1, hint="Build n_layers fresh TransformerBlock(d_model, n_heads, "
               "prenorm=prenorm) in eval mode, feed x = torch.randn(8, 32, d_model) through them one after the other, "
               "and after each block record sqrt(mean(x**2)) over all the numbers of x: the root of the MEAN square.")
def stream_rms_matches_a_fresh_estimate(ns: Namespace) -> None:
    for prenorm in (True, False):
        expected = _stream_rms_estimate(8, prenorm, 64, 4, seeds=(160, 161, 162))
        got = _learner_stream_rms(ns, 8, prenorm)
        for i, (g, e) in enumerate(zip(got, expected)):
            expect(abs(g - e) < 0.06 * e, f"residual_stream_rms(8, prenorm={prenorm}) after block {i + 1} is {g:.3f}, "
                   f"but fresh stacks give {e:.3f} on average; all values: {[round(v, 3) for v in got]}.")


@chapter.check("residual_stream_rms", points=1, hint="In a post-norm block the last thing applied is a LayerNorm, so "
               "the stream leaves every block with RMS 1 (LayerNorm starts with weight 1 and bias 0), however deep.")
def stream_rms_post_norm_stays_at_one(ns: Namespace) -> None:
    got = _learner_stream_rms(ns, 12, False)
    expect(all(abs(v - 1) < 0.03 for v in got), "with post-norm blocks the stream should stay at RMS 1 after every "
           f"block; got {[round(v, 3) for v in got]}.")


@chapter.check("residual_stream_rms", points=1, hint="In a pre-norm block x = x + attn(norm(x)) and x = x + ffn(norm(x)): "
               "nothing ever normalises the stream itself, so each block adds its outputs on top and the RMS keeps "
               "growing. Measure x itself, not a normalised copy.")
def stream_rms_pre_norm_grows(ns: Namespace) -> None:
    got = _learner_stream_rms(ns, 24, True)
    expect(got[0] < 1.15 and got[-1] > 1.4, "with pre-norm blocks the stream should start near RMS 1 and grow with depth "
           f"(above 1.4 after 24 blocks); got {got[0]:.3f} after the first block and {got[-1]:.3f} after the last.")
    drops = [(i + 1, a, b) for i, (a, b) in enumerate(zip(got, got[1:])) if b < a - 0.02]
    expect(not drops, f"with pre-norm blocks the stream's RMS should never fall by more than noise, but it falls after "
           f"block {drops[0][0] if drops else 0}: {[round(v, 3) for v in got]}.")


# --------------------------------------------------------------------------- rms_norm_grads (a derivation)

def _rms_norm_grads_reference(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, eps: float):
    """torch.autograd through PyTorch's own F.rms_norm."""
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out = F.rms_norm(x, (x.shape[-1],), weight, eps=eps)
    return torch.autograd.grad(out, (x, weight), grad_out)


def _learner_rms_grads(ns: Namespace, x, weight, grad_out, eps: float, what: str):
    with forbid_autograd("rms_norm_grads"):
        got = call(ns, "rms_norm_grads", x.clone(), weight.clone(), grad_out.clone(), eps)
    return expect_tensors(got, [x.shape, weight.shape], ["grad_x", "grad_weight"], what)


@chapter.check("rms_norm_grads", points=1, hint="y = weight * x / r with r = sqrt(mean(x**2) + eps): each weight "
               "multiplies one feature at every position, so dL/dweight sums grad_out * x / r over all the positions "
               "(every dimension but the last).")
def rms_norm_grads_weight(ns: Namespace) -> None:
    x, w, g = seeded_randn(5, 8, seed=170) * 2, seeded_randn(8, seed=171), seeded_randn(5, 8, seed=172)
    expected = _rms_norm_grads_reference(x, w, g, 1e-6)[1]
    got = _learner_rms_grads(ns, x, w, g, 1e-6, "rms_norm_grads with x (5, 8)")[1]
    expect_close(got, expected, "grad_weight for x (5, 8)")


@chapter.check("rms_norm_grads", points=1, hint="x_j appears twice: directly in y_j, and in r, which every y_i shares. "
               "With h = grad_out * weight: dL/dx = h / r - x * mean(h * x) / r**3 (the mean over the last dimension).")
def rms_norm_grads_input(ns: Namespace) -> None:
    x, w, g = seeded_randn(3, 8, seed=173) * 3 + 1, seeded_randn(8, seed=174), seeded_randn(3, 8, seed=175)
    expected = _rms_norm_grads_reference(x, w, g, 1e-6)[0]
    got = _learner_rms_grads(ns, x, w, g, 1e-6, "rms_norm_grads with x (3, 8)")[0]
    expect_close(got, expected, "grad_x for x (3, 8)")


@chapter.check("rms_norm_grads", points=1, hint="Keep eps inside the square root, reduce over the last dimension only "
               "(keepdim=True), sum grad_weight over every other dimension, and keep the inputs' dtype.")
def rms_norm_grads_batched_with_a_large_eps(ns: Namespace) -> None:
    x, w = seeded_randn(2, 4, 16, seed=176, dtype=torch.float64) * 0.3, seeded_randn(16, seed=177, dtype=torch.float64)
    g = seeded_randn(2, 4, 16, seed=178, dtype=torch.float64)
    expected = _rms_norm_grads_reference(x, w, g, 0.5)
    got = _learner_rms_grads(ns, x, w, g, 0.5, "rms_norm_grads with x (2, 4, 16) in float64 and eps=0.5")
    expect(got[0].dtype == torch.float64 and got[1].dtype == torch.float64, "float64 inputs should give float64 "
           f"gradients, got {got[0].dtype} and {got[1].dtype}.")
    expect_close(got[0], expected[0], "grad_x for x (2, 4, 16), eps=0.5")
    expect_close(got[1], expected[1], "grad_weight for x (2, 4, 16), eps=0.5")


# --------------------------------------------------------------------------- capacity_keep (MoE in practice)

def _queue_keep(indices: torch.Tensor, n_experts: int, capacity_factor: float) -> torch.Tensor:
    """The capacity rule as the queue it describes: column 0 for every token, then column 1, ...; floor capacity."""
    n_tokens, k = indices.shape
    capacity = int(capacity_factor * n_tokens * k / n_experts + 1e-9)
    taken, keep = [0] * n_experts, torch.zeros(n_tokens, k, dtype=torch.bool)
    for slot in range(k):
        for token in range(n_tokens):
            expert = int(indices[token, slot])
            if taken[expert] < capacity:
                taken[expert] += 1
                keep[token, slot] = True
    return keep


def _learner_keep(ns: Namespace, indices: torch.Tensor, n_experts: int, factor: float) -> torch.Tensor:
    what = f"capacity_keep(indices {tuple(indices.shape)}, n_experts={n_experts}, capacity_factor={factor})"
    got = call(ns, "capacity_keep", indices.clone(), n_experts, factor)
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} should return a tensor of booleans, got {type(got).__name__}")
    expect_shape(got, tuple(indices.shape), what)
    if got.dtype != torch.bool and not ((got == 0) | (got == 1)).all():
        raise CheckFailed(f"{what} should hold True/False (or 1/0), got values such as {got.flatten()[:4].tolist()}")
    return got.bool()


def _skewed_routes(n_tokens: int, n_experts: int, k: int, seed: int) -> torch.Tensor:
    logits = seeded_randn(n_tokens, n_experts, seed=seed) * 2
    logits[:, 0] += 1.0                                        # expert 0 is popular, so it overflows
    return logits.topk(k, dim=-1).indices


@chapter.check("capacity_keep", points=1, hint="capacity = floor(capacity_factor * n_tokens * k / n_experts). Walk "
               "through the assignments, count how many each expert has accepted, and keep an assignment only while "
               "its expert has accepted fewer than capacity.")
def capacity_keep_matches_the_queue(ns: Namespace) -> None:
    for n_tokens, n_experts, k, factor, seed in ((40, 4, 1, 1.0, 200), (64, 8, 2, 1.25, 201), (48, 6, 2, 0.5, 202),
                                                 (10, 4, 1, 1.0, 203), (30, 5, 3, 8.0, 204)):
        indices = _skewed_routes(n_tokens, n_experts, k, seed)
        want = _queue_keep(indices, n_experts, factor)
        got = _learner_keep(ns, indices, n_experts, factor)
        expect(torch.equal(got, want), f"with {n_tokens} tokens, {n_experts} experts, k={k} and capacity factor "
               f"{factor} (capacity {int(factor * n_tokens * k / n_experts + 1e-9)}), {int((~got).sum())} assignments "
               f"are dropped where {int((~want).sum())} should be; the first difference is token "
               f"{int(torch.nonzero(got != want)[0][0]) if not torch.equal(got, want) else 0}.")


@chapter.check("capacity_keep", points=1, hint="Serve the experts column by column: every token's FIRST choice (column "
               "0, tokens in order) before anyone's second choice. Going token by token instead lets token 0's second "
               "choice take a place that token 3 needed for its first.")
def capacity_keep_serves_first_choices_first(ns: Namespace) -> None:
    indices = torch.tensor([[0, 1], [0, 2], [1, 0], [1, 3]])
    want = torch.tensor([[True, False], [True, True], [True, False], [True, True]])
    got = _learner_keep(ns, indices, 4, 1.0)
    expect(torch.equal(got, want), f"for indices {indices.tolist()} with 4 experts and factor 1.0 (capacity 2) the "
           f"kept assignments should be {want.int().tolist()}, got {got.int().tolist()}.")
    every_first_kept = _learner_keep(ns, torch.tensor([[2, 0], [2, 1], [0, 2], [1, 2]]), 3, 0.75)
    expect(bool(every_first_kept[:, 0].all()), "with capacity 2 and two tokens choosing expert 2 first, both of their "
           f"first choices fit; got {every_first_kept.int().tolist()}.")

