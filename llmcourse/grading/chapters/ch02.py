"""Graded checks of chapter 02, "Learning: gradients and backpropagation".

Seven warm-up exercises and one engine to build (``Value``), each checked on seeded inputs against an
independent reference: ``torch.autograd`` for gradients and sensitivities, ``torch.optim``
for the optimizer steps, the package's engine (:mod:`llmcourse.basics.autograd`) and
``torch.nn.functional.dropout`` for dropout. Then an open experiment,
``vanishing_gradient_ratio`` (how much smaller the first layer's gradient is than the
last one's in a deep network), checked against the bounds the slope argument gives, and a
derivation, ``momentum_distance`` (how far SGD with momentum carries a parameter whose
gradient is always 1), checked against ``torch.optim.SGD`` run step by step and, for
runs of up to 10^15 steps, against the same recurrence applied by repeated squaring.
Last, ``label_smoothed_cross_entropy`` (cross-entropy against a smoothed target),
checked against ``nn.CrossEntropyLoss(label_smoothing=...)`` while PyTorch's
cross-entropy is switched off for the learner's code, and ``expected_calibration_error``,
checked against a loop that bins one prediction at a time.
Each exercise is checked on its own: no check needs any other exercise's function.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch._dynamo  # noqa: F401  (the first torch.optim optimizer imports it; pay that once, at import time)
import torch.nn.functional as F

from llmcourse.basics.autograd import RULES, Value, backpropagate, topological_order
from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    as_tensor,
    call,
    expect,
    expect_close,
    expect_shape,
    forbid,
    forbid_autograd,
    run_learner,
    seeded_generator,
    seeded_randn,
)

chapter = Chapter("02", "Learning: gradients and backpropagation")

Namespace = Mapping[str, Any]
F64 = torch.float64


def _randn(*shape: int, seed: int) -> torch.Tensor:
    """Seeded normal noise in float64, the precision of every check in this chapter."""
    return seeded_randn(*shape, seed=seed, dtype=F64)


def _autograd(f, x: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(leaf), leaf)
    return grad


_DROPOUT = [(F, "dropout", "F.dropout"), (torch, "dropout", "torch.dropout"),
            (torch.nn.functional, "dropout1d", "F.dropout1d")]


# --------------------------------------------------------------------------- finite_difference_gradient

def _fd(ns: Namespace, f, x: torch.Tensor, what: str, **kwargs: Any) -> torch.Tensor:
    with forbid_autograd("finite_difference_gradient"):
        got = call(ns, "finite_difference_gradient", f, x, **kwargs)
    return expect_shape(got, tuple(x.shape), what)


@chapter.check("finite_difference_gradient", points=2, hint="Nudge one element at a time: f at x + eps and at "
               "x - eps in that element only, all the others unchanged, and divide the difference by the distance "
               "between the two points.")
def finite_difference_matches_autograd(ns: Namespace) -> None:
    def f(t):
        return (torch.sin(t) * t**2).sum() + t.prod()

    x = _randn(5, seed=1)
    want = _autograd(f, x)  # before the call, in case the learner's code changes x
    expect_close(_fd(ns, f, x, "the gradient of sum(sin(x) x²) + prod(x)"), want,
                 "the gradient of sum(sin(x) x²) + prod(x) (5 elements)", atol=1e-6, rtol=1e-5)
    M = _randn(4, 2, seed=2)

    def g(t):
        return torch.tanh(t @ M).sum() + (t**2).mean()

    x = _randn(3, 4, seed=3)
    want = _autograd(g, x)
    expect_close(_fd(ns, g, x, "the gradient for a (3, 4) input"), want,
                 "the gradient of tanh(x @ M).sum() + mean(x²) for a (3, 4) input", atol=1e-6, rtol=1e-5)


@chapter.check("finite_difference_gradient", points=1, hint="Use the central difference (f(x + eps) - f(x - eps)) "
               "/ (2 eps) with the eps you are given: its error shrinks like eps², a one-sided difference's only "
               "like eps.")
def finite_difference_is_central(ns: Namespace) -> None:
    def cube(t):
        return (t**3).sum()

    x = torch.tensor([1.0, 2.0, -1.5], dtype=F64)
    want = 3 * x**2
    got = _fd(ns, cube, x, "the gradient of sum(x³)", eps=1e-3)
    # the central difference of x³ is 3x² + eps² exactly; a one-sided one is off by about 3x·eps
    expect_close(got, want, "the gradient of sum(x³) at [1, 2, -1.5] with eps=1e-3", atol=1e-5, rtol=0)


@chapter.check("finite_difference_gradient", points=1, hint="Put every nudged element back to its original value "
               "before moving on to the next one (save it first), so x is unchanged when you return.")
def finite_difference_leaves_x_alone(ns: Namespace) -> None:
    def f(t):
        return (torch.exp(0.3 * t) * torch.arange(1.0, 7.0, dtype=F64).reshape(2, 3)).sum()

    x = _randn(2, 3, seed=4)
    before = x.clone()
    got = _fd(ns, f, x, "the gradient for a (2, 3) input", eps=1e-5)
    expect(torch.allclose(x, before, rtol=0, atol=1e-12),
           "finite_difference_gradient changed its input x; every element must be back at its value when it returns.")
    expect_close(got, _autograd(f, before), "the gradient of sum(k · exp(0.3 x)) for a (2, 3) input",
                 atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- mul_backward

def _grads(values: list[Value]) -> torch.Tensor:
    return torch.tensor([v.grad for v in values], dtype=F64)


@chapter.check("mul_backward", points=1, hint="For out = a * b, ∂out/∂a is b's value and ∂out/∂b is a's value; each "
               "parent receives out.grad times its local derivative.")
def mul_backward_local_rule(ns: Namespace) -> None:
    for a_data, b_data, out_grad in [(2.0, -3.0, 1.5), (0.5, 4.0, -2.0), (-1.25, 0.75, 1.0)]:
        a, b = Value(a_data, label="a"), Value(b_data, label="b")
        out = a * b
        out.grad = out_grad
        call(ns, "mul_backward", out)
        expect_close(_grads([a, b]), torch.tensor([out_grad * b_data, out_grad * a_data], dtype=F64),
                     f"[a.grad, b.grad] for a={a_data}, b={b_data}, out.grad={out_grad}")
        expect(out.grad == out_grad, "mul_backward changed out.grad; it should only add to the parents' grads.")


@chapter.check("mul_backward", points=1, hint="Add to a.grad and b.grad (+=) instead of overwriting them: a Value "
               "used on several paths collects one contribution from each, and in a * a both parents are the same "
               "Value.")
def mul_backward_accumulates(ns: Namespace) -> None:
    a, b = Value(3.0, label="a"), Value(-2.0, label="b")
    a.grad, b.grad = 0.25, -1.0  # what other paths already contributed
    out = a * b
    out.grad = 2.0
    call(ns, "mul_backward", out)
    expect_close(_grads([a, b]), torch.tensor([0.25 + 2.0 * -2.0, -1.0 + 2.0 * 3.0], dtype=F64),
                 "[a.grad, b.grad] when both already held a gradient (0.25 and -1)")
    s = Value(1.5, label="s")
    square = s * s
    square.grad = 1.0
    call(ns, "mul_backward", square)
    expect_close(torch.tensor(s.grad, dtype=F64), torch.tensor(3.0, dtype=F64), "s.grad for out = s * s at s=1.5 "
                 "(d(s²)/ds = 2s)")


@chapter.check("mul_backward", points=1, hint="Inside a whole graph the rule is the same: read the parents from "
               "out.parents and scale by out.grad, the sensitivity that arrived from further on.")
def mul_backward_in_a_graph(ns: Namespace) -> None:
    xs, ws, b = [0.8, 0.5, -1.2], [1.5, -2.0, 0.3], 0.1
    x_vals = [Value(v) for v in xs]
    w_vals = [Value(v) for v in ws]
    b_val = Value(b)
    z = b_val
    for w, x in zip(w_vals, x_vals):
        z = z + w * x
    loss = (z.tanh() * z.sigmoid() - 0.5) ** 2 + w_vals[0] * w_vals[0] * 0.1
    order = topological_order(loss)
    for node in order:
        node.grad = 0.0
    loss.grad = 1.0
    for node in reversed(order):
        if not node.parents:
            continue
        if node.op == "*":
            call(ns, "mul_backward", node)
        else:
            for parent, local in zip(node.parents, RULES[node.op](node)):
                parent.grad += node.grad * local

    x_t = torch.tensor(xs, dtype=F64, requires_grad=True)
    w_t = torch.tensor(ws, dtype=F64, requires_grad=True)
    b_t = torch.tensor(b, dtype=F64, requires_grad=True)
    z_t = b_t + (w_t * x_t).sum()
    loss_t = (torch.tanh(z_t) * torch.sigmoid(z_t) - 0.5) ** 2 + w_t[0] * w_t[0] * 0.1
    loss_t.backward()
    got = torch.cat([_grads(w_vals), _grads(x_vals), _grads([b_val])])
    want = torch.cat([w_t.grad, x_t.grad, b_t.grad.reshape(1)])
    expect_close(got, want, "the gradients of a neuron's loss (weights, inputs, bias) with your rule for every *",
                 atol=1e-10, rtol=1e-8)


# --------------------------------------------------------------------------- topological_sort

def _sorted(ns: Namespace, root: Value, what: str) -> list[Value]:
    order = call(ns, "topological_sort", root)
    try:
        order = list(order)
    except TypeError:
        raise CheckFailed(f"topological_sort should return a list of Values, got {type(order).__name__}.") from None
    bad = [item for item in order if not isinstance(item, Value)]
    expect(not bad, f"topological_sort should return Values only; for {what} it returned a "
                    f"{type(bad[0]).__name__ if bad else ''}.")
    return order


def _uneven_graph() -> Value:
    """x reaches the root along a long path and a short one; a breadth-first order gets this wrong."""
    x, y = Value(0.7, label="x"), Value(-1.3, label="y")
    long_path = ((x * 2.0 + y).tanh() * x).exp()
    return (long_path + x * y).log()  # log of 1.072 - 0.91 > 0


def _describe(node: Value) -> str:
    return node.label or (f"the '{node.op}' node" if node.op else f"the input {node.data:g}")


@chapter.check("topological_sort", points=1, hint="A node may be appended only after all of its parents are already "
               "in the list: visit the parents first (depth-first), then append the node. The root comes last.")
def topological_sort_parents_first(ns: Namespace) -> None:
    root = _uneven_graph()
    order = _sorted(ns, root, "a small graph")
    expect(len(order) > 0 and order[-1] is root, "the root (the Value you were given) should be the last item.")
    position: dict[int, int] = {}
    for i, node in enumerate(order):  # where each node first appears (repeats are the next check's business)
        position.setdefault(id(node), i)
    for node in order:
        for parent in node.parents:
            expect(id(parent) in position, f"{_describe(parent)} (a parent of {_describe(node)}) is missing.")
            expect(position[id(parent)] < position[id(node)],
                   f"{_describe(node)} comes before its parent {_describe(parent)}; every node must come after "
                   "all of its parents.")


@chapter.check("topological_sort", points=1, hint="Keep a set of the nodes already visited, so a Value reached along "
               "several paths is listed once; and list every node, inputs and constants included.")
def topological_sort_each_node_once(ns: Namespace) -> None:
    x = Value(1.2, label="x")
    y = x * x
    for k in range(4):  # x feeds many nodes, and y is used on every line
        y = y + x * float(k) + y * 0.1
    order = _sorted(ns, y, "a graph in which x is used many times")
    expected = topological_order(y)
    ids = [id(node) for node in order]
    expect(len(ids) == len(set(ids)), f"some Values appear more than once ({len(ids)} items for "
                                      f"{len(expected)} distinct Values).")
    expect({id(n) for n in expected} <= set(ids), f"some Values are missing: found {len(set(ids))} of the "
                                                  f"{len(expected)} Values the root depends on.")
    expect(len(ids) == len(expected), f"the list has {len(ids)} Values, but the root depends on {len(expected)}.")


@chapter.check("topological_sort", points=1, hint="Walked backwards, your order must visit each node only after "
               "every node that uses it; then backpropagation gives the same gradients as PyTorch.")
def topological_sort_drives_backprop(ns: Namespace) -> None:
    g = seeded_generator(7)
    xs = torch.randn(3, generator=g, dtype=F64)
    W1 = torch.randn(3, 4, generator=g, dtype=F64) / 2
    W2 = torch.randn(4, generator=g, dtype=F64) / 2
    x_vals = [Value(float(v)) for v in xs]
    W1_vals = [[Value(float(W1[i, j])) for j in range(4)] for i in range(3)]
    W2_vals = [Value(float(v)) for v in W2]
    hidden = [sum((x_vals[i] * W1_vals[i][j] for i in range(3)), Value(0.0)).tanh() for j in range(4)]
    out = sum((h * w for h, w in zip(hidden, W2_vals)), Value(0.0))
    loss = (out - 0.5) ** 2
    order = _sorted(ns, loss, "a small network's loss")
    expect(len(order) > 0 and order[-1] is loss, "the root (the Value you were given) should be the last item.")
    backpropagate(loss, order=order)

    W1_t, W2_t = W1.clone().requires_grad_(True), W2.clone().requires_grad_(True)
    ((torch.tanh(xs @ W1_t) @ W2_t - 0.5) ** 2).backward()
    got = torch.cat([_grads([w for row in W1_vals for w in row]), _grads(W2_vals)])
    expect_close(got, torch.cat([W1_t.grad.flatten(), W2_t.grad]),
                 "the weight gradients of a 3-4-1 tanh network, backpropagated in your order", atol=1e-10, rtol=1e-8)


# --------------------------------------------------------------------------- layer_delta

def _layer_delta_reference(delta_next: torch.Tensor, W: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """δz by autograd: the next layer computes sigmoid(z) @ W + b, and the loss changes by δ_next per unit of it."""
    def loss(t):
        return ((torch.sigmoid(t) @ W + 0.3) * delta_next).sum()
    return _autograd(loss, z)


def _layer_delta(ns: Namespace, delta_next, W, z, what: str) -> torch.Tensor:
    with forbid_autograd("layer_delta"):
        got = call(ns, "layer_delta", delta_next, W, z)
    return expect_shape(got, tuple(z.shape), what)


@chapter.check("layer_delta", points=2, hint="Each unit i collects Σ_j W[i, j] · delta_next[j] from the units it "
               "feeds (one matrix product with W transposed), then multiplies by the slope of the sigmoid at its "
               "own z.")
def layer_delta_matches_autograd(ns: Namespace) -> None:
    delta_next, W, z = _randn(5, 3, seed=20), _randn(4, 3, seed=21), _randn(5, 4, seed=22) * 2
    got = _layer_delta(ns, delta_next, W, z, "layer_delta for a batch of 5, 4 units feeding 3")
    expect_close(got, _layer_delta_reference(delta_next, W, z), "layer_delta for a batch of 5, 4 units feeding 3",
                 atol=1e-10, rtol=1e-8)


@chapter.check("layer_delta", points=1, hint="Use the sigmoid's derivative σ'(z) = σ(z)(1 - σ(z)), not σ(z) itself: "
               "a unit saturated at z = ±10 passes almost nothing back, one at z = 0 passes the most (a quarter).")
def layer_delta_uses_the_slope(ns: Namespace) -> None:
    z = torch.tensor([[-10.0, 0.0, 10.0]], dtype=F64)
    W = torch.tensor([[1.0, -2.0], [0.5, 1.0], [2.0, 3.0]], dtype=F64)
    delta_next = torch.tensor([[0.4, -0.1]], dtype=F64)
    got = _layer_delta(ns, delta_next, W, z, "layer_delta for z = [-10, 0, 10]")
    expect_close(got, _layer_delta_reference(delta_next, W, z), "layer_delta for units at z = -10, 0 and 10",
                 atol=1e-10, rtol=1e-8)


@chapter.check("layer_delta", points=1, hint="Work on whole matrices: delta_next is (batch, n_next), W is "
               "(n_this, n_next) and the result has z's shape (batch, n_this), one row per example.")
def layer_delta_shapes(ns: Namespace) -> None:
    for batch, n_this, n_next, seed in [(1, 6, 2, 30), (8, 2, 7, 31)]:
        delta_next, W, z = _randn(batch, n_next, seed=seed), _randn(n_this, n_next, seed=seed + 1), \
            _randn(batch, n_this, seed=seed + 2)
        what = f"layer_delta for a batch of {batch}, {n_this} units feeding {n_next}"
        expect_close(_layer_delta(ns, delta_next, W, z, what), _layer_delta_reference(delta_next, W, z), what,
                     atol=1e-10, rtol=1e-8)


# --------------------------------------------------------------------------- momentum_step

def _problem(seed: int) -> tuple[list[torch.Tensor], Any]:
    """A small regression network: its parameters and a function giving the gradients at any parameters."""
    g = seeded_generator(seed)
    X, Y = torch.randn(16, 4, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)
    init = [torch.randn(4, 3, generator=g, dtype=F64) / 2, torch.randn(3, generator=g, dtype=F64) / 2,
            torch.randn(3, 2, generator=g, dtype=F64) / 2]

    def gradients(params: list[torch.Tensor]) -> list[torch.Tensor]:
        leaves = [p.detach().clone().requires_grad_(True) for p in params]
        loss = ((torch.tanh(X @ leaves[0] + leaves[1]) @ leaves[2] - Y) ** 2).mean()
        return list(torch.autograd.grad(loss, leaves))

    return init, gradients


def _tensors(result: Any, n: int, name: str, what: str) -> tuple[torch.Tensor, ...]:
    if not isinstance(result, (tuple, list)) or len(result) != n:
        raise CheckFailed(f"{name} should return a tuple of {n} tensors, got {type(result).__name__}"
                          f"{f' of length {len(result)}' if isinstance(result, (tuple, list)) else ''} ({what}).")
    return tuple(as_tensor(r, f"{name} ({what})") for r in result)


def _momentum_call(ns: Namespace, param, grad, buf, lr, momentum, what: str):
    param_before, grad_before = param.clone(), grad.clone()
    buf_before = None if buf is None else buf.clone()
    result = call(ns, "momentum_step", param, grad, buf, lr, momentum)
    new_param, new_buf = _tensors(result, 2, "momentum_step", what)
    unchanged = torch.equal(param, param_before) and torch.equal(grad, grad_before) and \
        (buf is None or torch.equal(buf, buf_before))
    expect(unchanged, f"momentum_step changed one of its arguments in place ({what}); return new tensors instead.")
    return new_param, new_buf


@chapter.check("momentum_step", points=1, hint="On the first step there is no buffer yet (buf is None): the buffer "
               "becomes the gradient itself and the step is plain gradient descent. Return new tensors and leave "
               "the arguments unchanged.")
def momentum_first_step(ns: Namespace) -> None:
    param, grad = torch.tensor([1.0, -2.0, 0.5], dtype=F64), torch.tensor([0.3, -0.6, 2.0], dtype=F64)
    new_param, new_buf = _momentum_call(ns, param, grad, None, 0.1, 0.9, "the first step")
    expect_close(new_buf, grad, "the buffer after the first step", atol=1e-12)
    expect_close(new_param, param - 0.1 * grad, "the parameters after the first step", atol=1e-12)


@chapter.check("momentum_step", points=2, hint="Follow PyTorch's rule: the new buffer adds the gradient to "
               "momentum times the old buffer (no 1 - momentum factor, no learning rate inside the buffer), and the "
               "step uses the new buffer.")
def momentum_matches_torch_sgd(ns: Namespace) -> None:
    init, gradients = _problem(40)
    for lr, momentum in [(0.05, 0.9), (0.1, 0.5)]:
        reference = [p.clone().requires_grad_(True) for p in init]
        optimizer = torch.optim.SGD(reference, lr=lr, momentum=momentum)
        params, bufs = [p.clone() for p in init], [None] * len(init)
        for step in range(1, 61):
            grads = gradients(params)
            for i, g in enumerate(grads):
                params[i], bufs[i] = _momentum_call(ns, params[i], g, bufs[i], lr, momentum, f"step {step}")
            optimizer.zero_grad()
            for p, g in zip(reference, gradients(reference)):
                p.grad = g
            optimizer.step()
            if step in (1, 2, 10, 60):
                what = f"after {step} steps with lr={lr}, momentum={momentum}"
                expect_close(torch.cat([p.flatten() for p in params]),
                             torch.cat([p.detach().flatten() for p in reference]),
                             f"the parameters {what} (compared with torch.optim.SGD)", atol=1e-6, rtol=1e-6)
                expect_close(torch.cat([b.flatten() for b in bufs]),
                             torch.cat([optimizer.state[p]["momentum_buffer"].flatten() for p in reference]),
                             f"the momentum buffer {what} (compared with torch.optim.SGD)", atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- adam_step

def _adam_call(ns: Namespace, param, grad, m, v, t, lr, betas, eps, what: str):
    result = call(ns, "adam_step", param, grad, m, v, t, lr, betas, eps)
    return _tensors(result, 3, "adam_step", what)


@chapter.check("adam_step", points=1, hint="Divide m and v by (1 - beta1**t) and (1 - beta2**t) before using them "
               "(bias correction): then the very first step moves every parameter by about lr, whatever the size "
               "of its gradient.")
def adam_first_step(ns: Namespace) -> None:
    param = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    grad = torch.tensor([1e-3, -1.0, 1e3, 5.0], dtype=F64)
    zeros = torch.zeros(4, dtype=F64)
    new_param, m, v = _adam_call(ns, param, grad, zeros.clone(), zeros.clone(), 1, 0.01, (0.9, 0.999), 1e-8,
                                 "the first step")
    expect_close(m, 0.1 * grad, "m after the first step (beta1 = 0.9)", atol=1e-12, rtol=1e-9)
    expect_close(v, 0.001 * grad**2, "v after the first step (beta2 = 0.999)", atol=1e-12, rtol=1e-9)
    expect_close(new_param, param - 0.01 * grad / (grad.abs() + 1e-8),
                 "the parameters after the first step (each should move by about lr = 0.01)", atol=1e-9, rtol=1e-9)


@chapter.check("adam_step", points=2, hint="m is a running average of the gradient, v of its square (grad * grad); "
               "the step is lr * m_hat / (sqrt(v_hat) + eps), with eps added after the square root.")
def adam_matches_torch(ns: Namespace) -> None:
    init, gradients = _problem(50)
    for lr, betas, eps in [(0.01, (0.9, 0.999), 1e-8), (0.005, (0.5, 0.9), 1e-2)]:
        reference = [p.clone().requires_grad_(True) for p in init]
        optimizer = torch.optim.Adam(reference, lr=lr, betas=betas, eps=eps)
        params = [p.clone() for p in init]
        ms = [torch.zeros_like(p) for p in init]
        vs = [torch.zeros_like(p) for p in init]
        for t in range(1, 101):
            grads = gradients(params)
            for i, g in enumerate(grads):
                params[i], ms[i], vs[i] = _adam_call(ns, params[i], g, ms[i], vs[i], t, lr, betas, eps, f"step {t}")
            optimizer.zero_grad()
            for p, g in zip(reference, gradients(reference)):
                p.grad = g
            optimizer.step()
            if t in (1, 3, 100):
                what = f"after {t} steps with lr={lr}, betas={betas}, eps={eps}"
                expect_close(torch.cat([p.flatten() for p in params]),
                             torch.cat([p.detach().flatten() for p in reference]),
                             f"the parameters {what} (compared with torch.optim.Adam)", atol=1e-6, rtol=1e-6)
                expect_close(torch.cat([v.flatten() for v in vs]),
                             torch.cat([optimizer.state[p]["exp_avg_sq"].flatten() for p in reference]),
                             f"v {what} (compared with torch.optim.Adam's exp_avg_sq)", atol=1e-9, rtol=1e-6)


@chapter.check("adam_step", points=1, hint="Return the updated running averages as well, as new tensors: (param, m, "
               "v). They are not bias-corrected; the correction is only used for the step.")
def adam_returns_its_state(ns: Namespace) -> None:
    param, m, v = _randn(6, seed=60), torch.zeros(6, dtype=F64), torch.zeros(6, dtype=F64)
    m_ref, v_ref = m.clone(), v.clone()
    for t in range(1, 4):
        grad = _randn(6, seed=60 + t)
        before = (param.clone(), grad.clone(), m.clone(), v.clone())
        new = _adam_call(ns, param, grad, m, v, t, 0.1, (0.8, 0.95), 1e-8, f"step {t}")
        expect(all(torch.equal(a, b) for a, b in zip((param, grad, m, v), before)),
               f"adam_step changed one of its arguments in place (step {t}); return new tensors instead.")
        param, m, v = new
        m_ref = 0.8 * m_ref + 0.2 * grad
        v_ref = 0.95 * v_ref + 0.05 * grad**2
    expect_close(m, m_ref, "m after 3 steps (betas = (0.8, 0.95))", atol=1e-12, rtol=1e-9)
    expect_close(v, v_ref, "v after 3 steps (betas = (0.8, 0.95))", atol=1e-12, rtol=1e-9)


# --------------------------------------------------------------------------- inverted_dropout

def _dropout(ns: Namespace, x, p, training, generator, what: str) -> torch.Tensor:
    with forbid("inverted_dropout", _DROPOUT):
        got = call(ns, "inverted_dropout", x, p, training, generator)
    return expect_shape(got, tuple(x.shape), what)


@chapter.check("inverted_dropout", points=1, hint="At inference (training=False) inverted dropout does nothing at "
               "all: return x as it is, with no scaling. With p = 0 nothing is dropped either.")
def dropout_off_is_identity(ns: Namespace) -> None:
    x = _randn(4, 5, seed=70).float()
    got = _dropout(ns, x, 0.5, False, seeded_generator(0), "inverted_dropout(x, p=0.5, training=False)")
    expect_close(got, x, "inverted_dropout(x, p=0.5, training=False)", atol=0, rtol=0)
    got = _dropout(ns, x, 0.0, True, seeded_generator(0), "inverted_dropout(x, p=0, training=True)")
    expect_close(got, x, "inverted_dropout(x, p=0, training=True)", atol=0, rtol=0)


@chapter.check("inverted_dropout", points=2, hint="Zero each entry with probability p, and divide the survivors by "
               "(1 - p), so that the average of the output equals the average of the input.")
def dropout_keeps_the_expectation(ns: Namespace) -> None:
    n = 200_000
    for p, seed in [(0.3, 71), (0.8, 72)]:
        x = torch.full((n,), 3.0)
        got = _dropout(ns, x, p, True, seeded_generator(seed), f"inverted_dropout of {n} threes with p={p}")
        reference = F.dropout(x, p, training=True)  # PyTorch's inverted dropout, for the same statistics
        zeros, ref_zeros = (got == 0).double().mean().item(), (reference == 0).double().mean().item()
        expect(abs(zeros - p) < 0.01, f"with p={p} a fraction {zeros:.3f} of the outputs is 0; about {p} should "
                                      f"be (torch.nn.functional.dropout zeroes {ref_zeros:.3f}).")
        survivors = got[got != 0]
        expect(len(survivors) > 0 and torch.allclose(survivors, torch.full_like(survivors, 3.0 / (1 - p))),
               f"with p={p} the kept entries of an input of threes should all be 3 / (1 - p) = {3.0 / (1 - p):.4g}, "
               f"like torch.nn.functional.dropout's {reference[reference != 0][0].item():.4g}; found "
               f"{survivors[0].item() if len(survivors) else float('nan'):.4g}.")
        mean = got.double().mean().item()
        spread = 3.0 * (p / (1 - p)) ** 0.5 / n**0.5  # the standard deviation of the mean of n outputs
        expect(abs(mean - 3.0) < 5 * spread,
               f"with p={p} the mean output is {mean:.4f}, but it should stay close to the input's mean, 3.")


@chapter.check("inverted_dropout", points=1, hint="Draw the random numbers with the generator you are given (e.g. "
               "torch.rand(x.shape, generator=generator)), so the same seed gives the same mask; keep x's shape.")
def dropout_uses_the_generator(ns: Namespace) -> None:
    x = _randn(64, 32, seed=73).float()
    first = _dropout(ns, x, 0.5, True, seeded_generator(5), "inverted_dropout of a (64, 32) tensor")
    second = _dropout(ns, x, 0.5, True, seeded_generator(5), "inverted_dropout of a (64, 32) tensor")
    other = _dropout(ns, x, 0.5, True, seeded_generator(6), "inverted_dropout of a (64, 32) tensor")
    expect(torch.equal(first, second), "two calls with generators seeded alike gave different masks; draw the "
                                       "random numbers from the `generator` argument.")
    expect(not torch.equal(first, other), "generators with different seeds gave the same mask.")
    kept = first != 0
    expect_close(first[kept], x[kept] * 2.0, "the kept entries with p=0.5", atol=1e-6)


# --------------------------------------------------------------------------- Value (build the engine)

_ENGINE = "Value"


def _engine_class(ns: Namespace) -> type:
    """The learner's ``Value`` class; the package's engine does not count."""
    cls = ns.get(_ENGINE)
    if cls is None:
        call(ns, _ENGINE)  # reports "is not defined"
    if not isinstance(cls, type):
        call(ns, _ENGINE, 1.0)  # a stub reports "not written yet"
        raise CheckFailed(f"`{_ENGINE}` should be a class (class Value: ...), got {type(cls).__name__}.")
    if cls is Value or issubclass(cls, Value):
        raise CheckFailed(f"`{_ENGINE}` is still llmcourse's engine (imported at the top): write your own class "
                          f"Value in the exercise cell and run it.")
    return cls


def _learner_code(what: str, compute):
    """Run ``compute()``, which uses the learner's class; their errors become one readable line."""
    return run_learner(what, compute, unwritten=f"`{_ENGINE}` ({what} needs it)")


