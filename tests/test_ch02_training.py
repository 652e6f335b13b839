"""Tests of chapter 02's training modules: optimizers, dropout, descent experiments, plots and widget,
each against an independent reference (torch.optim, torch.nn.functional.dropout, closed forms, autograd)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from llmcourse.basics import descent as D
from llmcourse.basics import optim as O
from llmcourse.basics.dropout import Dropout, dropout, dropout_classic, keep_mask
from llmcourse.basics.descent_plots import plot_descent, plot_gradient_norms, plot_lr_sweep, plot_train_val
from llmcourse.basics.descent_widgets import learning_rate_explorer, learning_rate_view

F64 = torch.float64

# --------------------------------------------------------------------------- optimizers vs torch.optim


def _problem(seed: int = 0):
    """A tiny regression MLP: three trained tensors and one that never gets a gradient."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(24, 5, generator=g, dtype=F64)
    Y = torch.randn(24, 3, generator=g, dtype=F64)
    init = [torch.randn(5, 4, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64),
            torch.randn(4, 3, generator=g, dtype=F64), torch.randn(2, generator=g, dtype=F64)]

    def loss_fn(ps):
        return ((torch.tanh(X @ ps[0] + ps[1]) @ ps[2] - Y) ** 2).mean()

    return init, loss_fn


def _trajectory(make_optimizer, steps: int = 150, set_to_none: bool = True) -> torch.Tensor:
    init, loss_fn = _problem()
    params = [t.clone().requires_grad_(True) for t in init]
    opt = make_optimizer(params)
    rows = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        loss_fn(params).backward()
        opt.step()
        rows.append(torch.cat([p.detach().flatten() for p in params]))
    return torch.stack(rows)


