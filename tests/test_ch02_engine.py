"""Tests of chapter 02's engine: the scalar autograd (llmcourse.basics.autograd), gradients by finite differences and
by hand (llmcourse.basics.gradients) and the graph drawing (llmcourse.basics.graph_plot), against torch.autograd and
central finite differences."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from llmcourse.basics import gradients as G
from llmcourse.basics.activations import sigmoid_grad, tanh_grad
from llmcourse.basics.autograd import (MLP, RULES, TINY_DATASET, Layer, Neuron, Value, backpropagate, mse_loss,
                                topological_order, train_mlp_on_values)
from llmcourse.basics.graph_plot import draw_graph

# --------------------------------------------------------------------------- random expressions
# An expression is a nested tuple: ("var", i), ("const", c), (unary_op, e) or (binary_op, e1, e2).
# Domains are kept valid by construction: log, the square root and the reciprocal only ever see
# e² + 0.5 > 0, and a division's denominator is e² + 0.5. Magnitudes are bounded with assume().

N_VARS = 3
UNARY = ["exp", "log", "tanh", "sigmoid", "relu", "neg", "square", "cube", "sqrt", "recip"]
BINARY = ["+", "-", "*", "/"]
SMOOTH_UNARY = [op for op in UNARY if op != "relu"]

leaves = st.one_of(
    st.tuples(st.just("var"), st.integers(0, N_VARS - 1)),
    st.tuples(st.just("const"), st.floats(-2.0, 2.0, allow_nan=False).map(lambda c: round(c, 3))),
)


def expressions(unary_ops: list[str]) -> st.SearchStrategy:
    return st.recursive(
        leaves,
        lambda sub: st.one_of(
            st.tuples(st.sampled_from(unary_ops), sub),
            st.tuples(st.sampled_from(BINARY), sub, sub),
        ),
        max_leaves=8,
    )


inputs = st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=N_VARS, max_size=N_VARS)


def _value(x):
    return x if isinstance(x, Value) else Value(x)


def _tensor(x):
    return x if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=torch.float64)


VALUE_OPS = {
    "exp": lambda a: _value(a).exp(), "log": lambda a: _value(a).log(), "tanh": lambda a: _value(a).tanh(),
    "sigmoid": lambda a: _value(a).sigmoid(), "relu": lambda a: _value(a).relu(),
}
TORCH_OPS = {
    "exp": lambda a: torch.exp(_tensor(a)), "log": lambda a: torch.log(_tensor(a)),
    "tanh": lambda a: torch.tanh(_tensor(a)), "sigmoid": lambda a: torch.sigmoid(_tensor(a)),
    "relu": lambda a: torch.relu(_tensor(a)),
}


def evaluate(expr, variables, ops):
    """Evaluate ``expr`` with Python operators (shared by Value and torch) and the backend's functions in ``ops``."""
    kind = expr[0]
    if kind == "var":
        return variables[expr[1]]
    if kind == "const":
        return expr[1]  # a plain float: exercises reversed operations such as 2 * v and 1 - v
    if kind in BINARY:
        a, b = evaluate(expr[1], variables, ops), evaluate(expr[2], variables, ops)
        if kind == "+":
            return a + b
        if kind == "-":
            return a - b
        if kind == "*":
            return a * b
        return a / (b * b + 0.5)
    a = evaluate(expr[1], variables, ops)
    if kind == "neg":
        return -a
    if kind == "square":
        return a ** 2
    if kind == "cube":
        return a ** 3
    if kind == "sqrt":
        return (a * a + 0.5) ** 0.5
    if kind == "recip":
        return (a * a + 0.5) ** -1
    if kind == "log":
        return ops["log"](a * a + 0.5)
    return ops[kind](a)


def engine_value_and_grads(expr, xs):
    variables = [Value(x, label=f"x{i}") for i, x in enumerate(xs)]
    try:
        out = evaluate(expr, variables, VALUE_OPS)
    except OverflowError:
        assume(False)
    assume(isinstance(out, Value) and abs(out.data) < 1e6)
    out.backward()
    return out.data, [v.grad for v in variables]


def torch_value_and_grads(expr, xs):
    variables = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = _tensor(evaluate(expr, variables, TORCH_OPS))
    if not out.requires_grad:  # an expression of constants only: every gradient is 0
        return out.item(), [0.0] * len(xs)
    grads = torch.autograd.grad(out, variables, allow_unused=True)
    return out.item(), [0.0 if g is None else g.item() for g in grads]