def _number(node: Any, attribute: str, what: str) -> float:
    value = getattr(node, attribute, None)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise CheckFailed(f"{what}: `.{attribute}` should be a Python number, got {type(value).__name__}")
    return float(value)


# The operations a random graph is built from: (name, arity, what to do with learner's nodes, with torch tensors).
_OPS = [
    ("add", 2, lambda a, b: a + b, lambda a, b: a + b),
    ("mul", 2, lambda a, b: a * b, lambda a, b: a * b),
    ("sub", 2, lambda a, b: a - b, lambda a, b: a - b),
    ("neg", 1, lambda a: -a, lambda a: -a),
    ("tanh", 1, lambda a: a.tanh(), torch.tanh),
    ("relu", 1, lambda a: a.relu(), torch.relu),
    ("square", 1, lambda a: a ** 2, lambda a: a ** 2),
    ("exp of tanh", 1, lambda a: a.tanh().exp(), lambda a: torch.exp(torch.tanh(a))),
    ("divide by 1 + square", 1, lambda a: a / (1 + a ** 2), lambda a: a / (1 + a ** 2)),
    ("scale and shift", 1, lambda a: 2.5 * a - 1, lambda a: 2.5 * a - 1),
]


def _random_graph(cls: type, seed: int, n_leaves: int = 3, n_ops: int = 25):
    """The same random expression built twice, from the learner's Value and from float64 tensors. Later nodes reuse
    earlier ones, so many nodes feed several others (shared subexpressions)."""
    rng = torch.Generator().manual_seed(seed)
    start = (torch.rand(n_leaves, generator=rng, dtype=F64) * 4 - 2).tolist()
    mine = [cls(v) for v in start]
    theirs = [torch.tensor(v, dtype=F64, requires_grad=True) for v in start]
    leaves_mine, leaves_theirs, recipe = list(mine), list(theirs), []
    for _ in range(n_ops):
        name, arity, f_mine, f_torch = _OPS[int(torch.randint(len(_OPS), (1,), generator=rng))]
        picks = [int(torch.randint(len(mine), (1,), generator=rng)) for _ in range(arity)]
        recipe.append(f"{name}({', '.join(f'n{p}' for p in picks)})")
        mine.append(f_mine(*[mine[p] for p in picks]))
        theirs.append(f_torch(*[theirs[p] for p in picks]))
    root_mine, root_theirs = mine[-1] + mine[-2] * mine[-3], theirs[-1] + theirs[-2] * theirs[-3]
    return leaves_mine, leaves_theirs, root_mine, root_theirs, "; ".join(recipe)


