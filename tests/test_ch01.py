"""Tests of chapter 01: activations, losses, neurons, plots and widgets against independent references,
and the graded checks of its exercises."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from torch import nn

from llmcourse.basics import activations as A
from llmcourse.basics import losses as L
from llmcourse.basics import neurons as N
from llmcourse.grading.chapters.ch01 import chapter
from llmcourse.grading.checks import run_checks
from llmcourse.basics.neuron_plots import plot_activations, plot_decision_boundary, plot_leaf_flower, plot_losses, plot_softmax
from llmcourse.basics.neuron_widgets import neuron_explorer, neuron_view

# --------------------------------------------------------------------------- activations

REFERENCES = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


def test_every_activation_has_a_reference():
    assert set(A.ACTIVATIONS) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_torch(name):
    f, _ = A.ACTIVATIONS[name]
    x = torch.cat([torch.linspace(-50, 50, 2001, dtype=torch.float64), torch.tensor([0.0, -0.0, 1e-8, -1e-8],
                                                                                  dtype=torch.float64)])
    torch.testing.assert_close(f(x), REFERENCES[name](x), atol=1e-12, rtol=1e-12)
    x32 = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)) * 5
    got = f(x32)
    assert got.shape == x32.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, REFERENCES[name](x32))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_derivative_matches_autograd(name):
    f, df = A.ACTIVATIONS[name]
    x = torch.linspace(-8, 8, 1601, dtype=torch.float64)
    x = x[x != 0]  # ReLU has no derivative at 0
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(REFERENCES[name](leaf).sum(), leaf)
    torch.testing.assert_close(df(x), grad, atol=1e-12, rtol=1e-10)


def test_relu_grad_at_zero_is_zero_like_pytorch():
    leaf = torch.zeros(1, requires_grad=True)
    F.relu(leaf).sum().backward()
    assert A.relu_grad(torch.zeros(1)).item() == leaf.grad.item() == 0.0


def test_squashing_functions_stay_finite_on_huge_inputs():
    x = torch.tensor([-1e4, -100.0, 100.0, 1e4])
    for f in (A.sigmoid, A.tanh, A.silu, A.gelu, A.gelu_tanh):
        assert torch.isfinite(f(x)).all(), f.__name__
    torch.testing.assert_close(A.sigmoid(x), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_gelu_tanh_is_only_an_approximation():
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    diff = (A.gelu_tanh(x) - A.gelu(x)).abs().max().item()
    assert 1e-5 < diff < 1e-3


def test_get_activation():
    assert A.get_activation(None) is A.identity
    assert A.get_activation("relu") is A.relu
    assert A.get_activation(torch.tanh) is torch.tanh
    with pytest.raises(ValueError, match="unknown activation"):
        A.get_activation("swishy")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=12))
def test_softmax_matches_torch_and_is_finite(values):
    x = torch.tensor(values, dtype=torch.float32)
    got = A.softmax(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, F.softmax(x, dim=-1))
    torch.testing.assert_close(got.sum(), torch.tensor(1.0))
    torch.testing.assert_close(A.log_softmax(x), F.log_softmax(x, dim=-1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=2, max_size=8), st.floats(-1e3, 1e3, width=32))
def test_softmax_ignores_a_shift(values, shift):
    x = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(A.softmax(x + shift), A.softmax(x))


def test_softmax_on_huge_scores():
    x = torch.tensor([1000.0, 1001.0])
    naive = torch.exp(x) / torch.exp(x).sum()
    assert torch.isnan(naive).all()  # the problem the stable version solves
    torch.testing.assert_close(A.softmax(x), F.softmax(x, dim=-1))


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_softmax_and_log_softmax_any_dim(dim):
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1)) * 10
    torch.testing.assert_close(A.softmax(x, dim=dim), F.softmax(x, dim=dim))
    torch.testing.assert_close(A.log_softmax(x, dim=dim), F.log_softmax(x, dim=dim))


def test_softmax_jacobian_matches_autograd():
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = torch.autograd.functional.jacobian(lambda t: F.softmax(t, dim=-1), x)
    torch.testing.assert_close(A.softmax_jacobian(x), expected)
    with pytest.raises(ValueError):
        A.softmax_jacobian(torch.zeros(2, 3))


# --------------------------------------------------------------------------- losses


def test_mse_and_l1_match_torch():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    torch.testing.assert_close(L.mse(pred, target), F.mse_loss(pred, target))
    torch.testing.assert_close(L.l1(pred, target), F.l1_loss(pred, target))


def test_mse_minimiser_is_the_mean_and_l1_minimiser_is_the_median():
    data = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    guesses = torch.linspace(0, 30, 3001)
    best_mse = guesses[torch.stack([L.mse(g, data) for g in guesses]).argmin()]
    best_l1 = guesses[torch.stack([L.l1(g, data) for g in guesses]).argmin()]
    assert best_mse.item() == pytest.approx(data.mean().item(), abs=0.01)
    assert best_l1.item() == pytest.approx(data.median().item(), abs=0.01)


@pytest.mark.parametrize("scale", [1.0, 100.0, 1e4])
def test_cross_entropy_matches_torch(scale):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(9, 6, generator=g) * scale
    targets = torch.randint(0, 6, (9,), generator=g)
    got = L.cross_entropy(logits, targets)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, F.cross_entropy(logits, targets))


def test_cross_entropy_for_language_model_shapes():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 11, generator=g)
    targets = torch.randint(0, 11, (2, 3), generator=g)
    torch.testing.assert_close(L.cross_entropy(logits, targets), F.cross_entropy(logits.reshape(-1, 11),
                                                                                 targets.reshape(-1)))
    with pytest.raises(ValueError, match="do not match"):
        L.cross_entropy(logits, targets[0])


def test_cross_entropy_gradient_matches_torch():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64)
    targets = torch.tensor([0, 2, 1, 2])
    mine, ref = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    L.cross_entropy(mine, targets).backward()
    F.cross_entropy(ref, targets).backward()
    torch.testing.assert_close(mine.grad, ref.grad)


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_binary_cross_entropy_matches_torch(scale):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(20, generator=g) * scale
    targets = torch.randint(0, 2, (20,), generator=g).float()
    got = L.binary_cross_entropy(logits, targets)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits, targets))
    soft = torch.rand(20, generator=g)  # soft labels work too
    torch.testing.assert_close(L.binary_cross_entropy(logits, soft), F.binary_cross_entropy_with_logits(logits, soft))


# --------------------------------------------------------------------------- neurons, layers, networks


def test_neuron_matches_by_hand_and_linear():
    x, w = torch.tensor([0.8, 0.5]), torch.tensor([3.0, -1.0])
    assert N.neuron(x, w, 0.25).item() == pytest.approx(3 * 0.8 - 0.5 + 0.25)
    assert N.neuron(x, w, 0.25, "sigmoid").item() == pytest.approx(1 / (1 + math.exp(-2.15)))
    linear = nn.Linear(3, 1)
    batch = torch.randn(6, 3, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = torch.tanh(linear(batch)).squeeze(1)
        got = N.neuron(batch, linear.weight[0], linear.bias[0], "tanh")
    assert got.shape == (6,)
    torch.testing.assert_close(got, expected)


def test_dense_matches_nn_linear():
    torch.manual_seed(9)
    linear = nn.Linear(4, 3)
    a = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(N.dense(a, linear.weight.T, linear.bias), linear(a))
        torch.testing.assert_close(N.dense(a, linear.weight.T, linear.bias, "relu"), F.relu(linear(a)))
        torch.testing.assert_close(N.dense(a[0], linear.weight.T, linear.bias), linear(a[0]))
    with pytest.raises(ValueError, match="features"):
        N.dense(a, linear.weight, linear.bias)  # nn.Linear's (out, in) layout is the wrong way round here


def test_dense_is_a_loop_of_neurons():
    g = torch.Generator().manual_seed(10)
    a, W, b = torch.randn(3, 4, generator=g), torch.randn(4, 2, generator=g), torch.randn(2, generator=g)
    by_neuron = torch.stack([N.neuron(a, W[:, j], b[j], "sigmoid") for j in range(2)], dim=1)
    torch.testing.assert_close(N.dense(a, W, b, "sigmoid"), by_neuron)


def test_forward_and_mlp_match_nn_sequential():
    torch.manual_seed(11)
    mlp = N.MLP([3, 5, 4, 2], activation="gelu")
    reference = nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 2))
    with torch.no_grad():
        for linear, W, b in zip(reference[::2], mlp.weights, mlp.biases):
            linear.weight.copy_(W.T)
            linear.bias.copy_(b)
    x = torch.randn(7, 3)
    torch.testing.assert_close(mlp(x), reference(x))
    outputs = N.forward(x, mlp.layers(), return_all=True)
    assert [tuple(o.shape) for o in outputs] == [(7, 3), (7, 5), (7, 4), (7, 2)]
    torch.testing.assert_close(outputs[-1], reference(x))
    assert sum(p.numel() for p in mlp.parameters()) == sum(p.numel() for p in reference.parameters())


def test_mlp_init_bounds_and_gradients():
    mlp = N.MLP([100, 10], generator=torch.Generator().manual_seed(12))
    assert mlp.weights[0].abs().max() <= 0.1 and mlp.biases[0].abs().max() <= 0.1
    mlp(torch.randn(4, 100)).sum().backward()
    assert all(p.grad is not None for p in mlp.parameters())
    with pytest.raises(ValueError):
        N.MLP([3])
    assert "sizes=[100, 10]" in repr(mlp)


def test_without_activations_two_layers_collapse_into_one():
    g = torch.Generator().manual_seed(13)
    W1, b1, W2, b2 = torch.randn(3, 4, generator=g), torch.randn(4, generator=g), torch.randn(4, 2, generator=g), \
        torch.randn(2, generator=g)
    x = torch.randn(5, 3, generator=g)
    two = N.forward(x, [(W1, b1, None), (W2, b2, None)])
    torch.testing.assert_close(two, N.dense(x, W1 @ W2, b1 @ W2 + b2))


def test_leaf_flower_data_and_hand_set_weights():
    X, y = N.leaf_flower_data(200, seed=0)
    assert X.shape == (200, 2) and y.shape == (200,) and y.dtype == torch.long
    assert (y == 0).sum() == (y == 1).sum() == 100
    assert X[:, 0].min() >= 0 and X[:, 0].max() <= 1 and X[:, 1].min() > 0
    assert X[y == 0, 0].mean() > X[y == 1, 0].mean() and X[y == 0, 1].mean() < X[y == 1, 1].mean()
    torch.testing.assert_close(N.leaf_flower_data(200, seed=0)[0], X)  # repeatable
    assert not torch.equal(N.leaf_flower_data(200, seed=1)[0], X)
    W, b = N.leaf_flower_weights()
    assert N.accuracy(N.dense(X, W, b), y) > 0.9
    assert N.classify(torch.tensor([[1.0, 2.0], [3.0, -1.0]])).tolist() == [1, 0]


# --------------------------------------------------------------------------- plots and widgets


def _lines(ax) -> int:
    return len(ax.get_lines())


def test_plot_activations_draws_function_and_derivative():
    fig = plot_activations()
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    assert all(_lines(ax) == 2 for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes] == ["sigmoid", "tanh", "relu", "gelu", "silu"]
    assert len(plot_activations(["relu"]).axes) == 1


def test_other_plots():
    fig = plot_softmax([2.0, 1.0, 0.1], temperatures=[0.5, 1.0, 2.0])
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert len(fig.axes[1].patches) == 3
    fig = plot_losses()
    assert len(fig.axes) == 2 and _lines(fig.axes[0]) == 2 and _lines(fig.axes[1]) == 1
    X, y = N.leaf_flower_data(40)
    W, b = N.leaf_flower_weights()
    fig = plot_decision_boundary(lambda t: N.dense(t, W, b), X, y)
    assert isinstance(fig, Figure) and len(fig.axes) == 1 and len(fig.axes[0].collections) >= 2
    fig = plot_leaf_flower(X, y)
    assert len(fig.axes) == 1 and len(fig.axes[0].collections) == 2


@pytest.mark.parametrize("activation", ["identity", "sigmoid", "relu", "gelu"])
def test_neuron_view(activation):
    fig = neuron_view(3.0, -1.0, 0.0, activation)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # the map and its colour bar
    assert activation in fig.axes[0].get_title()


def test_neuron_view_without_a_decision_line():
    fig = neuron_view(0.0, 0.0, 1.0, "relu")  # z = 1 everywhere: no z = 0 line to draw
    assert len(fig.axes) == 2


def test_neuron_explorer_builds_widgets():
    widget = neuron_explorer()
    names = {child.description for child in widget.children[:-1]}
    assert names == {"w1 (green)", "w2 (volume)", "bias b", "activation"}
    widget.children[0].value = 1.0  # moving a slider redraws without error
    assert widget.kwargs["w1"] == 1.0


# --------------------------------------------------------------------------- the graded checks


def _mlp_forward(x, weights, biases):
    for i, (W, b) in enumerate(zip(weights, biases)):
        x = x @ W + b
        if i < len(weights) - 1:
            x = torch.where(x > 0, x, torch.zeros_like(x))
    return x


def _cross_entropy_from_logits(logits, targets):
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    return -log_probs[torch.arange(len(targets)), targets].mean()


def _naive_softmax_breaks_at(dtype):
    # written differently from the solution: exp overflows first for the larger logit, so watch exp(c) alone,
    # counting down from far above until it is finite again
    c = 2000
    while torch.isinf(torch.exp(torch.tensor(float(c), dtype=dtype))):
        c -= 1
    return c + 1


def _cross_entropy_grad(logits, targets):
    # d/dz_i of -z_t + log sum_j exp(z_j) is softmax(z)_i - [i == t]; the mean over N rows divides by N
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    one_hot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    return (torch.exp(log_probs) - one_hot) / logits.shape[0]


CORRECT = {
    "neuron": lambda x, w, b: 1 / (1 + torch.exp(-((x * w).sum(-1) + b))),
    "dense_layer": lambda a, W, b: a @ W + b,
    "mlp_forward": _mlp_forward,
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "stable_softmax": lambda x, dim=-1: (lambda e: e / e.sum(dim, keepdim=True))(
        torch.exp(x - x.max(dim, keepdim=True).values)),
    "cross_entropy_from_logits": _cross_entropy_from_logits,
    "naive_softmax_breaks_at": _naive_softmax_breaks_at,
    "cross_entropy_grad": _cross_entropy_grad,
}


def _stub(*args, **kwargs):
    raise NotImplementedError("write this")


def test_chapter_registers_its_exercises():
    assert chapter.number == "01"
    assert set(chapter.exercises) == set(CORRECT)
    assert len(chapter.exercises) >= 5
    for exercise in chapter.exercises:
        checks = [c for c in chapter.checks if c.exercise == exercise]
        assert len(checks) >= 2, exercise
        assert all(c.hint for c in checks)


@pytest.mark.parametrize("exercise", sorted(CORRECT))
def test_checks_pass_for_a_correct_implementation(exercise):
    results = run_checks(chapter, {exercise: CORRECT[exercise]}, exercise)
    assert results and all(r.passed for r in results), [r.message for r in results if not r.passed]


@pytest.mark.parametrize("exercise", sorted(CORRECT))
def test_checks_fail_for_the_stub(exercise):
    results = run_checks(chapter, {exercise: _stub}, exercise)
    assert results and not any(r.passed for r in results)
    assert all("not written yet" in r.message for r in results)


def test_package_functions_pass_the_checks():
    ns = {
        "neuron": lambda x, w, b: N.neuron(x, w, b, "sigmoid"),
        "dense_layer": N.dense,
        "mlp_forward": lambda x, Ws, bs: N.forward(
            x, [(W, b, "relu" if i < len(Ws) - 1 else None) for i, (W, b) in enumerate(zip(Ws, bs))]),
        "relu": A.relu,
        "gelu": A.gelu,
        "stable_softmax": A.softmax,
        "cross_entropy_from_logits": L.cross_entropy,
        # the package has no function of its own for these two: the independent versions stand in
        "naive_softmax_breaks_at": _naive_softmax_breaks_at,
        "cross_entropy_grad": _cross_entropy_grad,
    }
    results = run_checks(chapter, ns)
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]


@pytest.mark.parametrize("exercise, builtin", [
    ("relu", lambda x: torch.relu(x)),
    ("relu", lambda x: F.relu(x)),
    ("relu", lambda x: nn.ReLU()(x)),
    ("gelu", lambda x: F.gelu(x)),
    ("dense_layer", lambda a, W, b: F.linear(a, W.T, b)),
    ("stable_softmax", lambda x, dim=-1: torch.softmax(x, dim)),
    ("stable_softmax", lambda x, dim=-1: x.softmax(dim)),
    ("stable_softmax", lambda x, dim=-1: F.softmax(x, dim=dim)),
    ("stable_softmax", lambda x, dim=-1: torch.exp(F.log_softmax(x, dim=dim))),
    ("cross_entropy_from_logits", lambda z, t: F.cross_entropy(z, t)),
    ("cross_entropy_from_logits", lambda z, t: nn.CrossEntropyLoss()(z, t)),
    ("cross_entropy_from_logits", lambda z, t: F.nll_loss(z.log_softmax(-1), t)),
    ("cross_entropy_from_logits", lambda z, t: (torch.logsumexp(z, -1) - z[torch.arange(len(t)), t]).mean()),
    ("cross_entropy_grad", lambda z, t: torch.autograd.grad(F.cross_entropy(z.requires_grad_(True), t), z)[0]),
    ("cross_entropy_grad", lambda z, t: torch.func.grad(lambda u: F.cross_entropy(u, t))(z)),
])
def test_checks_refuse_the_builtin_they_ask_you_to_write(exercise, builtin):
    results = run_checks(chapter, {exercise: builtin}, exercise)
    failed = [r for r in results if not r.passed]
    assert failed and all("asks you to write" in r.message for r in failed)
    assert torch.softmax(torch.zeros(2), 0).tolist() == [0.5, 0.5]  # the built-ins are back afterwards
    assert torch.zeros(2).softmax(0).tolist() == [0.5, 0.5] and F.relu(torch.tensor(-1.0)).item() == 0.0


def test_every_wrong_solution_fails_a_check():
    from wrong_solutions.ch01 import WRONG

    assert set(WRONG) == set(chapter.exercises)
    for exercise, wrong_fns in WRONG.items():
        assert wrong_fns, exercise
        for wrong in wrong_fns:
            results = run_checks(chapter, {exercise: wrong}, exercise)
            assert not all(r.passed for r in results), f"{exercise}: {wrong.__name__} passes every check"


def test_checks_are_deterministic():
    first = [r.to_dict() for r in run_checks(chapter, CORRECT)]
    second = [r.to_dict() for r in run_checks(chapter, CORRECT)]
    assert first == second