def _close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(expressions(UNARY), inputs)
def test_engine_matches_torch_autograd_on_random_expressions(expr, xs):
    value, grads = engine_value_and_grads(expr, xs)
    ref_value, ref_grads = torch_value_and_grads(expr, xs)
    assume(all(abs(g) < 1e6 for g in ref_grads))
    assert _close(value, ref_value, 1e-9), (expr, value, ref_value)
    for g, ref in zip(grads, ref_grads):
        assert _close(g, ref, 1e-8), (expr, grads, ref_grads)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(expressions(SMOOTH_UNARY), inputs)
def test_engine_matches_central_finite_differences(expr, xs):
    _, grads = engine_value_and_grads(expr, xs)
    assume(all(abs(g) < 1e3 for g in grads))
    eps = 1e-5
    for i in range(N_VARS):
        up, down = list(xs), list(xs)
        up[i] += eps
        down[i] -= eps
        try:
            f_up = evaluate(expr, [Value(x) for x in up], VALUE_OPS)
            f_down = evaluate(expr, [Value(x) for x in down], VALUE_OPS)
        except OverflowError:
            assume(False)
        slope = (f_up.data - f_down.data) / (up[i] - down[i])
        assert _close(grads[i], slope, 1e-4), (expr, i, grads[i], slope)


# --------------------------------------------------------------------------- the chain rule by hand


def test_every_local_rule_matches_torch():
    a0, b0 = 0.8, -1.7
    cases = {  # op -> (build with Values, build with tensors)
        "+": (lambda a, b: a + b, lambda a, b: a + b),
        "-": (lambda a, b: a - b, lambda a, b: a - b),
        "*": (lambda a, b: a * b, lambda a, b: a * b),
        "/": (lambda a, b: a / b, lambda a, b: a / b),
        "**": (lambda a, b: a ** 3 + a ** -2, lambda a, b: a ** 3 + a ** -2),
        "neg": (lambda a, b: -a, lambda a, b: -a),
        "exp": (lambda a, b: a.exp(), lambda a, b: torch.exp(a)),
        "log": (lambda a, b: a.log(), lambda a, b: torch.log(a)),
        "tanh": (lambda a, b: b.tanh(), lambda a, b: torch.tanh(b)),
        "sigmoid": (lambda a, b: b.sigmoid(), lambda a, b: torch.sigmoid(b)),
        "relu": (lambda a, b: a.relu() + b.relu(), lambda a, b: torch.relu(a) + torch.relu(b)),
    }
    assert set(cases) == set(RULES)
    for op, (with_values, with_tensors) in cases.items():
        a, b = Value(a0), Value(b0)
        out = with_values(a, b)
        out.backward()
        ta = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
        tb = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
        ref = with_tensors(ta, tb)
        ref.backward()
        assert out.data == pytest.approx(ref.item(), rel=1e-12), op
        assert a.grad == pytest.approx(0.0 if ta.grad is None else ta.grad.item(), rel=1e-12, abs=1e-15), op
        assert b.grad == pytest.approx(0.0 if tb.grad is None else tb.grad.item(), rel=1e-12, abs=1e-15), op


def test_reversed_operations_and_constants():
    v = Value(4.0)
    for out, expected, grad in [(2 * v, 8.0, 2.0), (1 - v, -3.0, -1.0), (3 + v, 7.0, 1.0), (2 / v, 0.5, -2 / 16)]:
        v.grad = 0.0
        out.backward()
        assert out.data == expected and v.grad == pytest.approx(grad)


def test_a_value_used_twice_accumulates_its_gradient():
    a = Value(3.0)
    b = a + a  # db/da = 2, not 1
    b.backward()
    assert a.grad == 2.0
    # the chain rule's second case: z = k(x(s), y(s)), dz/ds = dz/dx dx/ds + dz/dy dy/ds
    s = Value(0.7)
    z = s.exp() * s.tanh()
    z.backward()
    expected = math.exp(0.7) * math.tanh(0.7) + math.exp(0.7) * (1 - math.tanh(0.7) ** 2)
    assert s.grad == pytest.approx(expected, rel=1e-12)


def test_topological_order_puts_parents_first_and_lists_each_node_once():
    x = Value(1.0)
    y = x * 2
    z = (y + x) * y.tanh() + y
    order = topological_order(z)
    assert order[-1] is z
    assert len(order) == len({id(n) for n in order})
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for parent in node.parents:
            assert position[id(parent)] < position[id(node)]
    seen, stack = set(), [z]
    while stack:  # everything reachable from z, found independently
        n = stack.pop()
        if id(n) not in seen:
            seen.add(id(n))
            stack.extend(n.parents)
    assert set(position) == seen