@chapter.check(_ENGINE, points=1, hint="Each operation returns a new Value whose data is the result: a + b, a * b, "
               "a ** k (k a plain number), a.exp(), a.tanh(), a.relu(). Plain numbers on either side (2 * a, 1 - a, "
               "a / 3) need __radd__, __rmul__, __rsub__, __truediv__ and __neg__.")
def value_forward(ns: Namespace) -> None:
    cls = _engine_class(ns)
    cases = [
        ("(Value(2) * 3 + 1 - Value(4)) / 2", lambda: (cls(2.0) * 3 + 1 - cls(4.0)) / 2, 1.5),
        ("2 - Value(5)", lambda: 2 - cls(5.0), -3.0),
        ("3 * Value(2) ** 3", lambda: 3 * cls(2.0) ** 3, 24.0),
        ("-Value(1.5) + 10", lambda: -cls(1.5) + 10, 8.5),
        ("1 / Value(4)", lambda: 1 / cls(4.0), 0.25),
        ("Value(0.5).exp()", lambda: cls(0.5).exp(), float(torch.tensor(0.5, dtype=F64).exp())),
        ("Value(0.7).tanh()", lambda: cls(0.7).tanh(), float(torch.tensor(0.7, dtype=F64).tanh())),
        ("Value(-2).relu() + Value(3).relu()", lambda: cls(-2.0).relu() + cls(3.0).relu(), 3.0),
    ]
    for text, build, expected in cases:
        node = _learner_code(text, build)
        got = _number(node, "data", text)
        if abs(got - expected) > 1e-9:
            raise CheckFailed(f"{text} should have data {expected:.6g}, got {got:.6g}")


