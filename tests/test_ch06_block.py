"""Tests of chapter 06: LayerNorm/RMSNorm, feed-forward networks (ReLU/GELU/SwiGLU), the Transformer
block (pre- and post-norm), mixture of experts, and parameter/FLOP counting — against PyTorch
(nn.LayerNorm, nn.RMSNorm), transformers (LlamaRMSNorm, LlamaMLP, GPT2LMHeadModel) and hand formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.transformer.feedforward import FeedForward, SwiGLU, activation_fn, llama_hidden_size, make_ffn
from llmcourse.transformer.norms import LayerNorm, RMSNorm, layer_norm, make_norm, rms_norm

DT = torch.float64


def randn(*shape, seed=0, dtype=DT):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------- norms


@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 4, 16)])
def test_layer_norm_function_matches_torch(shape):
    x, w, b = randn(*shape, seed=1) * 3 + 2, randn(shape[-1], seed=2), randn(shape[-1], seed=3)
    torch.testing.assert_close(layer_norm(x, w, b, 1e-5), F.layer_norm(x, (shape[-1],), w, b, 1e-5))
    torch.testing.assert_close(layer_norm(x, None, None), F.layer_norm(x, (shape[-1],), eps=1e-5))


def test_layer_norm_output_has_zero_mean_unit_variance():
    y = layer_norm(randn(4, 32, seed=4) * 10 + 5, None, None, eps=0.0)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, dtype=DT))
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, dtype=DT))


def test_layernorm_module_is_state_dict_compatible_with_nn_layernorm():
    ours, ref = LayerNorm(16), nn.LayerNorm(16)
    assert set(ours.state_dict()) == set(ref.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(ours.weight, ref.weight)
    torch.testing.assert_close(ours.bias, ref.bias)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    x = randn(2, 5, 16, dtype=torch.float32)
    torch.testing.assert_close(ours(x), ref(x))
    assert LayerNorm(8, bias=False).bias is None
    assert set(LayerNorm(8, bias=False).state_dict()) == {"weight"}
    with pytest.raises(ValueError, match="last dimension"):
        ours(torch.zeros(2, 8))


def test_layernorm_gradients_match_torch():
    x1 = randn(3, 10, seed=5).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    ours, ref = LayerNorm(10).double(), nn.LayerNorm(10).double()
    ours(x1).pow(2).sum().backward()
    ref(x2).pow(2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)


def test_rms_norm_function_matches_formula_and_torch():
    x, w = randn(3, 8, seed=6), randn(8, seed=7)
    manual = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(rms_norm(x, w, 1e-6), manual)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), F.rms_norm(x, (8,), w, eps=1e-6))
    # rms of the output (before the weight) is 1
    torch.testing.assert_close(rms_norm(x, None, 0.0).pow(2).mean(-1), torch.ones(3, dtype=DT))


def test_rmsnorm_module_matches_nn_rmsnorm_and_llama():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    ours, llama, torch_rms = RMSNorm(16), LlamaRMSNorm(16, eps=1e-6), nn.RMSNorm(16, eps=1e-6)
    assert set(ours.state_dict()) == set(llama.state_dict()) == {"weight"}
    with torch.no_grad():
        llama.weight.normal_()
    ours.load_state_dict(llama.state_dict())
    torch_rms.load_state_dict(llama.state_dict())
    x = randn(2, 5, 16, seed=8, dtype=torch.float32) * 4
    torch.testing.assert_close(ours(x), llama(x))
    torch.testing.assert_close(ours(x), torch_rms(x))
    # half precision: statistics in float32, like LlamaRMSNorm
    llama_bf = LlamaRMSNorm(16, eps=1e-6).to(torch.bfloat16)
    ours_bf = RMSNorm(16).to(torch.bfloat16)
    xb = (x * 100).to(torch.bfloat16)
    assert torch.equal(ours_bf(xb), llama_bf(xb))
    assert ours_bf(xb).dtype == torch.bfloat16


def test_rmsnorm_is_layernorm_of_zero_mean_input():
    x = randn(4, 12, seed=9)
    x = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(rms_norm(x, None, 1e-5), layer_norm(x, None, None, 1e-5))


def test_make_norm_and_errors():
    assert isinstance(make_norm("layernorm", 8), LayerNorm)
    assert isinstance(make_norm("rmsnorm", 8), RMSNorm)
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("batchnorm", 8)
    with pytest.raises(ValueError):
        RMSNorm(0)


# --------------------------------------------------------------------------- feed-forward


@pytest.mark.parametrize("activation,reference", [
    ("relu", lambda h: torch.clamp(h, min=0)),
    ("gelu", lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))),
    ("gelu_tanh", lambda h: 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))),
])
def test_feedforward_matches_hand_formula(activation, reference):
    ffn = FeedForward(6, 24, activation=activation).double()
    assert ffn.up.weight.shape == (24, 6) and ffn.down.weight.shape == (6, 24)
    x = randn(2, 3, 6, seed=10)
    h = x @ ffn.up.weight.T + ffn.up.bias
    expected = reference(h) @ ffn.down.weight.T + ffn.down.bias
    torch.testing.assert_close(ffn(x), expected)


def test_feedforward_gelu_tanh_is_gpt2_gelu_new():
    from transformers.activations import ACT2FN

    x = randn(100, seed=11) * 4
    torch.testing.assert_close(activation_fn("gelu_tanh")(x), ACT2FN["gelu_new"](x))
    torch.testing.assert_close(activation_fn("gelu")(x), ACT2FN["gelu"](x))


def test_feedforward_bias_dropout_and_errors():
    ffn = FeedForward(4, 8, bias=False)
    assert ffn.up.bias is None and ffn.down.bias is None
    assert sum(p.numel() for p in ffn.parameters()) == 2 * 4 * 8
    drop = FeedForward(4, 8, dropout=0.5).train()
    x = torch.ones(1000, 4)
    assert (drop(x) == 0).float().mean() > 0.3
    drop.eval()
    torch.testing.assert_close(drop(x), drop.down(F.gelu(drop.up(x))))
    with pytest.raises(ValueError, match="unknown activation"):
        FeedForward(4, 8, activation="swish")


def test_swiglu_matches_formula_and_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    cfg = LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=2, num_key_value_heads=2,
                      hidden_act="silu", mlp_bias=False)
    llama = LlamaMLP(cfg)
    ours = SwiGLU(16, 40)
    assert set(ours.state_dict()) == set(llama.state_dict())
    ours.load_state_dict(llama.state_dict())
    x = randn(2, 5, 16, seed=12, dtype=torch.float32)
    torch.testing.assert_close(ours(x), llama(x))
    g, u, d = ours.gate_proj.weight, ours.up_proj.weight, ours.down_proj.weight
    a = x @ g.T
    torch.testing.assert_close(ours(x), ((a * torch.sigmoid(a)) * (x @ u.T)) @ d.T)
    assert sum(p.numel() for p in ours.parameters()) == 3 * 16 * 40
    assert SwiGLU(4, 6, bias=True).up_proj.bias is not None


def test_llama_hidden_size_and_make_ffn():
    assert llama_hidden_size(4096) == 11008
    assert llama_hidden_size(5120) == 13824  # LLaMA-2 13B
    assert isinstance(make_ffn("swiglu", 8), SwiGLU)
    f = make_ffn("gelu", 8)
    assert isinstance(f, FeedForward) and f.up.out_features == 32
    with pytest.raises(ValueError, match="unknown ffn"):
        make_ffn("tanh", 8)


# --------------------------------------------------------------------------- the block

from matplotlib.figure import Figure  # noqa: E402

from llmcourse.transformer.attention import MultiHeadAttention  # noqa: E402
from llmcourse.transformer.block import (TransformerBlock, block_gradient_norms, copy_task_batch,  # noqa: E402
                             residual_gradient_norms, StackLM, train_stack)
from llmcourse.transformer.counting import (REAL_CONFIGS, BlockConfig, ModelConfig, count_parameters,  # noqa: E402
                                config_table, ffn_share, flops_per_token)
from llmcourse.transformer.moe import MoE, TopKRouter, load_balancing_loss, moe_parameter_counts, top_k_route  # noqa: E402
from llmcourse.transformer.block_plots import (plot_expert_load, plot_gradient_flow, plot_loss_curves,  # noqa: E402
                                   plot_parameter_shares)
from llmcourse.transformer.block_widgets import block_view  # noqa: E402


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("norm,ffn,n_kv", [("layernorm", "gelu", None), ("rmsnorm", "swiglu", 2),
                                           ("layernorm", "relu", 1)])
def test_block_shapes_and_parts(norm, ffn, n_kv):
    block = TransformerBlock(32, 4, n_kv_heads=n_kv, norm=norm, ffn=ffn)
    assert isinstance(block.attn, MultiHeadAttention)
    x = randn(2, 7, 32, dtype=torch.float32)
    assert block(x).shape == x.shape


def test_prenorm_block_matches_hand_recomputation():
    block = TransformerBlock(16, 2, ffn="gelu", prenorm=True).double()
    x = randn(2, 5, 16, seed=20)
    h = x + block.attn(F.layer_norm(x, (16,), block.norm1.weight, block.norm1.bias), is_causal=True)
    h2 = F.layer_norm(h, (16,), block.norm2.weight, block.norm2.bias)
    expected = h + block.ffn.down(F.gelu(block.ffn.up(h2)))
    torch.testing.assert_close(block(x), expected)


def test_postnorm_block_matches_hand_recomputation():
    block = TransformerBlock(16, 2, ffn="relu", prenorm=False, norm="rmsnorm").double()
    with torch.no_grad():
        block.norm1.weight.normal_()
        block.norm2.weight.normal_()
    x = randn(2, 5, 16, seed=21)
    h = F.rms_norm(x + block.attn(x, is_causal=True), (16,), block.norm1.weight, eps=1e-6)
    expected = F.rms_norm(h + block.ffn.down(F.relu(block.ffn.up(h))), (16,), block.norm2.weight, eps=1e-6)
    torch.testing.assert_close(block(x), expected)


def test_block_is_causal_by_default_and_cache_matches_full_pass():
    block = TransformerBlock(16, 4, n_kv_heads=2, norm="rmsnorm", ffn="swiglu", bias=False).double().eval()
    x = randn(1, 6, 16, seed=22)
    full = block(x)
    changed = x.clone()
    changed[:, -1] += 1
    torch.testing.assert_close(block(changed)[:, :-1], full[:, :-1])  # the future does not leak back
    assert not torch.allclose(block(x, is_causal=False), full)
    out1, kv = block(x[:, :4], use_cache=True)
    out2, kv = block(x[:, 4:], past_kv=kv)
    torch.testing.assert_close(torch.cat([out1, out2], 1), full)
    assert kv[0].shape == (1, 2, 6, 4)


def test_block_errors_are_clear():
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        TransformerBlock(30, 4)
    with pytest.raises(ValueError, match="unknown norm"):
        TransformerBlock(32, 4, norm="batchnorm")
    with pytest.raises(ValueError, match="unknown ffn"):
        TransformerBlock(32, 4, ffn="tanh")
    with pytest.raises(ValueError, match="n_kv_heads"):
        TransformerBlock(32, 4, n_kv_heads=3)


def test_block_dropout_only_in_training():
    block = TransformerBlock(16, 2, dropout=0.5)
    x = randn(2, 5, 16, dtype=torch.float32)
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    block.train()
    assert not torch.allclose(block(x), block(x))


def test_residual_connections_keep_gradients_alive():
    plain = residual_gradient_norms(20, 32, residual=False)
    res = residual_gradient_norms(20, 32, residual=True)
    assert len(plain) == len(res) == 20
    assert plain[0] < 1e-4 * plain[-1]     # vanishes on the way down
    assert res[0] >= res[-1]                # the identity path keeps it


def test_stack_experiment_helpers_run():
    model = StackLM(8, 2, 16, 2, prenorm=False, max_len=8)
    tokens, targets = copy_task_batch(4, 8, 8, torch.Generator().manual_seed(0))
    assert torch.equal(tokens[:, 1:], targets[:, :-1]) and tokens.shape == (4, 7)
    assert torch.equal(targets[:, 3:], tokens[:, :4])  # the second half repeats the first
    norms = block_gradient_norms(model, tokens, targets)
    assert len(norms) == 2 and all(n > 0 for n in norms)
    losses = train_stack(True, n_layers=2, d_model=16, n_heads=2, vocab_size=8, seq_len=8, steps=3, batch=4)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


# --------------------------------------------------------------------------- mixture of experts


def test_top_k_route_renormalises():
    logits = randn(5, 6, seed=30)
    w, idx = top_k_route(logits, 2)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(idx, probs.topk(2, -1).indices)
    torch.testing.assert_close(w.sum(-1), torch.ones(5, dtype=DT))
    torch.testing.assert_close(w, torch.softmax(logits.gather(-1, idx), -1))
    w1, _ = top_k_route(logits, 1)
    torch.testing.assert_close(w1, torch.ones(5, 1, dtype=DT))
    with pytest.raises(ValueError, match="top_k"):
        top_k_route(logits, 7)


def test_moe_with_all_experts_equal_is_the_dense_ffn():
    moe = MoE(8, 16, n_experts=4, top_k=4, ffn="swiglu").double()
    dense = SwiGLU(8, 16).double()
    for expert in moe.experts:
        expert.load_state_dict(dense.state_dict())
    x = randn(3, 5, 8, seed=31)
    out, aux = moe(x)
    torch.testing.assert_close(out, dense(x))
    assert out.shape == x.shape and aux.dim() == 0


def test_moe_matches_loop_over_tokens():
    moe = MoE(8, 12, n_experts=5, top_k=2, ffn="gelu").double()
    x = randn(2, 4, 8, seed=32)
    out, _ = moe(x)
    flat = x.reshape(-1, 8)
    for t in range(flat.shape[0]):
        w, idx, _ = moe.router(flat[t:t + 1])
        expected = sum(w[0, j] * moe.experts[int(idx[0, j])](flat[t]) for j in range(2))
        torch.testing.assert_close(out.reshape(-1, 8)[t], expected)
    assert int(moe.expert_counts(x).sum()) == 2 * 8


def test_load_balancing_loss_uniform_minimum_and_collapse():
    n, e = 64, 4
    uniform = torch.full((n, e), 1 / e)
    balanced = torch.arange(n) % e
    torch.testing.assert_close(load_balancing_loss(uniform, balanced, e), torch.tensor(1.0))
    collapsed = F.one_hot(torch.zeros(n, dtype=torch.long), e).float()
    torch.testing.assert_close(load_balancing_loss(collapsed, torch.zeros(n, dtype=torch.long), e), torch.tensor(4.0))
    # for routing that follows the probabilities, random routers never beat uniform
    for seed in range(5):
        probs = torch.softmax(randn(n, e, seed=seed, dtype=torch.float32) * 3, -1)
        assert load_balancing_loss(probs, probs.argmax(-1), e) >= 1.0 - 0.15


def test_load_balancing_loss_matches_mixtral_up_to_top_k():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = randn(20, 8, seed=33, dtype=torch.float32)
    probs = torch.softmax(logits, -1)
    _, idx = top_k_route(logits, 2)
    ref = load_balancing_loss_func((logits,), num_experts=8, top_k=2)
    torch.testing.assert_close(2 * load_balancing_loss(probs, idx, 8), ref)


def test_router_errors_and_moe_counts():
    with pytest.raises(ValueError, match="top_k"):
        TopKRouter(8, 4, 5)
    with pytest.raises(ValueError, match="top_k"):
        MoE(8, 16, 2, 3)
    moe = MoE(8, 16, 4, 2, ffn="swiglu")
    counts = moe_parameter_counts(8, 16, 4, 2, "swiglu")
    assert counts["total"] == n_params(moe)
    assert counts["active"] == 2 * n_params(moe.experts[0]) + n_params(moe.router)


# --------------------------------------------------------------------------- counting


@pytest.mark.parametrize("kwargs", [
    dict(norm="layernorm", ffn="gelu", bias=True),
    dict(norm="rmsnorm", ffn="swiglu", bias=False, n_kv_heads=2),
    dict(norm="layernorm", ffn="relu", bias=False, d_hidden=50),
    dict(norm="rmsnorm", ffn="swiglu", bias=True, d_hidden=40, n_kv_heads=1),
])
def test_block_count_equals_numel(kwargs):
    config = BlockConfig(d_model=32, n_heads=4, **kwargs)
    block = TransformerBlock(32, 4, n_kv_heads=config.n_kv_heads, d_hidden=config.hidden, norm=config.norm,
                             ffn=config.ffn, bias=config.bias)
    counts = count_parameters(config)
    assert counts["total"] == n_params(block)
    assert counts["attention"] == n_params(block.attn)
    assert counts["ffn"] == n_params(block.ffn)
    assert counts["norms"] == n_params(block.norm1) + n_params(block.norm2)


def test_moe_block_count_equals_numel():
    config = BlockConfig(d_model=16, n_heads=2, ffn="swiglu", d_hidden=24, n_experts=4, top_k=2)
    moe = MoE(16, 24, 4, 2, "swiglu")
    assert count_parameters(config)["ffn"] == n_params(moe)
    assert count_parameters(config, active=True)["ffn"] == moe_parameter_counts(16, 24, 4, 2)["active"]


def test_gpt2_small_count_equals_transformers_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    ours = count_parameters(REAL_CONFIGS["GPT-2 small"])
    assert n_params(model) == ours["total"] == 124_439_808
    assert ours["embeddings"] == n_params(model.transformer.wte) + n_params(model.transformer.wpe)
    assert ours["ffn"] == sum(n_params(b.mlp) for b in model.transformer.h)
    assert ours["attention"] == sum(n_params(b.attn) for b in model.transformer.h)


def test_llama2_and_mixtral_counts_equal_transformers_models():
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    with torch.device("meta"):
        llama = LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                             num_attention_heads=32, num_key_value_heads=32, vocab_size=32000))
        mixtral = MixtralForCausalLM(MixtralConfig())
    assert n_params(llama) == count_parameters(REAL_CONFIGS["LLaMA-2 7B"])["total"] == 6_738_415_616
    assert n_params(mixtral) == count_parameters(REAL_CONFIGS["Mixtral 8x7B"])["total"]


def test_real_config_shares_and_flops():
    gpt3 = REAL_CONFIGS["GPT-3 175B"]
    assert 174e9 < count_parameters(gpt3)["total"] < 175.5e9
    assert abs(ffn_share(gpt3) - 2 / 3) < 0.01
    assert ffn_share(REAL_CONFIGS["GPT-2 small"]) < 0.5
    rows = config_table()
    assert {r["model"] for r in rows} == set(REAL_CONFIGS) and all(r["source"] for r in rows)
    mix = [r for r in rows if r["model"] == "Mixtral 8x7B"][0]
    assert 12.8e9 < mix["active"] < 13e9
    # FLOPs: 2 per weight + attention term; the head is counted even when tied
    c = REAL_CONFIGS["GPT-2 small"]
    f = flops_per_token(c, 1024)
    counts = count_parameters(c)
    assert f["attention"] + f["ffn"] == 2 * (counts["attention"] + counts["ffn"])
    assert f["head"] == 2 * 768 * 50257
    assert f["attention_scores"] == 4 * 12 * 1024 * 768
    assert f["total"] == sum(v for k, v in f.items() if k != "total")
    with pytest.raises(ValueError):
        flops_per_token(c, 0)


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        BlockConfig(d_model=100, n_heads=3)
    with pytest.raises(ValueError, match="top_k"):
        BlockConfig(n_experts=4, top_k=5)
    with pytest.raises(ValueError, match="unknown ffn"):
        ModelConfig(ffn="tanh")
    with pytest.raises(ValueError, match="positions"):
        ModelConfig(positions="alibi")


def test_plots_and_block_view_return_figures():
    assert isinstance(plot_gradient_flow({"a": [1.0, 0.1, 0.0]}), Figure)
    assert isinstance(plot_loss_curves({"a": [3.0, 2.0]}), Figure)
    assert isinstance(plot_parameter_shares({r["model"]: r for r in config_table()}), Figure)
    assert isinstance(plot_expert_load({"x": [1, 2, 3], "y": [2, 2, 2]}), Figure)
    assert isinstance(block_view(), Figure)
    assert isinstance(block_view(d_model=256, n_heads=8, ffn="swiglu", norm="rmsnorm", n_experts=8, top_k=2,
                                 positions="rope", tied_embeddings=False), Figure)
    with pytest.raises(ValueError):
        block_view(d_model=100, n_heads=3)