def test_deep_graph_needs_no_recursion():
    x = Value(0.5)
    total = sum(x * 1.0 for _ in range(5000))
    total.backward()
    assert x.grad == pytest.approx(5000.0)


def test_backward_twice_adds_to_leaves_like_pytorch():
    x = Value(2.0)
    y = (x * x).tanh()
    y.backward()
    first = x.grad
    y.backward()
    assert x.grad == pytest.approx(2 * first)
    t = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    ty = torch.tanh(t * t)
    ty.backward(retain_graph=True)
    ty.backward()
    assert x.grad == pytest.approx(t.grad.item())


def test_backpropagate_accepts_a_given_order():
    x = Value(1.5)
    y = x.exp() * x
    backpropagate(y, order=topological_order(y))
    assert x.grad == pytest.approx(math.exp(1.5) * 2.5)


def test_clear_errors():
    with pytest.raises(ValueError, match="positive"):
        Value(0.0).log()
    with pytest.raises(ValueError, match="positive"):
        Value(-2.0).log()
    with pytest.raises(TypeError, match="exponent"):
        Value(2.0) ** Value(3.0)
    with pytest.raises(TypeError, match="exponent"):
        2 ** Value(3.0)
    with pytest.raises(ValueError, match="integer exponent"):
        Value(-8.0) ** 0.5
    with pytest.raises(TypeError, match="numbers"):
        Value(1.0) + "2"
    with pytest.raises(TypeError, match="numbers"):
        "2" * Value(1.0)
    with pytest.raises(TypeError, match="real number"):
        Value("3")
    with pytest.raises(ZeroDivisionError):
        Value(1.0) / 0


# --------------------------------------------------------------------------- the MLP of Values


def test_mlp_gradients_match_the_same_network_in_torch():
    model = MLP(3, [4, 4, 2], activation="tanh", seed=3)
    xs = [[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]]
    targets = [[1.0, -1.0], [0.0, 0.5]]
    outs = [model(x) for x in xs]
    loss = mse_loss([o for out in outs for o in out], [t for row in targets for t in row])
    model.zero_grad()
    loss.backward()
    # the same weights as torch tensors laid out (n_in, n_out): W[i, j] = weight i of neuron j
    torch_params = []
    for layer in model.layers:
        W = torch.tensor([[n.w[i].data for n in layer.neurons] for i in range(len(layer.neurons[0].w))],
                         dtype=torch.float64, requires_grad=True)
        b = torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64, requires_grad=True)
        torch_params.append((W, b))
    h = torch.tensor(xs, dtype=torch.float64)
    for k, (W, b) in enumerate(torch_params):
        h = h @ W + b
        if k < len(torch_params) - 1:
            h = torch.tanh(h)
    ref = F.mse_loss(h, torch.tensor(targets, dtype=torch.float64))
    ref.backward()
    assert loss.data == pytest.approx(ref.item(), rel=1e-12)
    for layer, (W, b) in zip(model.layers, torch_params):
        for j, neuron in enumerate(layer.neurons):
            assert [w.grad for w in neuron.w] == pytest.approx(W.grad[:, j].tolist(), rel=1e-10, abs=1e-14)
            assert neuron.b.grad == pytest.approx(b.grad[j].item(), rel=1e-10, abs=1e-14)


def test_mlp_structure_seed_and_zero_grad():
    model = MLP(2, [3, 1], seed=0)
    assert len(model.parameters()) == (2 + 1) * 3 + (3 + 1) * 1
    assert isinstance(model([1.0, 2.0]), Value)
    assert len(MLP(2, [3, 2])([1.0, 2.0])) == 2
    assert [p.data for p in MLP(2, [3, 1], seed=0).parameters()] == [p.data for p in model.parameters()]
    assert [p.data for p in MLP(2, [3, 1], seed=1).parameters()] != [p.data for p in model.parameters()]
    state = random.getstate()
    MLP(2, [3, 1], seed=0)
    assert random.getstate() == state  # the global random generator is left alone
    model([1.0, 2.0]).backward()
    assert any(p.grad != 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0 for p in model.parameters())
    neuron = Neuron(2, activation=None, rng=random.Random(0))
    assert neuron([1.0, 0.0]).data == pytest.approx(neuron.w[0].data + neuron.b.data)
    assert len(Layer(2, 5)([1.0, 1.0])) == 5
    with pytest.raises(ValueError, match="inputs"):
        neuron([1.0])