def _expect_leaf_grads(leaves_mine, leaves_theirs, root_mine, root_theirs, what: str) -> None:
    _learner_code(f"backward() on {what}", root_mine.backward)
    root_theirs.backward()
    for i, (a, b) in enumerate(zip(leaves_mine, leaves_theirs)):
        got, expected = _number(a, "grad", f"leaf {i} of {what}"), 0.0 if b.grad is None else float(b.grad)
        if abs(got - expected) > 1e-6 * max(1.0, abs(expected)):
            raise CheckFailed(f"{what}: leaf {i} should get gradient {expected:.6g} (torch.autograd), got {got:.6g}")


@chapter.check(_ENGINE, points=1, hint="backward() sets the output's grad to 1, then visits the nodes from the output "
               "back to the leaves, each one passing grad x its local derivative to its parents. Start every grad at 0.")
def value_backward_simple(ns: Namespace) -> None:
    cls = _engine_class(ns)
    a, b, c = (_learner_code("Value(...)", lambda v=v: cls(v)) for v in (2.0, -3.0, 10.0))
    ta, tb, tc = (torch.tensor(v, dtype=F64, requires_grad=True) for v in (2.0, -3.0, 10.0))
    root = _learner_code("(a * b + c).tanh() * a", lambda: (a * b + c).tanh() * a)
    _expect_leaf_grads([a, b, c], [ta, tb, tc], root, (ta * tb + tc).tanh() * ta, "(a * b + c).tanh() * a")