CASES = {
    # name: (our class, torch class, keyword arguments shared by both)
    "sgd": (O.SGD, torch.optim.SGD, dict(lr=0.1)),
    "sgd-wd": (O.SGD, torch.optim.SGD, dict(lr=0.1, weight_decay=0.05)),
    "sgd-momentum": (O.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    "sgd-momentum-dampening-wd": (O.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3,
                                                              weight_decay=0.01)),
    "sgd-nesterov": (O.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "adagrad": (O.AdaGrad, torch.optim.Adagrad, dict(lr=0.1)),
    "adagrad-all": (O.AdaGrad, torch.optim.Adagrad, dict(lr=0.2, lr_decay=0.02, weight_decay=0.01,
                                                         initial_accumulator_value=0.5, eps=1e-3)),
    "rmsprop": (O.RMSProp, torch.optim.RMSprop, dict(lr=0.01)),
    "rmsprop-big-eps": (O.RMSProp, torch.optim.RMSprop, dict(lr=0.003, alpha=0.9, eps=1e-2)),
    "rmsprop-momentum": (O.RMSProp, torch.optim.RMSprop, dict(lr=0.005, momentum=0.7, weight_decay=0.02)),
    "rmsprop-centered": (O.RMSProp, torch.optim.RMSprop, dict(lr=0.005, centered=True)),
    "rmsprop-centered-momentum": (O.RMSProp, torch.optim.RMSprop, dict(lr=0.003, centered=True, momentum=0.5,
                                                                       eps=1e-3)),
    "adam": (O.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=False)),
    "adam-betas-eps": (O.Adam, torch.optim.Adam, dict(lr=0.005, betas=(0.5, 0.9), eps=1e-2)),
    "adam-l2": (O.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    "adamw": (O.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    "adamw-strong": (O.AdamW, torch.optim.AdamW, dict(lr=0.02, weight_decay=0.5, betas=(0.8, 0.99), eps=1e-3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_matches_torch_trajectory(name):
    ours, theirs, kwargs = CASES[name]
    ours_kwargs = {k: v for k, v in kwargs.items() if k != "amsgrad"}
    got = _trajectory(lambda ps: ours(ps, **ours_kwargs))
    want = _trajectory(lambda ps: theirs(ps, **kwargs))
    assert (want[-1] - want[0]).abs().max() > 0.05  # the parameters really moved
    # float64 round-off is ~1e-15 here; these settings are chosen so that it is not amplified chaotically
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_zero_grad_without_none_gives_the_same_trajectory():
    a = _trajectory(lambda ps: O.Adam(ps, lr=0.01), steps=50, set_to_none=False)
    b = _trajectory(lambda ps: torch.optim.Adam(ps, lr=0.01), steps=50, set_to_none=False)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_default_hyper_parameters_match_torch():
    p = [torch.zeros(1, requires_grad=True)]
    pairs = [(O.SGD(p), torch.optim.SGD(p)), (O.AdaGrad(p), torch.optim.Adagrad(p)),
             (O.RMSProp(p), torch.optim.RMSprop(p)), (O.Adam(p), torch.optim.Adam(p)),
             (O.AdamW(p), torch.optim.AdamW(p))]
    for ours, theirs in pairs:
        for key, value in theirs.defaults.items():
            if hasattr(ours, key):
                assert getattr(ours, key) == (tuple(value) if key == "betas" else value), (type(ours).__name__, key)


def test_parameters_without_gradient_are_left_alone():
    used, unused = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = O.Adam([used, unused], lr=0.1)
    (used**2).sum().backward()
    opt.step()
    assert torch.equal(unused.detach(), torch.ones(2)) and not torch.equal(used.detach(), torch.ones(3))
    opt.zero_grad()
    assert used.grad is None


# --------------------------------------------------------------------------- the functional steps


def _grad_fn(p):
    return torch.stack([p[0] ** 3 - 2 * p[1], torch.sin(p[1]) + p[0]])  # any smooth, non-quadratic field


def _class_path(opt_factory, steps=60):
    p = torch.tensor([1.5, -0.5], dtype=F64, requires_grad=True)
    opt = opt_factory([p])
    rows = []
    for _ in range(steps):
        opt.zero_grad()
        p.grad = _grad_fn(p.detach())
        opt.step()
        rows.append(p.detach().clone())
    return torch.stack(rows)


def test_functional_steps_agree_with_the_classes():
    start = torch.tensor([1.5, -0.5], dtype=F64)
    lr = 0.01

    def functional(update, state):
        p, rows = start.clone(), []
        for t in range(1, 61):
            p, state = update(p, _grad_fn(p), state, t)
            rows.append(p)
        return torch.stack(rows)

    zeros = torch.zeros(2, dtype=F64)
    cases = [
        (lambda p, g, s, t: (O.sgd_step(p, g, lr), s), None, lambda ps: O.SGD(ps, lr=lr)),
        (lambda p, g, s, t: O.momentum_step(p, g, s, lr, 0.9, nesterov=True), None,
         lambda ps: O.SGD(ps, lr=lr, momentum=0.9, nesterov=True)),
        (lambda p, g, s, t: O.adagrad_step(p, g, s, t, lr=0.1), zeros, lambda ps: O.AdaGrad(ps, lr=0.1)),
        (lambda p, g, s, t: O.rmsprop_step(p, g, s, lr)[:2], zeros, lambda ps: O.RMSProp(ps, lr=lr)),
        (lambda p, g, s, t: (lambda r: (r[0], (r[1], r[2])))(O.adam_step(p, g, *s, t, lr, (0.9, 0.99), 1e-8)),
         (zeros, zeros), lambda ps: O.Adam(ps, lr=lr, betas=(0.9, 0.99))),
        (lambda p, g, s, t: (lambda r: (r[0], (r[1], r[2])))(O.adamw_step(p, g, *s, t, lr, weight_decay=0.3)),
         (zeros, zeros), lambda ps: O.AdamW(ps, lr=lr, weight_decay=0.3)),
    ]
    for update, state, factory in cases:
        torch.testing.assert_close(functional(update, state), _class_path(factory), atol=1e-12, rtol=1e-12)


def test_functional_steps_are_pure():
    p, g, m, v = (torch.tensor([1.0, -2.0]) for _ in range(4))
    before = [t.clone() for t in (p, g, m, v)]
    O.adam_step(p, g, m, v, 3)
    O.momentum_step(p, g, m, 0.1, 0.9)
    O.adagrad_step(p, g, v, 2)
    O.rmsprop_step(p, g, v, momentum=0.5, buf=m, grad_avg=m)
    assert all(torch.equal(a, b) for a, b in zip((p, g, m, v), before))


def test_first_adam_and_adagrad_steps_move_by_lr_in_the_direction_of_minus_sign_grad():
    # With zero state, bias-corrected Adam's first step is lr * g / |g|: the size of g does not matter.
    p = torch.zeros(4, dtype=F64)
    g = torch.tensor([1e-3, -5.0, 2.0, -1e2], dtype=F64)
    new_p, m, v = O.adam_step(p, g, torch.zeros_like(p), torch.zeros_like(p), t=1, lr=0.1)
    torch.testing.assert_close(new_p, -0.1 * torch.sign(g), atol=1e-6, rtol=0)
    torch.testing.assert_close(m, 0.1 * g)
    torch.testing.assert_close(v, 0.001 * g**2)
    new_p, sum_sq = O.adagrad_step(p, g, torch.zeros_like(p), t=1, lr=0.1)
    torch.testing.assert_close(new_p, -0.1 * torch.sign(g), atol=1e-6, rtol=0)
    torch.testing.assert_close(sum_sq, g**2)


def test_sgd_momentum_first_buffer_is_the_gradient_and_then_accumulates():
    p, g = torch.zeros(2, dtype=F64), torch.tensor([1.0, -2.0], dtype=F64)
    p1, buf = O.momentum_step(p, g, None, lr=0.5, momentum=0.9)
    torch.testing.assert_close(buf, g)
    torch.testing.assert_close(p1, -0.5 * g)
    p2, buf = O.momentum_step(p1, g, buf, lr=0.5, momentum=0.9)
    torch.testing.assert_close(buf, 1.9 * g)  # 0.9 * g + g
    torch.testing.assert_close(p2, -0.5 * g - 0.5 * 1.9 * g)


def test_adamw_decays_decoupled_while_adam_l2_goes_through_the_adaptive_scaling():
    # With a zero loss gradient, AdamW shrinks the weights geometrically: p_t = p_0 (1 - lr wd)^t.
    p = torch.tensor([3.0, -0.5], dtype=F64, requires_grad=True)
    opt = O.AdamW([p], lr=0.1, weight_decay=0.2)
    for _ in range(25):
        p.grad = torch.zeros_like(p)
        opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([3.0, -0.5], dtype=F64) * (1 - 0.02) ** 25)
    # Adam's coupled L2 term is normalised like a gradient: the first step is lr * sign(p), whatever p's size.
    q = torch.tensor([3.0, -0.5], dtype=F64, requires_grad=True)
    adam = O.Adam([q], lr=0.1, weight_decay=0.2)
    q.grad = torch.zeros_like(q)
    adam.step()
    torch.testing.assert_close(q.detach(), torch.tensor([2.9, -0.4], dtype=F64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", [
    lambda p: O.SGD(p, lr=-0.1),
    lambda p: O.SGD(p, lr=float("nan")),
    lambda p: O.SGD(p, lr=0.1, momentum=-0.5),
    lambda p: O.SGD(p, lr=0.1, nesterov=True),
    lambda p: O.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
    lambda p: O.SGD(p, lr=0.1, weight_decay=-1),
    lambda p: O.AdaGrad(p, lr=-1),
    lambda p: O.AdaGrad(p, lr_decay=-0.1),
    lambda p: O.AdaGrad(p, initial_accumulator_value=-1),
    lambda p: O.RMSProp(p, alpha=1.0),
    lambda p: O.RMSProp(p, eps=-1e-8),
    lambda p: O.Adam(p, betas=(1.0, 0.999)),
    lambda p: O.Adam(p, betas=(0.9, -0.1)),
    lambda p: O.Adam(p, lr=-1e-3),
    lambda p: O.AdamW(p, betas=(0.9, 1.5)),
    lambda p: O.AdamW(p, weight_decay=-0.01),
])
def test_invalid_hyper_parameters_raise(make):
    with pytest.raises(ValueError):
        make([torch.zeros(2, requires_grad=True)])


def test_empty_parameter_list_raises():
    with pytest.raises(ValueError, match="empty"):
        O.Adam([])


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_inverted_dropout_keeps_the_expectation(p):
    x = torch.linspace(-2, 3, 50, dtype=F64)
    g = torch.Generator().manual_seed(0)
    n = 4000
    mean = torch.stack([dropout(x, p, True, g) for _ in range(n)]).mean(dim=0)
    # each entry's mean has standard deviation |x| sqrt(p / (1 - p) / n); allow 5 of them
    tol = 5 * x.abs() * math.sqrt(p / (1 - p) / n) + 1e-12
    assert ((mean - x).abs() <= tol).all()


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_inverted_dropout_has_the_statistics_of_torch(p):
    x = torch.ones(200_000)
    ours = dropout(x, p, training=True, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    theirs = F.dropout(x, p, training=True)
    for out in (ours, theirs):
        values = torch.unique(out)
        torch.testing.assert_close(values, torch.tensor([0.0, 1 / (1 - p)]))  # dropped, or scaled by 1/(1-p)
        assert abs((out != 0).float().mean().item() - (1 - p)) < 0.005  # keep fraction 1 - p (> 5 sigma)
    assert abs(ours.mean().item() - theirs.mean().item()) < 0.05


def test_dropout_is_identity_at_inference_and_for_p_zero():
    x = torch.randn(5, 7)
    for out in (dropout(x, 0.5, training=False), F.dropout(x, 0.5, training=False), dropout(x, 0.0, True),
                dropout_classic(x, 0.0, True)):
        assert torch.equal(out, x)


def test_dropout_gradient_is_the_scaled_mask():
    x = torch.randn(1000, requires_grad=True)
    g = torch.Generator().manual_seed(3)
    dropout(x, 0.25, True, g).sum().backward()
    mask = keep_mask(x.shape, 0.25, torch.Generator().manual_seed(3))
    torch.testing.assert_close(x.grad, mask.float() / 0.75)


def test_classic_dropout_is_inverted_dropout_times_keep_probability():
    p = 0.3
    x = torch.randn(10_000, dtype=F64)
    classic = dropout_classic(x, p, True, torch.Generator().manual_seed(5))
    inverted = dropout(x, p, True, torch.Generator().manual_seed(5))
    torch.testing.assert_close(classic, (1 - p) * inverted)  # same mask, no 1/(1-p) scaling in training
    assert set(torch.unique(classic / x).round(decimals=9).tolist()) == {0.0, 1.0}
    # at inference: classic multiplies by (1 - p), which is the expectation of its training output ...
    torch.testing.assert_close(dropout_classic(x, p, False), (1 - p) * x)
    g = torch.Generator().manual_seed(6)
    ones = torch.ones(200_000, dtype=F64)
    assert abs(dropout_classic(ones, p, True, g).mean().item() - (1 - p)) < 0.005
    # ... and equals (1 - p) times inverted dropout's inference output (which is x itself)
    torch.testing.assert_close(dropout_classic(x, p, False), (1 - p) * dropout(x, p, False))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_probability_out_of_range_raises(p):
    for fn in (dropout, dropout_classic):
        with pytest.raises(ValueError):
            fn(torch.ones(3), p, True)
    with pytest.raises(ValueError):
        Dropout(p)


def test_dropout_module_follows_train_and_eval():
    layer = Dropout(0.5, torch.Generator().manual_seed(0))
    x = torch.ones(1000)
    assert (layer(x) == 0).any()
    layer.eval()
    assert torch.equal(layer(x), x)


# --------------------------------------------------------------------------- surfaces and descent


def _autograd(loss_fn, p):
    leaf = p.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(leaf), leaf)
    return grad


def test_surface_gradients_match_autograd():
    pts = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    for surface in D.SURFACES.values():
        for p in pts:
            torch.testing.assert_close(surface.grad(p), _autograd(surface.loss, p))
        assert surface.loss(torch.tensor(surface.minimum, dtype=F64)) <= surface.loss(pts).min()


def test_least_squares_minimum_matches_lstsq():
    x, y = D.make_line_data()
    A = torch.stack([x, torch.ones_like(x)], dim=1)
    reference = torch.linalg.lstsq(A, y.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(torch.tensor(D.LEAST_SQUARES.minimum, dtype=F64), reference)
    torch.testing.assert_close(D.LEAST_SQUARES.grad(reference), torch.zeros(2, dtype=F64), atol=1e-10, rtol=0)


def test_descent_on_the_bowl_follows_the_closed_form():
    # On 0.5 (a x^2 + b y^2), each step multiplies each coordinate by (1 - lr * curvature).
    lr, steps = 0.15, 40
    path = D.run_descent(D.BOWL.grad, D.BOWL.start, lr, steps)
    assert path.shape == (steps + 1, 2)
    t = torch.arange(steps + 1, dtype=F64).unsqueeze(1)
    factors = 1 - lr * torch.tensor(D.BOWL_CURVATURES, dtype=F64)
    torch.testing.assert_close(path, torch.tensor(D.BOWL.start, dtype=F64) * factors**t)
    assert path[-1].norm() < 1e-2


def test_learning_rate_threshold_on_the_bowl_is_two_over_the_curvature():
    # the steepest curvature is 10, so gradient descent converges for lr < 0.2 and diverges above it
    results = {r.lr: r for r in D.lr_sweep("bowl", [0.01, 0.15, 0.19, 0.21, 0.25], steps=100)}
    assert results[0.01].verdict == "too slow"
    assert results[0.15].verdict == "converged" and results[0.19].verdict == "converged"
    assert results[0.21].verdict == "diverged" and results[0.25].verdict == "diverged"
    assert results[0.15].diverged_at is None and not results[0.15].diverged


def test_learning_rate_threshold_on_least_squares_comes_from_the_hessian():
    # the MSE of a line fit is quadratic with Hessian 2 A^T A / n; GD is stable iff lr < 2 / its top eigenvalue
    x, y = D.make_line_data()
    A = torch.stack([x, torch.ones_like(x)], dim=1)
    top = torch.linalg.eigvalsh(2 * A.T @ A / len(x)).max().item()
    below, above = D.lr_sweep("least squares", [0.95 * 2 / top, 1.05 * 2 / top], steps=400)
    assert below.verdict == "converged" and above.verdict == "diverged"


def test_divergence_is_detected_and_reported_with_finite_numbers():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        (r,) = D.lr_sweep("bowl", [0.5], steps=200)
    assert r.diverged and r.blew_up_at is not None and r.diverged_at == 1
    assert math.isfinite(r.final_loss)
    assert D.divergence_step(r.trajectory) == r.blew_up_at
    assert torch.isfinite(r.trajectory[: r.blew_up_at]).all() and torch.isnan(r.trajectory[r.blew_up_at:]).all()
    text = D.sweep_report([r])
    assert "diverged" in text and "nan" not in text.lower() and "inf" not in text.lower()
    path = D.run_descent(D.BOWL.grad, D.BOWL.start, 0.15, 50)
    assert D.divergence_step(path) is None


def test_full_batch_minibatch_descent_is_plain_gradient_descent():
    x, y = D.make_line_data()
    surface = D.least_squares_surface(x, y)
    full = D.run_minibatch_descent(x, y, (-1.0, 3.0), 0.1, 400, batch_size=len(x))
    torch.testing.assert_close(full, D.run_descent(surface.grad, (-1.0, 3.0), 0.1, 400))
    torch.testing.assert_close(full[-1], torch.tensor(surface.minimum, dtype=F64), atol=1e-6, rtol=0)


def test_sgd_gets_close_but_keeps_jittering():
    x, y = D.make_line_data()
    best = torch.tensor(D.LEAST_SQUARES.minimum, dtype=F64)
    sgd = D.run_minibatch_descent(x, y, (-1.0, 3.0), 0.05, 40 * len(x), batch_size=1, seed=0)
    last_epoch = sgd[-len(x):]
    assert (last_epoch - best).norm(dim=1).max() < 0.6  # close to the minimum ...
    assert (last_epoch - best).norm(dim=1).min() > 1e-3  # ... but never on it: each step sees one example
    assert len(set(map(tuple, last_epoch.tolist()))) == len(x)


def test_an_sgd_epoch_visits_every_example_once_in_a_shuffled_order():
    x, y = D.make_line_data()
    n, lr, start = len(x), 1e-9, torch.tensor([-1.0, 3.0], dtype=F64)
    # with a tiny lr the parameters barely move, so each batch-1 step is -lr * (one example's gradient
    # at the start): matching steps to examples recovers the order in which they were visited
    per_example = torch.stack([D.least_squares_grad(start, x[i:i + 1], y[i:i + 1]) for i in range(n)])
    path = D.run_minibatch_descent(x, y, start, lr, 2 * n, batch_size=1, seed=0)
    steps = -(path[1:] - path[:-1]) / lr
    order = torch.cdist(steps, per_example).argmin(dim=1)
    torch.testing.assert_close(steps, per_example[order], rtol=1e-5, atol=1e-6)
    first, second = order[:n], order[n:]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(n))  # every example once per epoch
    assert not torch.equal(first, second)  # reshuffled every epoch
    assert not torch.equal(first, torch.arange(n))  # shuffled at all
    other = D.run_minibatch_descent(x, y, start, lr, n, batch_size=1, seed=1)
    assert not torch.equal(torch.cdist(-(other[1:] - other[:-1]) / lr, per_example).argmin(dim=1), first)


def test_compare_batch_sizes_counts_updates_per_epoch():
    paths = D.compare_batch_sizes(epochs=3, lr=0.05)
    assert {k: len(v) for k, v in paths.items()} == {"full batch (32)": 4, "mini-batch (8)": 13, "SGD (batch 1)": 97}
    assert all(len(v) == 11 for v in D.compare_batch_sizes(steps=10).values())
    assert D.steps_per_epoch(10, 3) == 4


def test_run_optimizer_with_our_adam_matches_torch_adam_on_rosenbrock():
    ours = D.run_optimizer("rosenbrock", lambda ps: O.Adam(ps, lr=0.05), 200)
    theirs = D.run_optimizer("rosenbrock", lambda ps: torch.optim.Adam(ps, lr=0.05), 200)
    torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=1e-9)
    assert D.ROSENBROCK.loss(ours[-1]) < D.ROSENBROCK.loss(ours[0])


def test_descent_input_checks():
    with pytest.raises(ValueError):
        D.run_descent(D.BOWL.grad, (0.0, 0.0, 0.0), 0.1, 5)
    with pytest.raises(ValueError):
        D.run_descent(D.BOWL.grad, (1.0, 1.0), -0.1, 5)
    x, y = D.make_line_data()
    with pytest.raises(ValueError):
        D.run_minibatch_descent(x, y, (0.0, 0.0), 0.1, 5, batch_size=0)
    with pytest.raises(ValueError):
        D.get_surface("saddle")


# --------------------------------------------------------------------------- gradient flow


def _ratio(norms):
    return norms[0] / norms[-1]


def test_sigmoid_gradients_vanish_but_relu_kaiming_and_residual_keep_them():
    flow = D.compare_gradient_flow(depth=20, width=64, seed=0)
    assert all(len(v) == 20 for v in flow.values())
    sigmoid = _ratio(flow["sigmoid"])
    assert sigmoid < 1e-10  # sigmoid' <= 1/4 per layer: the first layer barely learns
    assert _ratio(flow["relu + kaiming init"]) > 0.1
    assert _ratio(flow["sigmoid + residual"]) > 1e6 * sigmoid
    assert min(flow["relu + N(0, 1) init"]) > 1e10  # too-large weights: exploding gradients
    # the sensitivities dLoss/dz passed backwards tell the same story without the activations' size
    sens = D.compare_gradient_flow(depth=20, width=64, seed=0, of="sensitivities")
    assert _ratio(sens["sigmoid"]) < 1e-10 < 0.05 < _ratio(sens["sigmoid + residual"])
    assert _ratio(sens["relu + N(0, 1) init"]) > 1e10


def test_gradient_norms_match_an_nn_linear_network():
    # the same network built from torch.nn.Linear, with the weights copied over, gives the same norms
    depth, width, batch = 6, 16, 8
    ours = D.gradient_norms_per_layer(depth, width, "tanh", "xavier", residual=True, seed=3, batch=batch)
    g = torch.Generator().manual_seed(3)
    weights = [D.init_weight(width, width, "xavier", g) for _ in range(depth)]
    x = torch.randn(batch, width, generator=g, dtype=F64)
    target = torch.randn(batch, width, generator=g, dtype=F64)
    layers = [torch.nn.Linear(width, width, dtype=F64) for _ in range(depth)]
    with torch.no_grad():
        for layer, W in zip(layers, weights):
            layer.weight.copy_(W.T)
            layer.bias.zero_()
    h = x
    for i, layer in enumerate(layers):
        h = layer(h) if i == depth - 1 else h + torch.tanh(layer(h))
    F.mse_loss(h, target).backward()
    torch.testing.assert_close(torch.tensor(ours, dtype=F64),
                               torch.stack([layer.weight.grad.norm() for layer in layers]))


def test_init_schemes_have_their_standard_deviations():
    g = torch.Generator().manual_seed(0)
    n = 400
    expected = {"default": 1 / math.sqrt(3 * n), "xavier": math.sqrt(1 / n), "kaiming": math.sqrt(2 / n),
                "normal": 1.0}
    for init, std in expected.items():
        assert abs(D.init_weight(n, n, init, g).std().item() / std - 1) < 0.02, init
    with pytest.raises(ValueError):
        D.init_weight(4, 4, "zeros", g)


# --------------------------------------------------------------------------- overfitting


def test_overfitting_without_dropout_and_less_with_it():
    plain = D.overfit_experiment(0.0, epochs=100, seed=0)
    dropped = D.overfit_experiment(0.5, epochs=100, seed=0)
    assert len(plain.train) == len(plain.val) == 100
    assert plain.train[-1] < 0.2 * plain.train[0] and plain.train_acc[-1] >= 0.95  # memorises the noisy training set
    assert plain.val[-1] > 2 * min(plain.val)  # while the validation loss turns around and climbs
    assert plain.best_epoch < 50
    assert dropped.val[-1] < 0.5 * plain.val[-1]
    assert dropped.train[-1] > plain.train[-1]  # dropout makes memorising harder
    again = D.overfit_experiment(0.5, epochs=100, seed=0)
    assert again.val == dropped.val  # seeded: the lesson's numbers are repeatable


# --------------------------------------------------------------------------- plots and widget


def test_plots_return_figures_with_one_line_per_curve():
    paths = {"GD": D.run_descent(D.BOWL.grad, D.BOWL.start, 0.15, 20),
             "momentum": D.run_optimizer("bowl", lambda ps: O.SGD(ps, lr=0.05, momentum=0.9), 20),
             "Adam": D.run_optimizer("bowl", lambda ps: O.Adam(ps, lr=0.3), 20)}
    fig = plot_descent("bowl", paths)
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == 3

    fig = plot_lr_sweep(D.lr_sweep("bowl", [0.01, 0.15, 0.5], steps=60))  # one of them blows up
    left, right = fig.axes[:2]
    assert len(left.get_lines()) == 3 and len(right.get_lines()) == 3 and right.get_yscale() == "log"

    fig = plot_gradient_norms({"a": [1e-8, 1e-4, 1.0], "b": [1.0, 1.0, 1.0]})
    assert len(fig.axes[0].get_lines()) == 2 and fig.axes[0].get_yscale() == "log"

    curves = [D.TrainValCurves("x", [1.0, 0.5], [1.0, 0.9]), D.TrainValCurves("y", [1.0, 0.7], [1.0, 0.8])]
    assert len(plot_train_val(curves).axes[0].get_lines()) == 4
    assert len(plot_train_val(curves[0]).axes[0].get_lines()) == 2
    assert len(plot_train_val({"z": {"train": [1, 0.5], "val": [1, 2]}}).axes[0].get_lines()) == 2


def test_learning_rate_view_is_a_plain_function_and_the_explorer_wraps_it():
    fig = learning_rate_view(0.15, 30, "bowl")
    assert isinstance(fig, Figure) and "converged" in fig._suptitle.get_text()
    assert "diverged" in learning_rate_view(0.5, 30, "bowl")._suptitle.get_text()
    widget = learning_rate_explorer()
    assert {c.description for c in widget.children[:3]} == {"learning rate", "steps", "surface"}


def test_two_valleys_has_a_deep_and_a_shallow_minimum_and_a_ridge():
    surface = D.TWO_VALLEYS
    deep, ridge, shallow = D.TWO_VALLEYS_STATIONARY
    # the stationary points along p0 are the real roots of 4 x^3 - 4 x + tilt, found independently by numpy
    roots = sorted(r.real for r in np.roots([4.0, 0.0, -4.0, D.TWO_VALLEYS_TILT]))
    np.testing.assert_allclose([deep, ridge, shallow], roots, atol=1e-12)
    for x, curvature_sign in [(deep, 1), (ridge, -1), (shallow, 1)]:
        p = torch.tensor([x, 0.0], dtype=F64)
        torch.testing.assert_close(_autograd(surface.loss, p), torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)
        hessian = torch.autograd.functional.hessian(surface.loss, p)
        assert curvature_sign * hessian[0, 0] > 0 and hessian[1, 1] > 0  # minima curve up, the ridge curves down
    assert surface.loss(torch.tensor([deep, 0.0], dtype=F64)) < surface.loss(torch.tensor([shallow, 0.0], dtype=F64))
    grid = torch.stack(torch.meshgrid(torch.linspace(-2, 2, 401, dtype=F64), torch.linspace(-2, 2, 401, dtype=F64),
                                      indexing="ij"), dim=-1)
    assert surface.loss(grid).min() >= surface.min_value  # the star is the lowest point of the map
    assert D.TWO_VALLEYS_LOCAL_MINIMUM == (shallow, 0.0) and surface.minimum == (deep, 0.0)


def test_descent_on_two_valleys_ends_in_the_valley_its_start_leads_to():
    deep, ridge, shallow = D.TWO_VALLEYS_STATIONARY
    left = D.run_descent(D.TWO_VALLEYS.grad, (ridge - 0.05, 1.2), 0.05, 300)[-1]
    right = D.run_descent(D.TWO_VALLEYS.grad, (ridge + 0.05, 1.2), 0.05, 300)[-1]
    torch.testing.assert_close(left, torch.tensor([deep, 0.0], dtype=F64), atol=1e-8, rtol=0)
    torch.testing.assert_close(right, torch.tensor([shallow, 0.0], dtype=F64), atol=1e-8, rtol=0)
    # the same with torch.optim.SGD on autograd's gradient
    p = torch.tensor([ridge + 0.05, 1.2], dtype=F64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        D.two_valleys_loss(p).backward()
        opt.step()
    torch.testing.assert_close(p.detach(), right, atol=1e-10, rtol=0)