def test_training_the_mlp_lowers_the_loss():
    model, losses = train_mlp_on_values(steps=40)
    assert len(losses) == 40
    assert losses[-1] < 0.2 * losses[0]
    assert all(later <= earlier * 1.05 for earlier, later in zip(losses, losses[1:]))
    xs, ys = TINY_DATASET
    predictions = [model(x).data for x in xs]
    assert all(p * y > 0 for p, y in zip(predictions, ys))  # every example on the right side


# --------------------------------------------------------------------------- finite differences

FUNCTIONS = {
    "sin_exp": lambda x: (torch.sin(x) * torch.exp(0.3 * x)).sum(),
    # scaled so tanh does not saturate: there f ≈ 1 while its gradient is tiny, and rounding in f
    # (about 1e-16 / eps) swamps the finite differences' relative accuracy
    "tanh_square": lambda x: torch.tanh(x.flatten() @ torch.linspace(-1, 1, x.numel(), dtype=x.dtype)
                                        / x.numel() ** 0.5) ** 2,
    "logsumexp": lambda x: torch.logsumexp(x.flatten(), 0),
    "cubic_mean": lambda x: (x ** 3 - 2 * x).mean(),
    "softmax_entropy": lambda x: -(F.softmax(x.flatten(), 0) * F.log_softmax(x.flatten(), 0)).sum(),
}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(FUNCTIONS)), st.lists(st.integers(1, 4), min_size=1, max_size=3),
       st.integers(0, 10_000))
def test_numerical_gradient_matches_autograd(name, shape, seed):
    f = FUNCTIONS[name]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    before = x.clone()
    num = G.numerical_gradient(f, x)
    assert num.dtype == torch.float64 and num.shape == x.shape
    assert torch.equal(x, before)  # the input is not modified
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(f(xr), xr)
    torch.testing.assert_close(num, ref, rtol=1e-6, atol=1e-7)
    assert G.gradient_check(f, x) < 1e-5


def test_numerical_gradient_uses_central_differences():
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    num = G.numerical_gradient(lambda v: (v ** 3).sum(), x, eps=1e-3)
    # central: error eps² = 1e-6; a one-sided difference would be off by about 3 x eps ≈ 6e-3
    torch.testing.assert_close(num, 3 * x ** 2, rtol=0, atol=2e-6)


def test_numerical_gradient_accepts_float32_and_non_contiguous_input():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).T
    num = G.numerical_gradient(lambda v: (v ** 2).sum(), x)
    torch.testing.assert_close(num, 2 * x.double(), rtol=1e-6, atol=1e-6)