@chapter.check(_ENGINE, points=1, hint="A node used twice gets gradient from both uses: add into .grad (+=), never "
               "overwrite it, and give each node its gradient before passing it on (a topological order).")
def value_shared_subexpressions(ns: Namespace) -> None:
    cls = _engine_class(ns)
    x = _learner_code("Value(0.8)", lambda: cls(0.8))
    tx = torch.tensor(0.8, dtype=F64, requires_grad=True)

    def build(v):
        y = v * v + v
        return y * y + y * v - v

    root = _learner_code("y = x*x + x; y*y + y*x - x", lambda: build(x))
    _expect_leaf_grads([x], [tx], root, build(tx), "y = x*x + x; y*y + y*x - x")


@chapter.check(_ENGINE, points=2, hint="Every node must be finished (all its users have added their share) before it "
               "passes gradient to its parents: order the nodes topologically (depth-first, a node after its "
               "parents) and walk that order backwards. Each operation's local derivative must be right too.")
def value_random_graphs(ns: Namespace) -> None:
    cls = _engine_class(ns)
    for seed in range(12):
        leaves_mine, leaves_theirs, root_mine, root_theirs, recipe = _learner_code(
            "building a random expression", lambda: _random_graph(cls, seed))
        got, expected = _number(root_mine, "data", "the expression's value"), float(root_theirs.detach())
        if abs(got - expected) > 1e-9 * max(1.0, abs(expected)):
            raise CheckFailed(f"random graph {seed} ({recipe[:200]}...): value should be {expected:.6g}, got {got:.6g}")
        _expect_leaf_grads(leaves_mine, leaves_theirs, root_mine, root_theirs, f"random graph {seed} ({recipe[:200]}...)")


