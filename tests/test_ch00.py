"""Tests of chapter 00: llmcourse.basics.essentials against independent references, and the graded checks."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llmcourse.grading.chapters.ch00 import chapter
from llmcourse.basics.essentials import (
    ToyClassification,
    accuracy,
    count_parameters,
    explain_device_error,
    explain_dtype_error,
    plot_history,
    train,
)
from llmcourse.grading.checks import run_checks

# --------------------------------------------------------------------------- count_parameters


def test_count_parameters_matches_hand_count():
    model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    linear_1, norm, linear_2 = 16 * 8 + 8, 8 + 8, 8 * 2 + 2  # BatchNorm: weight and bias; buffers excluded
    assert count_parameters(model) == linear_1 + norm + linear_2
    model[0].requires_grad_(False)
    assert count_parameters(model) == linear_1 + norm + linear_2
    assert count_parameters(model, trainable_only=True) == norm + linear_2


# --------------------------------------------------------------------------- error explanations


def _raised(fn) -> RuntimeError:
    with pytest.raises(RuntimeError) as info:
        fn()
    return info.value


def test_explain_device_error_on_a_real_mismatch():
    model = nn.Linear(3, 2).to("meta")
    text = explain_device_error(_raised(lambda: model(torch.randn(1, 3))))
    assert "meta" in text and "cpu" in text and "x = x.to(device)" in text


def test_explain_device_error_on_the_cuda_message():
    exc = RuntimeError("Expected all tensors to be on the same device, but found at least two devices, "
                       "cpu and cuda:0! (when checking argument for argument mat1 in method wrapper_CUDA_addmm)")
    text = explain_device_error(exc)
    assert "(cpu and cuda:0)" in text


def test_explain_device_error_declines_other_errors():
    text = explain_device_error(ValueError("shapes (2, 3) and (4, 5) do not match"))
    assert text.startswith("This is not a device mismatch")


def test_explain_dtype_error_on_real_mismatches():
    layer = nn.Linear(3, 2)
    text = explain_dtype_error(_raised(lambda: layer(torch.randn(1, 3, dtype=torch.float64))))
    assert "double" in text and "float" in text and "x = x.to(model_dtype)" in text
    text = explain_dtype_error(_raised(lambda: F.cross_entropy(torch.randn(2, 3), torch.tensor([0.0, 1.0]))))
    assert "y = y.long()" in text
    assert explain_dtype_error(ValueError("no")).startswith("This is not a dtype mismatch")


# --------------------------------------------------------------------------- ToyClassification


def test_toy_classification_is_fixed_and_follows_its_rule():
    data = ToyClassification(n=50, n_features=6, n_classes=3, seed=5)
    assert len(data) == 50
    x, y = data[7]
    assert x.shape == (6,) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(data[7][0], x)  # the same item every time
    assert int(y) == int(torch.argmax(x @ data.teacher))
    again = ToyClassification(n=50, n_features=6, n_classes=3, seed=5)
    assert torch.equal(again.x, data.x) and torch.equal(again.y, data.y)
    assert not torch.equal(ToyClassification(n=50, n_features=6, n_classes=3, seed=6).x, data.x)
    assert torch.equal(ToyClassification(n=10, n_features=6, n_classes=3, seed=5).teacher, data.teacher)
    assert set(data.y.tolist()) <= {0, 1, 2} and len(set(data.y.tolist())) > 1


# --------------------------------------------------------------------------- train and accuracy


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    data = ToyClassification(n=64, n_features=8, seed=seed)
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return data, loader, model, optimizer, scheduler


def test_train_matches_a_hand_written_loop():
    _, loader, model, optimizer, scheduler = _setup()
    losses = train(model, loader, optimizer, scheduler, epochs=3, progress=False)

    _, loader, ref, ref_optimizer, ref_scheduler = _setup()
    expected = []
    for _ in range(3):
        for x, y in loader:
            ref_optimizer.zero_grad()
            loss = F.cross_entropy(ref(x), y)
            loss.backward()
            ref_optimizer.step()
            ref_scheduler.step()
            expected.append(loss.item())

    assert len(losses) == 3 * 4
    assert losses == expected
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 ** 4)  # 12 scheduler steps
    assert losses[-1] < losses[0]


def test_train_puts_the_model_in_training_mode_and_works_without_scheduler():
    _, loader, model, optimizer, _ = _setup()
    model.eval()
    losses = train(model, loader, optimizer, epochs=1, progress=False)
    assert model.training and len(losses) == 4


def test_accuracy_matches_a_direct_count():
    data, _, model, _, _ = _setup()
    model.train()
    expected = (model(data.x).argmax(dim=1) == data.y).float().mean().item()
    loader = DataLoader(data, batch_size=10)  # uneven: the last batch has 4 items
    assert accuracy(model, loader) == pytest.approx(expected)
    assert not model.training


# --------------------------------------------------------------------------- the graded checks


def gradients(f, *inputs):
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    f(*leaves).backward()
    return tuple(x.grad for x in leaves)


def count_trainable_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def swap_modules(model, old_type, make_new):
    count = 0
    for name, child in model.named_children():
        if isinstance(child, old_type):
            setattr(model, name, make_new(child))
            count += 1
        else:
            count += swap_modules(child, old_type, make_new)
    return count


def prepare_batch(model, x, y):
    weight = next(model.parameters())
    return x.to(weight.device, weight.dtype), y.to(weight.device, torch.long)


def make_loader(dataset, batch_size, seed):
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def train_step(model, optimizer, x, y):
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate_accuracy(model, loader):
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x).argmax(dim=-1) == y).sum().item()
        total += len(y)
    return correct / total


def first_step_size(optimizer, grad_scale, lr=0.01, n=10_000):
    # written differently from the solution: the gradient is set by hand and the weights start at one
    param = nn.Parameter(torch.ones(n))
    param.grad = grad_scale * torch.randn(n, generator=torch.Generator().manual_seed(1))
    opt = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[optimizer]([param], lr=lr, weight_decay=0.0)
    start = param.detach().clone()
    opt.step()
    return float(torch.mean(torch.abs(param.detach() - start)))


def linear_mse_grads(x, weight, bias, y):
    # entry by entry: d/dw[j, k] of mean((pred - y)**2) is the mean over examples and outputs of 2 (pred - y) dpred/dw
    residual = F.linear(x, weight, bias) - y
    scale = 2.0 / residual.numel()
    grad_weight = scale * torch.einsum("nj,nk->jk", residual, x)
    grad_bias = scale * residual.sum(dim=0)
    return grad_weight, grad_bias


CORRECT = {f.__name__: f for f in
           [gradients, count_trainable_parameters, swap_modules, prepare_batch, make_loader, train_step,
            evaluate_accuracy, first_step_size, linear_mse_grads]}


def _stub(*args, **kwargs):
    raise NotImplementedError


def test_chapter_has_at_least_five_exercises_with_hints():
    assert chapter.number == "00"
    assert set(chapter.exercises) == set(CORRECT)
    assert len(chapter.exercises) >= 5
    assert all(check.hint for check in chapter.checks)


@pytest.mark.parametrize("exercise", chapter.exercises)
def test_checks_pass_on_a_correct_solution_alone(exercise):
    results = run_checks(chapter, {exercise: CORRECT[exercise]}, exercise)
    assert results and all(r.passed for r in results), [r.message for r in results if not r.passed]


@pytest.mark.parametrize("exercise", chapter.exercises)
def test_every_check_fails_on_a_stub(exercise):
    results = run_checks(chapter, {exercise: _stub}, exercise)
    assert results and not any(r.passed for r in results)
    assert all("not written yet" in r.message for r in results)


def test_failure_messages_are_deterministic():
    def swapped(f, *inputs):  # a wrong answer whose message quotes numbers from the seeded inputs
        return tuple(reversed(gradients(f, *inputs)))

    messages = [[r.message for r in run_checks(chapter, {"gradients": swapped}, "gradients")] for _ in range(2)]
    assert messages[0] == messages[1]
    assert "is wrong: one entry is" in messages[0][1]


def test_train_step_check_notices_a_wrong_learning_rate():
    def train_step_half(model, optimizer, x, y):  # the check compares with a reference step, not just "it ran"
        optimizer.param_groups[0]["lr"] /= 2
        return train_step(model, optimizer, x, y)

    results = run_checks(chapter, {"train_step": train_step_half}, "train_step")
    assert not results[0].passed


def test_accuracy_check_uses_the_labels():
    results = run_checks(chapter, {"evaluate_accuracy": lambda model, loader: 1.0}, "evaluate_accuracy")
    assert not results[0].passed


def test_plot_history_draws_the_given_numbers():
    losses, lrs = [0.9, 0.5, 0.2], [0.1, 0.1, 0.05]
    fig = plot_history(losses, lrs)
    left, right = fig.axes
    assert list(left.lines[0].get_ydata()) == losses and list(right.lines[0].get_ydata()) == lrs
    assert len(plot_history(losses).axes) == 1


def test_linear_mse_grads_check_refuses_autograd():
    def with_autograd(x, weight, bias, y):
        w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        F.mse_loss(F.linear(x, w, b), y).backward()
        return w.grad, b.grad

    results = run_checks(chapter, {"linear_mse_grads": with_autograd}, "linear_mse_grads")
    assert results and not any(r.passed for r in results)
    assert all("asks you to write" in r.message for r in results)
    x = torch.ones(2, requires_grad=True)
    (x * 3).sum().backward()  # autograd works again afterwards
    assert x.grad.tolist() == [3.0, 3.0]


def test_first_step_size_check_needs_a_real_measurement():
    for lazy in (lambda optimizer, grad_scale, lr=0.01, n=10_000: lr,
                 lambda optimizer, grad_scale, lr=0.01, n=10_000: lr * grad_scale):
        assert not all(r.passed for r in run_checks(chapter, {"first_step_size": lazy}, "first_step_size"))