class _WrongSquare(torch.autograd.Function):
    """x², with a deliberately wrong backward (x instead of 2x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x


def test_gradient_check_catches_a_wrong_backward():
    x = torch.tensor([0.5, 1.0, -2.0], dtype=torch.float64)
    assert G.gradient_check(lambda v: (v * v).sum(), x) < 1e-7
    assert G.gradient_check(lambda v: _WrongSquare.apply(v).sum(), x) > 0.4


def test_gradient_cost_counts_two_calls_per_parameter():
    cost = G.gradient_cost(sizes=(1, 8, 64), repeats=1)
    assert cost["n_params"] == [1, 8, 64]
    assert cost["fd_evaluations"] == [2, 16, 128]
    assert cost["backprop_passes"] == [2, 2, 2]
    assert all(t > 0 for t in cost["fd_seconds"] + cost["backprop_seconds"])
    assert max(cost["max_difference"]) < 1e-8
    assert isinstance(G.plot_gradient_cost(cost), Figure)


# --------------------------------------------------------------------------- sensitivities by hand


def _two_layer_reference(seed: int, batch: int | None, loss: str):
    params = G.init_mlp_params(4, 5, 3, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    shape = (batch, 4) if batch else (4,)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    if loss == "mse":
        y = torch.randn(*shape[:-1], 3, generator=g, dtype=torch.float64)
    else:
        y = torch.randint(0, 3, shape[:-1], generator=g)
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    z1 = x @ leaf["W1"] + leaf["b1"]
    z1.retain_grad()
    a1 = torch.sigmoid(z1)
    z2 = a1 @ leaf["W2"] + leaf["b2"]
    z2.retain_grad()
    ref_loss = F.mse_loss(z2, y) if loss == "mse" else F.cross_entropy(z2.reshape(-1, 3), y.reshape(-1))
    ref_loss.backward()
    return params, x, y, leaf, z1, a1, z2


@pytest.mark.parametrize("batch", [None, 1, 6])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_sensitivities_match_autograd(batch, loss):
    params, x, y, leaf, z1, a1, z2 = _two_layer_reference(seed=7, batch=batch, loss=loss)
    delta2 = G.loss_sensitivity(z2.detach(), y, loss)
    torch.testing.assert_close(delta2, z2.grad, rtol=0, atol=1e-10)
    delta1 = G.layer_sensitivity(delta2, params["W2"], z1.detach(), sigmoid_grad)
    torch.testing.assert_close(delta1, z1.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(G.weight_gradient(a1.detach(), delta2), leaf["W2"].grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(G.weight_gradient(x, delta1), leaf["W1"].grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(G.bias_gradient(delta2), leaf["b2"].grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(G.bias_gradient(delta1), leaf["b1"].grad, rtol=0, atol=1e-10)


def test_layer_sensitivity_is_the_sources_sum_written_out():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64)
    p = torch.randn(4, generator=g, dtype=torch.float64)
    delta_c = torch.randn(6, generator=g, dtype=torch.float64)
    by_loops = torch.tensor([tanh_grad(p[i]) * sum(W[i, j] * delta_c[j] for j in range(6)) for i in range(4)],
                            dtype=torch.float64)
    torch.testing.assert_close(G.layer_sensitivity(delta_c, W, p, tanh_grad), by_loops, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="n_this, n_next"):
        G.layer_sensitivity(delta_c, W.T, p, tanh_grad)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_mlp_backward_by_hand_matches_autograd(loss, activation):
    params = G.init_mlp_params(3, 6, 4, seed=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.randn(10, 4, generator=g, dtype=torch.float64) if loss == "mse" else torch.randint(0, 4, (10,), generator=g)
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    act = torch.sigmoid if activation == "sigmoid" else torch.tanh
    z2 = act(x @ leaf["W1"] + leaf["b1"]) @ leaf["W2"] + leaf["b2"]
    ref = F.mse_loss(z2, y) if loss == "mse" else F.cross_entropy(z2, y)
    ref.backward()
    assert G.mlp_loss(params, x, y, loss, activation).item() == pytest.approx(ref.item(), rel=1e-12)
    grads = G.mlp_backward_by_hand(params, x, y, loss, activation)
    assert set(grads) == set(params)
    for name in params:
        assert grads[name].shape == params[name].shape
        torch.testing.assert_close(grads[name], leaf[name].grad, rtol=0, atol=1e-10)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        G.loss_sensitivity(torch.zeros(2, 3), torch.zeros(2, 3), "hinge")


# --------------------------------------------------------------------------- drawing the graph


def test_draw_graph_has_one_text_per_node_and_one_arrow_per_edge():
    x, w, b = Value(2.0, label="x"), Value(-0.5, label="w"), Value(0.25, label="b")
    z = (x * w + b).tanh()
    z.label = "a"
    z.backward()
    fig = draw_graph(z)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    order = topological_order(z)
    value_texts = [t for t in ax.texts if t.get_gid() == "value"]
    op_texts = [t for t in ax.texts if t.get_gid() == "op"]
    assert len(value_texts) == len(order) == 6
    assert sorted(t.get_text() for t in op_texts) == sorted(["×", "+", "tanh"])
    assert len(ax.texts) == len(value_texts) + len(op_texts)
    n_edges = sum(len(n.parents) + 1 for n in order if n.parents)
    assert len(ax.patches) == n_edges
    a_text = next(t.get_text() for t in value_texts if t.get_text().startswith("a"))
    assert f"data {z.data:.4g}" in a_text and "grad 1" in a_text
    x_text = next(t.get_text() for t in value_texts if t.get_text().startswith("x"))
    assert f"grad {x.grad:.4g}" in x_text
    fig.canvas.draw()  # lays out and renders without error
    # columns: inputs left of the result
    xs = {t.get_text().split("\n")[0]: t.get_position()[0] for t in value_texts}
    assert xs["x"] < xs["a"] and xs["w"] < xs["a"]


def test_draw_graph_of_a_single_value_and_without_grads():
    fig = draw_graph(Value(3.0, label="alone"), show_grad=False)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["alone\ndata 3"]