# --------------------------------------------------------------------------- an experiment: vanishing gradients

_HE_STD = math.sqrt(2 / 64)  # Kaiming (He) initialisation for ReLU layers of width 64
_LINEAR_STD = 1 / math.sqrt(3 * 64)  # the spread of nn.Linear's default initialisation for 64 inputs


def _ratio(ns: Namespace, activation: str, weight_std: float, **kwargs: Any) -> float:
    shown = ", ".join([f'"{activation}"', f"{weight_std:.3g}"] + [f"{k}={v}" for k, v in kwargs.items()])
    return as_number(call(ns, "vanishing_gradient_ratio", activation, weight_std, **kwargs),
                     f"vanishing_gradient_ratio({shown})")


@chapter.check("vanishing_gradient_ratio", points=1, hint="Divide the norm of the first layer's weight gradient by "
               "the norm of the last layer's (after one backward pass), and put the sigmoid after every layer but "
               "the last. Each sigmoid layer multiplies the gradient by a slope of at most 0.25 on its way back.")
def sigmoid_gradients_vanish(ns: Namespace) -> None:
    ratios = {depth: _ratio(ns, "sigmoid", _LINEAR_STD, depth=depth) for depth in (2, 5, 10, 20)}
    expect(ratios[2] > 1e-3, f"with 2 sigmoid layers the ratio is {ratios[2]:.3g}; one sigmoid in between can only "
                             f"shrink the gradient by a modest factor (more than 1e-3 is expected).")
    expect(ratios[20] < 1e-8, f"with 20 sigmoid layers the ratio is {ratios[20]:.3g}; 19 slopes of at most 0.25 on "
                              f"the way back should make it tiny (below 1e-8).")
    expect(ratios[2] > ratios[5] > ratios[10] > ratios[20],
           "the ratio should shrink with every layer added: got "
           + ", ".join(f"{ratios[d]:.3g} at depth {d}" for d in ratios) + ".")


