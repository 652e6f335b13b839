"""Tests of chapter 02's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub, fail every common mistake, and are quick and deterministic."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from check_contract import contract_tests
from wrong_solutions.ch02 import _Engine as _Build02  # the correct layer the wrong ones break

from llmcourse.basics import calibration, optim
from llmcourse.basics.autograd import mul_rule, topological_order
from llmcourse.grading.chapters.ch02 import chapter
from llmcourse.basics.dropout import dropout
from llmcourse.basics.gradients import layer_sensitivity, numerical_gradient
from llmcourse.grading.checks import run_checks

# --------------------------------------------------------------------------- correct solutions, written here


def _finite_difference_gradient(f, x, eps=1e-6):
    grad = torch.empty(x.shape, dtype=torch.float64)
    for index in range(x.numel()):
        up, down = x.detach().clone().to(torch.float64), x.detach().clone().to(torch.float64)
        up.view(-1)[index] += eps
        down.view(-1)[index] -= eps
        grad.view(-1)[index] = (float(f(up)) - float(f(down))) / (2 * eps)
    return grad


def _mul_backward(out):
    a, b = out.parents
    a.grad += out.grad * b.data
    b.grad += out.grad * a.data


def _topological_sort(root):
    order, seen = [], set()
    stack = [(root, False)]
    while stack:  # iterative depth-first search: parents first, then the node
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in reversed(node.parents) if p not in seen)
    return order


def _layer_delta(delta_next, W, z):
    s = 1 / (1 + torch.exp(-z))
    return s * (1 - s) * (delta_next @ W.T)


def _momentum_step(param, grad, buf, lr, momentum=0.9):
    buf = grad.clone() if buf is None else momentum * buf + grad
    return param - lr * buf, buf


def _adam_step(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    step = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
    return param - lr * step, m, v


def _inverted_dropout(x, p, training=True, generator=None):
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator) >= p
    return torch.where(keep, x / (1 - p), torch.zeros_like(x))


def _vanishing_gradient_ratio(activation, weight_std, depth=20, width=64, seed=0):
    # written differently from the solution: nn.Linear layers without bias in float64, gradients by autograd.grad
    g = torch.Generator().manual_seed(seed)
    layers = [torch.nn.Linear(width, width, bias=False).double() for _ in range(depth)]
    with torch.no_grad():
        for layer in layers:  # nn.Linear stores W transposed: weight = W.T
            layer.weight.copy_((weight_std * torch.randn(width, width, generator=g, dtype=torch.float64)).T)
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu}[activation]
    h = torch.randn(64, width, generator=g, dtype=torch.float64)
    for i, layer in enumerate(layers):
        h = layer(h) if i == depth - 1 else act(layer(h))
    first, last = torch.autograd.grad(h.pow(2).mean(), [layers[0].weight, layers[-1].weight])
    return (torch.linalg.vector_norm(first) / torch.linalg.vector_norm(last)).item()


def _momentum_distance(lr, momentum, steps):
    # top speed times the number of steps, minus what the warm-up loses: lr * momentum * (1 - momentum**steps) / (1 - momentum)**2
    top_speed = lr / (1 - momentum)
    return top_speed * steps - top_speed * momentum * (1 - momentum**steps) / (1 - momentum)


def _label_smoothed_cross_entropy(logits, targets, smoothing):
    # written as (1 - s) * cross-entropy + s * the mean over classes of -log p, from a stable logsumexp
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    nll = -log_p[torch.arange(len(targets)), targets]
    return ((1 - smoothing) * nll - smoothing * log_p.mean(dim=-1)).mean()


def _expected_calibration_error(probs, labels, n_bins=10):
    # vectorised differently from the check's loop: bin k = ceil(c * n) - 1, then one scatter-add per sum
    confidence, predicted = probs.double().max(dim=-1)
    which = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    counts = torch.bincount(which, minlength=n_bins).double()
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, confidence)
    right_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, (predicted == labels).double())
    return float((conf_sum - right_sum).abs().sum() / len(labels))


CORRECT = {
    "Value": _Build02,
    "finite_difference_gradient": _finite_difference_gradient,
    "mul_backward": _mul_backward,
    "topological_sort": _topological_sort,
    "layer_delta": _layer_delta,
    "momentum_step": _momentum_step,
    "adam_step": _adam_step,
    "inverted_dropout": _inverted_dropout,
    "vanishing_gradient_ratio": _vanishing_gradient_ratio,
    "momentum_distance": _momentum_distance,
    "label_smoothed_cross_entropy": _label_smoothed_cross_entropy,
    "expected_calibration_error": _expected_calibration_error,
}


def _package_mul_backward(out):
    for parent, local in zip(out.parents, mul_rule(out)):
        parent.grad += out.grad * local


PACKAGE = {
    "finite_difference_gradient": numerical_gradient,
    "mul_backward": _package_mul_backward,
    "topological_sort": topological_order,
    "layer_delta": lambda delta_next, W, z: layer_sensitivity(delta_next, W, z,
                                                              lambda t: torch.sigmoid(t) * (1 - torch.sigmoid(t))),
    "momentum_step": lambda param, grad, buf, lr, momentum=0.9: optim.momentum_step(param, grad, buf, lr, momentum),
    "adam_step": optim.adam_step,
    "inverted_dropout": lambda x, p, training=True, generator=None: dropout(x, p, training, generator),
    "label_smoothed_cross_entropy": calibration.label_smoothed_cross_entropy,
}


# --------------------------------------------------------------------------- the tests


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "02", CORRECT, PACKAGE, at_least=6)


@pytest.mark.parametrize("exercise, builtin", [
    ("inverted_dropout", lambda x, p, training=True, generator=None: F.dropout(x, p, training)),
    ("inverted_dropout", lambda x, p, training=True, generator=None: torch.nn.Dropout(p)(x) if training else x),
    ("label_smoothed_cross_entropy", lambda z, t, s: F.cross_entropy(z, t, label_smoothing=s)),
    ("label_smoothed_cross_entropy", lambda z, t, s: torch.nn.CrossEntropyLoss(label_smoothing=s)(z, t)),
    ("layer_delta", lambda delta_next, W, z: torch.autograd.grad(
        ((torch.sigmoid(z.clone().requires_grad_(True)) @ W) * delta_next).sum(), [z])[0]),
])
def test_checks_refuse_the_builtin_they_ask_you_to_write(exercise, builtin):
    results = run_checks(chapter, {exercise: builtin}, exercise)
    assert not all(r.passed for r in results)
    assert F.dropout(torch.ones(3), 0.5, training=False).tolist() == [1.0, 1.0, 1.0]  # restored afterwards


def test_autograd_is_refused_inside_finite_differences():
    def cheat(f, x, eps=1e-6):
        leaf = x.detach().clone().requires_grad_(True)
        f(leaf).backward()
        return leaf.grad

    results = run_checks(chapter, {"finite_difference_gradient": cheat}, "finite_difference_gradient")
    assert not any(r.passed for r in results)
    assert all("asks you to write" in r.message for r in results)
    x = torch.ones(2, requires_grad=True)
    (x * 2).sum().backward()  # backward works again afterwards
    assert x.grad.tolist() == [2.0, 2.0]



def test_momentum_distance_refuses_torch_sgd():
    def by_sgd(lr, momentum, steps):
        param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.SGD([param], lr=lr, momentum=momentum)
        for _ in range(min(steps, 100)):
            optimizer.zero_grad()
            param.sum().backward()
            optimizer.step()
        return -param.item()

    results = run_checks(chapter, {"momentum_distance": by_sgd}, "momentum_distance")
    assert results and not any(r.passed for r in results)
    assert all("asks you to write" in r.message for r in results)
    assert torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # back afterwards


def test_vanishing_gradient_ratio_check_needs_a_measurement():
    for lazy in (lambda activation, weight_std, depth=20, width=64, seed=0: 1.0,
                 lambda activation, weight_std, depth=20, width=64, seed=0: 0.25 ** (depth - 1)):
        results = run_checks(chapter, {"vanishing_gradient_ratio": lazy}, "vanishing_gradient_ratio")
        assert not all(r.passed for r in results)
