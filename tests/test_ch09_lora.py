"""Chapter 09's LoRA: the formula, the zero start, the merge, module replacement and what trains."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.finetuning.lora import LoRALinear, count_parameters, inject_lora, lora_forward, merge_lora, merge_lora_weights


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=40, context_length=16, d_model=32, n_layers=2, n_heads=4)).eval()


def randomise_B(model: nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.B.copy_(torch.randn(module.B.shape, generator=generator) * 0.1)


def test_lora_linear_equals_the_explicit_matrix_formula():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = LoRALinear(base, r=3, alpha=12.0)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(2, 5, 6)
    W_eff = base.weight + (12.0 / 3) * layer.B @ layer.A  # the written-out ΔW = alpha/r · B A
    expected = torch.einsum("bsi,oi->bso", x, W_eff) + base.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(lora_forward(x, base.weight, base.bias, layer.A, layer.B, 12.0, 3), expected)
    torch.testing.assert_close(layer.delta_weight(), W_eff - base.weight)
    torch.testing.assert_close(merge_lora_weights(base.weight, layer.A, layer.B, 12.0, 3), W_eff)


def test_a_fresh_adapter_equals_the_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(8, 3, bias=False)
    layer = LoRALinear(base, r=2, alpha=4.0)
    assert (layer.B == 0).all() and layer.A.abs().sum() > 0
    x = torch.randn(7, 8)
    assert torch.equal(layer(x), base(x))


def test_lora_linear_errors():
    with pytest.raises(ValueError, match="rank r"):
        LoRALinear(nn.Linear(3, 3), r=0)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(3, 3), r=1, alpha=0)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(3, 3, 1), r=1)


def test_inject_replaces_the_named_layers_with_setattr_and_freezes_the_rest():
    model = small_gpt()
    x = torch.randint(0, 40, (2, 10))
    before = model(x)
    names = inject_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    assert names == ["blocks.0.attn.q_proj", "blocks.0.attn.v_proj", "blocks.1.attn.q_proj", "blocks.1.attn.v_proj"]
    assert isinstance(model.blocks[1].attn.v_proj, LoRALinear)
    assert isinstance(model.blocks[1].attn.k_proj, nn.Linear)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{ab}" for n in names for ab in ("A", "B")}
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)  # B = 0: nothing changed yet


def test_only_the_adapters_get_gradients():
    model = small_gpt()
    inject_lora(model, ("q_proj", "v_proj", "up"), r=2)
    randomise_B(model)
    model(torch.randint(0, 40, (2, 10))).square().mean().backward()
    for name, p in model.named_parameters():
        if name.endswith((".A", ".B")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_merge_gives_plain_linears_with_the_same_outputs():
    model = small_gpt()
    x = torch.randint(0, 40, (3, 12))
    inject_lora(model, ("q_proj", "v_proj", "o_proj", "down"), r=4, alpha=16)
    randomise_B(model)
    with torch.no_grad():
        adapted = model(x)
    merged = merge_lora(model)
    assert len(merged) == 8
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=0)
    assert count_parameters(model) == count_parameters(small_gpt())


def test_count_parameters_and_the_saving():
    model = small_gpt()
    total = count_parameters(model)
    assert total == model.num_parameters()  # the tied output matrix counted once
    assert count_parameters(model, trainable_only=True) == total
    inject_lora(model, ("q_proj", "v_proj"), r=4)
    lora = count_parameters(model, trainable_only=True)
    assert lora == 2 * 2 * 4 * (32 + 32)  # 2 layers x (q, v) x r (in + out)
    assert count_parameters(model) == total + lora
    assert lora < total / 20


def test_inject_errors():
    model = small_gpt()
    with pytest.raises(ValueError, match=r"no nn.Linear .* named \['query'\].*q_proj"):
        inject_lora(model, ("query",))
    with pytest.raises(ValueError, match="rank r"):
        inject_lora(model, ("q_proj",), r=0)
    inject_lora(model, "q_proj", r=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        inject_lora(model, ("v_proj",))