@chapter.check("vanishing_gradient_ratio", points=1, hint="ReLU's slope is exactly 1 where it is active and tanh's "
               "is close to 1 near 0, so with sensible weights the first layer's gradient stays about as large as "
               "the last one's. Use the weight_std you are given, the activation you are asked for, and z = h @ W.")
def relu_and_tanh_gradients_keep_their_size(ns: Namespace) -> None:
    for activation, std, kwargs in [("relu", _HE_STD, {}), ("relu", _HE_STD, {"seed": 1}),
                                    ("relu", math.sqrt(2 / 32), {"width": 32}), ("tanh", 1 / 8, {})]:
        got = _ratio(ns, activation, std, **kwargs)
        where = ", ".join([activation, f"weight_std {std:.3g}"] + [f"{k} {v}" for k, v in kwargs.items()])
        expect(0.05 <= got <= 20, f"with 20 layers ({where}) the ratio is {got:.3g}; it should stay within a "
                                  f"factor of 20 of 1.")


@chapter.check("vanishing_gradient_ratio", points=1, hint="Return a ratio of two gradient norms, not one norm: with "
               "a single layer the first layer is the last, so the ratio is exactly 1.")
def one_layer_gives_a_ratio_of_one(ns: Namespace) -> None:
    for activation in ("sigmoid", "relu"):
        got = _ratio(ns, activation, _LINEAR_STD, depth=1)
        expect(abs(got - 1) < 1e-6, f'vanishing_gradient_ratio("{activation}", ..., depth=1) is {got:.6g}; with one '
                                    f"layer the first and the last layer are the same, so it should be 1.")


# --------------------------------------------------------------------------- a derivation: how far momentum carries

_SGD = [(torch.optim, "SGD", "torch.optim.SGD")]


def _distance_by_sgd(lr: float, momentum: float, steps: int) -> float:
    """Brute force: run torch.optim.SGD on a parameter whose gradient is always 1."""
    param = torch.zeros(1, dtype=F64, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=lr, momentum=momentum)
    for _ in range(steps):
        optimizer.zero_grad()
        param.sum().backward()  # the gradient of the parameter itself is 1
        optimizer.step()
    return -float(param.detach())


def _distance_by_matrix_power(lr: float, momentum: float, steps: int) -> float:
    """The same recurrence as one affine map on (param, buffer, 1), applied `steps` times by repeated squaring."""
    one_step = torch.tensor([[1.0, -lr * momentum, -lr], [0.0, momentum, 1.0], [0.0, 0.0, 1.0]], dtype=F64)
    state = torch.linalg.matrix_power(one_step, steps) @ torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    return -float(state[0])


def _expect_distance(ns: Namespace, lr: float, momentum: float, steps: int, want: float) -> None:
    with forbid("momentum_distance", _SGD):
        got = as_number(call(ns, "momentum_distance", lr, momentum, steps),
                        f"momentum_distance({lr:g}, {momentum:g}, {steps:g})")
    expect(abs(got - want) <= 1e-9 * abs(want),
           f"momentum_distance({lr:g}, {momentum:g}, {steps:g}) is {got:.10g}, but the parameter moves "
           f"{want:.10g}.")


@chapter.check("momentum_distance", points=1, hint="Write the buffer after k steps first (a geometric series in the "
               "momentum), then add up the steps lr x buffer for k = 1 ... steps. The first step moves the "
               "parameter by exactly lr.")
def momentum_distance_matches_sgd(ns: Namespace) -> None:
    for lr, momentum, steps in [(0.1, 0.9, 1), (0.1, 0.9, 2), (0.1, 0.9, 10), (0.05, 0.5, 7), (0.01, 0.99, 50)]:
        _expect_distance(ns, lr, momentum, steps, _distance_by_sgd(lr, momentum, steps))


@chapter.check("momentum_distance", points=1, hint="A loop over 10^12 steps would run for days: sum both geometric "
               "series on paper, so that your function takes the same time for any number of steps.")
def momentum_distance_long_runs(ns: Namespace) -> None:
    for lr, momentum, steps in [(1e-3, 0.9, 10**12), (0.1, 0.99, 10**9), (0.01, 0.5, 10**15)]:
        _expect_distance(ns, lr, momentum, steps, _distance_by_matrix_power(lr, momentum, steps))


@chapter.check("momentum_distance", points=1, hint="The formula must hold for momentum = 0 too (plain gradient "
               "descent), and close to 1, where the first steps are still far from their top speed.")
def momentum_distance_without_momentum_and_near_one(ns: Namespace) -> None:
    for lr, momentum, steps in [(0.2, 0.0, 1), (0.2, 0.0, 5), (0.2, 0.0, 10**9), (0.01, 0.999, 3),
                                (0.01, 0.999, 1000)]:
        _expect_distance(ns, lr, momentum, steps, _distance_by_matrix_power(lr, momentum, steps))


# --------------------------------------------------------------------------- label_smoothed_cross_entropy

_CROSS_ENTROPY = [(F, "cross_entropy", "F.cross_entropy"), (F, "nll_loss", "F.nll_loss"),
                  (torch.nn.CrossEntropyLoss, "forward", "nn.CrossEntropyLoss")]


def _smoothed(ns: Namespace, logits: torch.Tensor, targets: torch.Tensor, smoothing: float, what: str) -> float:
    with forbid("label_smoothed_cross_entropy", _CROSS_ENTROPY):
        got = call(ns, "label_smoothed_cross_entropy", logits, targets, smoothing)
    return as_number(got, what)


def _expect_smoothed(ns: Namespace, logits: torch.Tensor, targets: torch.Tensor, smoothing: float, what: str) -> None:
    got = _smoothed(ns, logits, targets, smoothing, what)
    want = float(F.cross_entropy(logits, targets, label_smoothing=smoothing))
    expect(math.isfinite(got), f"{what} is {got}; compute log-softmax with the max-shift, not log(softmax).")
    expect(abs(got - want) <= 1e-9 * max(1.0, abs(want)),
           f"{what} is {got:.10g}, but nn.CrossEntropyLoss(label_smoothing={smoothing:g}) gives {want:.10g}.")


