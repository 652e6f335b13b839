"""Chapter 10: activation recomputation. Saved bytes are checked against a count done by hand from the layer
shapes, gradients against the same model run without checkpointing."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.parallel.recompute import (
    forward_layers,
    mlp_stack,
    peak_cuda_bytes,
    recompute_report,
    saved_activation_bytes,
    time_forward_backward,
)

FLOAT = 4  # bytes per float32


def _grads(model: nn.Module, x: torch.Tensor, checkpoint: bool) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    forward_layers(model, x, checkpoint=checkpoint).pow(2).mean().backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("n_layers,batch,width", [(6, 16, 32), (3, 5, 8)])
def test_saved_bytes_of_an_mlp_stack_match_a_count_by_hand(n_layers, batch, width):
    torch.manual_seed(0)
    model = mlp_stack(n_layers, width)
    x = torch.randn(batch, width)
    # per layer, backward needs: the layer input (for the first Linear's weight gradient), the first Linear's
    # output (GeLU's derivative) and the GeLU output (the second Linear's weight gradient)
    per_layer = batch * width + 2 * batch * 4 * width
    assert saved_activation_bytes(model, x) == n_layers * per_layer * FLOAT
    # with checkpointing only every layer's input is kept
    assert saved_activation_bytes(model, x, checkpoint=True) == n_layers * batch * width * FLOAT


def test_checkpointing_a_gpt_stack_keeps_one_tensor_per_block_and_the_same_gradients():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, context_length=16, d_model=32, n_layers=4, n_heads=4)
    blocks = GPT(config).blocks
    hidden = torch.randn(2, 16, 32)
    plain = saved_activation_bytes(blocks, hidden)
    kept = saved_activation_bytes(blocks, hidden, checkpoint=True)
    assert kept == config.n_layers * hidden.numel() * FLOAT
    assert plain > 10 * kept  # attention scores, MLP hidden states, LayerNorm statistics, ...
    for got, want in zip(_grads(blocks, hidden, True), _grads(blocks, hidden, False)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_checkpointing_gives_the_same_gradients_and_outputs():
    torch.manual_seed(1)
    model = mlp_stack(5, 12)
    x = torch.randn(7, 12)
    torch.testing.assert_close(forward_layers(model, x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(forward_layers(model, x, checkpoint=True), model(x), rtol=0, atol=0)
    for got, want in zip(_grads(model, x, True), _grads(model, x, False)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_saved_bytes_grow_with_depth_only_without_checkpointing():
    x = torch.randn(8, 16)
    plain = [saved_activation_bytes(mlp_stack(n, 16), x) for n in (2, 4, 8)]
    kept = [saved_activation_bytes(mlp_stack(n, 16), x, checkpoint=True) for n in (2, 4, 8)]
    assert plain[2] - plain[1] == 2 * (plain[1] - plain[0])  # linear in depth
    assert all(k * 9 == p for k, p in zip(kept, plain))  # hidden = 4 width: 1 + 4 + 4 tensors' worth vs 1


def test_report_and_timings():
    torch.manual_seed(0)
    model = mlp_stack(4, 16)
    x = torch.randn(8, 16)
    rows = recompute_report(model, x, repeats=1)
    assert [row["checkpoint"] for row in rows] == [False, True]
    assert rows[1]["saved_bytes"] < rows[0]["saved_bytes"]
    assert all(row["seconds"] > 0 for row in rows)
    assert all(row["peak_cuda_bytes"] is None for row in rows)  # x lives on the CPU
    assert peak_cuda_bytes(model, x) is None
    assert all(p.grad is None for p in model.parameters())  # timing leaves no gradients behind
    assert time_forward_backward(model, x, checkpoint=True, repeats=2) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checkpointing_lowers_the_cuda_peak():
    model = mlp_stack(12, 256).cuda()
    x = torch.randn(256, 256, device="cuda")
    assert peak_cuda_bytes(model, x, checkpoint=True) < peak_cuda_bytes(model, x)


def test_bad_models_are_rejected():
    with pytest.raises(TypeError, match="stack of layers"):
        saved_activation_bytes(nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="at least one layer"):
        forward_layers([], torch.randn(1, 2))
    with pytest.raises(ValueError, match="repeats"):
        time_forward_backward(mlp_stack(1, 2), torch.randn(1, 2), repeats=0)
