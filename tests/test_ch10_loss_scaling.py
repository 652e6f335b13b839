"""Chapter 10: fp16 underflow and loss scaling, against NumPy's float16 and torch.amp.GradScaler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.parallel.loss_scaling import (
    FP16_SMALLEST_SUBNORMAL,
    DynamicLossScaler,
    StaticLossScaler,
    dynamic_scale_update,
    fp16_training_demo,
    overflow_fraction,
    underflow_fraction,
)


def test_smallest_subnormal_is_numpys():
    assert FP16_SMALLEST_SUBNORMAL == float(np.finfo(np.float16).smallest_subnormal)


@pytest.mark.parametrize("scale", [1.0, 2.0 ** 8, 2.0 ** 16])
def test_underflow_fraction_matches_numpy(scale):
    grads = torch.randn(5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e-7
    grads[:10] = 0.0  # exact zeros are not "lost"
    values = grads.numpy() * scale
    nonzero = values != 0
    expected = float(((values.astype(np.float16) == 0) & nonzero).sum() / nonzero.sum())
    assert underflow_fraction(grads, scale) == pytest.approx(expected)


def test_scaling_rescues_small_gradients_and_too_much_overflows():
    grads = torch.logspace(-12, -4, 1000, dtype=torch.float64)
    assert underflow_fraction(grads) > 0.5
    assert underflow_fraction(grads, 2.0 ** 24) < underflow_fraction(grads, 2.0 ** 8) < underflow_fraction(grads)
    assert overflow_fraction(grads, 2.0 ** 8) == 0
    assert overflow_fraction(grads, 2.0 ** 40) > 0
    assert underflow_fraction(torch.zeros(3)) == 0.0
    with pytest.raises(TypeError, match="torch.Tensor"):
        underflow_fraction([1e-9, 1e-3])


def _reference_update(scale, found_inf, good_steps, growth, backoff, interval):
    """PyTorch's own kernel (what GradScaler.update calls), on CPU tensors."""
    scale_t = torch.tensor([scale], dtype=torch.float32)
    tracker = torch.tensor([good_steps], dtype=torch.int32)
    torch._amp_update_scale_(scale_t, tracker, torch.tensor([float(found_inf)]), growth, backoff, interval)
    return scale_t.item(), tracker.item()


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.booleans(), min_size=1, max_size=40), interval=st.integers(1, 5),
       growth=st.sampled_from([2.0, 4.0]), backoff=st.sampled_from([0.5, 0.25]))
def test_dynamic_update_matches_pytorchs_kernel(steps, interval, growth, backoff):
    ours = theirs = (2.0 ** 10, 0)
    scales = {2.0 ** 10}
    for found_inf in steps:
        ours = dynamic_scale_update(ours[0], found_inf, ours[1], growth, backoff, interval)
        theirs = _reference_update(theirs[0], found_inf, theirs[1], growth, backoff, interval)
        assert ours == theirs
        scales.add(ours[0])
    if any(steps) and not all(steps):
        assert len(scales) > 1


def test_dynamic_scaler_follows_grad_scaler_step_by_step():
    """Same model, same data, inf injected on the same steps: same scales, same skipped steps, same weights."""
    infs = [False, False, True, False, False, False, False, True, True, False, False, False, False]
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    start = torch.nn.Linear(4, 1)
    models = [torch.nn.Linear(4, 1) for _ in range(2)]
    for model in models:
        model.load_state_dict(start.state_dict())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    theirs = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_factor=2.0, backoff_factor=0.5,
                                  growth_interval=3)
    ours = DynamicLossScaler(2.0 ** 12, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    their_scales, our_scales = [], []
    for bad in infs:
        for model, optimizer, scaler in zip(models, optimizers, [theirs, ours]):
            optimizer.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            (scaler.scale(loss) if scaler is theirs else scaler.scale_loss(loss)).backward()
            if bad:
                model.weight.grad[0, 0] = float("inf")
            scaler.step(optimizer)
            scaler.update()
        their_scales.append(theirs.get_scale())
        our_scales.append(ours.scale)
        torch.testing.assert_close(models[1].weight, models[0].weight)
        torch.testing.assert_close(models[1].bias, models[0].bias)
    assert our_scales == their_scales
    assert len(set(our_scales)) > 2  # the script really moves the scale both ways


def test_static_scaler_unscales_and_skips_bad_steps():
    scaler = StaticLossScaler(1024.0)
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = torch.optim.SGD([w], lr=1.0)
    scaler.scale_loss((w ** 2).sum()).backward()
    torch.testing.assert_close(w.grad, 1024.0 * torch.tensor([2.0, 4.0]))
    assert scaler.unscale_(optimizer) is False
    torch.testing.assert_close(w.grad, torch.tensor([2.0, 4.0]))
    assert scaler.step(optimizer)
    scaler.update()
    w.grad = torch.tensor([float("nan"), 1.0])
    assert scaler.step(optimizer) is False  # skipped: weights unchanged
    torch.testing.assert_close(w.detach(), torch.tensor([-1.0, -2.0]))
    assert scaler.scale == 1024.0
    grads = [torch.tensor([2048.0])]
    scaler.unscale_(grads)
    assert grads[0].item() == 2.0


def test_scalers_reject_bad_settings():
    with pytest.raises(ValueError, match="positive"):
        StaticLossScaler(0)
    with pytest.raises(ValueError, match="growth_factor"):
        DynamicLossScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        DynamicLossScaler(backoff_factor=2.0)
    with pytest.raises(ValueError, match="growth_interval"):
        DynamicLossScaler(growth_interval=0)


def test_unscaled_fp16_gradients_vanish_but_scaled_ones_train():
    plain = fp16_training_demo(None, steps=60)
    scaled = fp16_training_demo(StaticLossScaler(2.0 ** 16), steps=60)
    assert plain.zero_share[0] > 0.5 and plain.zero_share[-1] == 1.0  # every gradient flushed to 0
    assert plain.losses[-1] > 0.3  # stuck far from the solution
    assert scaled.zero_share[0] == 0.0
    assert scaled.losses[-1] < 1e-3
    dynamic = fp16_training_demo(DynamicLossScaler(2.0 ** 48, growth_interval=10), steps=60)
    assert dynamic.scales[1] == 2.0 ** 47  # the first steps overflow: halve and skip
    assert dynamic.losses[-1] < 1e-3