@chapter.check("label_smoothed_cross_entropy", points=1, hint="The smoothed target puts 1 - smoothing + smoothing / C "
               "on the right class and smoothing / C on every other class (the right one is included in the even "
               "share). The loss is -sum_k q_k log p_k, averaged over the batch.")
def smoothed_matches_torch(ns: Namespace) -> None:
    logits = _randn(8, 5, seed=300) * 2
    targets = torch.randint(0, 5, (8,), generator=seeded_generator(301))
    for smoothing in (0.1, 0.25):
        _expect_smoothed(ns, logits, targets, smoothing,
                         f"label_smoothed_cross_entropy on 8 examples, 5 classes, smoothing {smoothing:g}")


@chapter.check("label_smoothed_cross_entropy", points=1, hint="With smoothing 0 the loss is plain cross-entropy; with "
               "smoothing 1 the target is uniform and the loss is the mean of -log p over all classes.")
def smoothed_at_the_ends(ns: Namespace) -> None:
    logits = _randn(6, 4, seed=302)
    targets = torch.tensor([0, 1, 2, 3, 3, 0])
    for smoothing in (0.0, 1.0):
        _expect_smoothed(ns, logits, targets, smoothing,
                         f"label_smoothed_cross_entropy with smoothing {smoothing:g}")


@chapter.check("label_smoothed_cross_entropy", points=1, hint="Logits can be huge: shift each row by its maximum "
               "before exp, and build the smoothed targets in the logits' dtype, for any number of classes.")
def smoothed_large_logits_and_many_classes(ns: Namespace) -> None:
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [3.0, 2.0, 1.0]], dtype=F64)
    _expect_smoothed(ns, logits, torch.tensor([1, 2]), 0.1, "label_smoothed_cross_entropy of logits around ±1000")
    logits = _randn(3, 50, seed=303) * 5
    targets = torch.tensor([7, 49, 0])
    _expect_smoothed(ns, logits, targets, 0.2, "label_smoothed_cross_entropy with 50 classes")


# --------------------------------------------------------------------------- expected_calibration_error

def _ece_by_loop(probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> float:
    """The reference: one prediction at a time into bin k with k/n < confidence <= (k+1)/n, then weighted gaps."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for row, label in zip(probs.tolist(), labels.tolist()):
        confidence = max(row)
        k = 0
        while k < n_bins - 1 and confidence > (k + 1) / n_bins:
            k += 1
        members[k].append((confidence, row.index(confidence) == label))
    total = sum(len(m) for m in members)
    return sum(len(m) / total * abs(sum(ok for _, ok in m) / len(m) - sum(c for c, _ in m) / len(m))
               for m in members if m)


def _expect_ece(ns: Namespace, probs: torch.Tensor, labels: torch.Tensor, n_bins: int, what: str,
                want: float | None = None, tol: float = 1e-9) -> None:
    from llmcourse.basics import calibration
    with forbid("expected_calibration_error", [(calibration, "expected_calibration_error", "calibration.expected_calibration_error"),
                                               (calibration, "reliability_bins", "calibration.reliability_bins")]):
        got = as_number(call(ns, "expected_calibration_error", probs, labels, n_bins), what)
    want = _ece_by_loop(probs, labels, n_bins) if want is None else want
    expect(abs(got - want) <= tol, f"{what} is {got:.6g}, but it should be {want:.6g}.")


def _hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.tensor([[0.95, 0.05], [0.08, 0.92], [0.65, 0.35], [0.38, 0.62]], dtype=F64)
    return probs, torch.tensor([0, 0, 0, 1])


@chapter.check("expected_calibration_error", points=1, hint="Confidence is the largest probability of a row and the "
               "prediction its class. Each bin's gap |accuracy - mean confidence| counts with the share of all "
               "predictions that fall in the bin.")
def ece_by_hand_and_at_random(ns: Namespace) -> None:
    probs, labels = _hand_example()
    _expect_ece(ns, probs, labels, 10, "expected_calibration_error of the four predictions of the task", want=0.4)
    g = seeded_generator(310)
    probs = torch.softmax(torch.randn(300, 5, generator=g, dtype=F64) * 2, dim=-1)
    labels = torch.randint(0, 5, (300,), generator=g)
    _expect_ece(ns, probs, labels, 10, "expected_calibration_error of 300 random predictions, 10 bins")


@chapter.check("expected_calibration_error", points=1, hint="Bin k holds the confidences c with k/n < c <= (k+1)/n: a "
               "confidence exactly on an edge belongs to the lower bin (with 4 bins, 0.75 is in (0.5, 0.75]), and a "
               "confidence of 1 to the last one.")
def ece_bin_edges_and_bin_counts(ns: Namespace) -> None:
    # confidences and edges that binary floating point holds exactly, so the edge rule alone decides
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [0.25, 0.75], [1.0, 0.0], [0.375, 0.625], [0.875, 0.125]],
                         dtype=F64)
    labels = torch.tensor([0, 1, 1, 0, 0, 0])
    for n_bins in (8, 4, 2):
        _expect_ece(ns, probs, labels, n_bins, f"expected_calibration_error with confidences on the edges, {n_bins} bins")
    g = seeded_generator(311)
    probs = torch.softmax(torch.randn(200, 3, generator=g, dtype=F64) * 3, dim=-1)
    labels = torch.randint(0, 3, (200,), generator=g)
    for n_bins in (1, 15):
        _expect_ece(ns, probs, labels, n_bins, f"expected_calibration_error with {n_bins} bin(s)")


@chapter.check("expected_calibration_error", points=1, hint="A model that is always right and always sure has ECE 0; "
               "always wrong and always sure, ECE 1. Return a Python float, also for float32 inputs.")
def ece_extremes_and_float32(ns: Namespace) -> None:
    sure = torch.eye(4, dtype=F64)
    _expect_ece(ns, sure, torch.arange(4), 10, "expected_calibration_error of sure, right predictions", want=0.0)
    _expect_ece(ns, sure, torch.tensor([1, 2, 3, 0]), 10, "expected_calibration_error of sure, wrong predictions",
                want=1.0)
    g = seeded_generator(312)
    probs = torch.softmax(torch.randn(100, 4, generator=g), dim=-1)
    labels = torch.randint(0, 4, (100,), generator=g)
    _expect_ece(ns, probs, labels, 10, "expected_calibration_error of float32 probabilities", tol=1e-5)
