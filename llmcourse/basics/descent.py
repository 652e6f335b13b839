"""Gradient descent experiments: loss surfaces, learning rates, batch sizes, gradient flow, overfitting (chapter 02).

Everything here is small enough to run in seconds on a CPU and to draw:

1. **Surfaces.** A loss over just two parameters can be drawn as a contour map.
   :data:`BOWL` is an elongated quadratic bowl, :data:`ROSENBROCK` a curved
   banana-shaped valley, :data:`TWO_VALLEYS` a non-convex loss with a deep and a
   shallow minimum, and :func:`least_squares_surface` the mean squared error
   of fitting a line ``y = w x + b`` to a seeded noisy dataset (:func:`make_line_data`).
2. **Descent.** :func:`run_descent` is plain gradient descent,
   ``p <- p - lr * grad(p)``, recording every point it visits.
   :func:`run_minibatch_descent` does the same on the line-fitting problem with a
   gradient from a random mini-batch (batch 1 is SGD, the whole set is full-batch GD);
   :func:`run_optimizer` runs any optimizer from :mod:`llmcourse.basics.optim` on a surface.
3. **Learning rate.** :func:`lr_sweep` runs one descent per learning rate and says
   whether each one converged, was too slow, or diverged. A run that blows up is
   stopped (its later points are NaN) instead of overflowing.
4. **Gradient flow.** :func:`gradient_norms_per_layer` measures how large each layer's
   weight gradient is in a deep MLP: with sigmoids it vanishes towards the input;
   ReLU with Kaiming initialisation, or residual connections, keep it alive.
5. **Overfitting.** :func:`overfit_experiment` trains a too-large network on a tiny
   noisy dataset and records training and validation loss, with or without dropout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from llmcourse.basics.activations import get_activation
from llmcourse.config import scaled
from llmcourse.basics.dropout import dropout
from llmcourse.basics.optim import Adam, Optimizer

DTYPE = torch.float64  # trajectories are tiny; double precision keeps blow-ups from overflowing early
MAX_NORM = 1e6  # a run whose parameters grow beyond this is declared diverged and stopped

Point = Sequence[float] | Tensor

# --------------------------------------------------------------------------- 1. surfaces


@dataclass(frozen=True)
class Surface:
    """A loss over two parameters ``p = (p0, p1)``, with its gradient and what we know about it.

    ``loss`` maps ``(..., 2)`` to ``(...)`` so a whole grid can be evaluated at once;
    ``grad`` maps ``(2,)`` to ``(2,)``. ``xlim``/``ylim`` is a good window to draw,
    ``good_lr`` a learning rate with which plain gradient descent works well.
    """

    name: str
    loss: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]
    minimum: tuple[float, float]
    start: tuple[float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    good_lr: float
    labels: tuple[str, str] = ("p0", "p1")

    def __call__(self, p: Tensor) -> Tensor:
        return self.loss(p)

    @property
    def min_value(self) -> float:
        return float(self.loss(torch.tensor(self.minimum, dtype=DTYPE)))


BOWL_CURVATURES = (1.0, 10.0)  # second derivatives along the two axes: a bowl 10x steeper in p1


def bowl_loss(p: Tensor) -> Tensor:
    """0.5 * (1 * p0^2 + 10 * p1^2): a quadratic bowl, stretched so one direction is 10x steeper."""
    a, b = BOWL_CURVATURES
    return 0.5 * (a * p[..., 0] ** 2 + b * p[..., 1] ** 2)


def bowl_grad(p: Tensor) -> Tensor:
    a, b = BOWL_CURVATURES
    return torch.stack([a * p[..., 0], b * p[..., 1]], dim=-1)


def rosenbrock_loss(p: Tensor) -> Tensor:
    """(1 - p0)^2 + 100 (p1 - p0^2)^2: a narrow curved valley with its minimum 0 at (1, 1)."""
    x, y = p[..., 0], p[..., 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rosenbrock_grad(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)], dim=-1)


# Plain gradient descent on the bowl is stable only for lr < 2 / 10 = 0.2 (the largest curvature).
BOWL = Surface("bowl", bowl_loss, bowl_grad, minimum=(0.0, 0.0), start=(-4.0, 1.5),
               xlim=(-5.0, 5.0), ylim=(-2.5, 2.5), good_lr=0.15)
ROSENBROCK = Surface("rosenbrock", rosenbrock_loss, rosenbrock_grad, minimum=(1.0, 1.0), start=(-1.2, 1.0),
                     xlim=(-2.0, 2.0), ylim=(-1.0, 3.0), good_lr=1e-3)

TWO_VALLEYS_TILT = 0.3  # tilts the double well so that the valley at p0 < 0 is the deeper one


def two_valleys_loss(p: Tensor) -> Tensor:
    """(p0^2 - 1)^2 + 0.3 p0 + p1^2: two valleys near p0 = -1 (deeper) and p0 = +1, split by a ridge."""
    x, y = p[..., 0], p[..., 1]
    return (x**2 - 1) ** 2 + TWO_VALLEYS_TILT * x + y**2


def two_valleys_grad(p: Tensor) -> Tensor:
    x, y = p[..., 0], p[..., 1]
    return torch.stack([4 * x * (x**2 - 1) + TWO_VALLEYS_TILT, 2 * y], dim=-1)


def _two_valleys_stationary() -> tuple[float, float, float]:
    """Where the slope along p0 is 0 (with p1 = 0), by Newton's method: deep minimum, ridge, shallow minimum."""
    points = []
    for x in (-1.0, 0.0, 1.0):
        for _ in range(60):
            x -= (4 * x * (x * x - 1) + TWO_VALLEYS_TILT) / (12 * x * x - 4)
        points.append(x)
    return tuple(points)


TWO_VALLEYS_STATIONARY = _two_valleys_stationary()
TWO_VALLEYS = Surface("two valleys", two_valleys_loss, two_valleys_grad, minimum=(TWO_VALLEYS_STATIONARY[0], 0.0),
                      start=(0.45, 1.2), xlim=(-2.0, 2.0), ylim=(-1.5, 1.5), good_lr=0.05)
TWO_VALLEYS_LOCAL_MINIMUM = (TWO_VALLEYS_STATIONARY[2], 0.0)  # the shallower valley: a minimum, not the lowest


def make_line_data(n: int = 32, w: float = 2.0, b: float = -1.0, noise: float = 0.5,
                   seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` points ``(x, y)`` with ``y = w x + b + noise * N(0, 1)`` and ``x`` uniform in [-1, 3]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=DTYPE) * 4 - 1
    y = w * x + b + noise * torch.randn(n, generator=g, dtype=DTYPE)
    return x, y


def least_squares_loss(p: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of the line ``w x + b`` with ``(w, b) = p``; ``p`` may be a grid ``(..., 2)``."""
    w, b = p[..., 0:1], p[..., 1:2]
    return ((w * x + b - y) ** 2).mean(dim=-1)


def least_squares_grad(p: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Gradient of :func:`least_squares_loss` over the given points.

    With residuals ``r = w x + b - y`` it is ``(2 mean(r x), 2 mean(r))``; pass a subset of the
    points to get a mini-batch gradient.
    """
    r = p[0] * x + p[1] - y
    return torch.stack([2 * (r * x).mean(), 2 * r.mean()])


def least_squares_solution(x: Tensor, y: Tensor) -> Tensor:
    """The exact minimiser ``(w, b)`` from the normal equations (a reference for gradient descent)."""
    A = torch.stack([x, torch.ones_like(x)], dim=1)
    return torch.linalg.solve(A.T @ A, A.T @ y)


def least_squares_surface(x: Tensor | None = None, y: Tensor | None = None, start: tuple[float, float] = (-1.0, 3.0),
                          good_lr: float = 0.1) -> Surface:
    """The line-fitting loss over ``(w, b)`` for data ``x``, ``y`` (default: :func:`make_line_data`)."""
    if x is None or y is None:
        x, y = make_line_data()
    x, y = x.to(DTYPE), y.to(DTYPE)
    w_opt, b_opt = (float(v) for v in least_squares_solution(x, y))

    def window(a: float, b: float) -> tuple[float, float]:  # both the start and the minimum, with a margin
        pad = 0.3 * abs(a - b) + 0.5
        return min(a, b) - pad, max(a, b) + pad

    return Surface("least squares", lambda p: least_squares_loss(p, x, y), lambda p: least_squares_grad(p, x, y),
                   minimum=(w_opt, b_opt), start=start, xlim=window(start[0], w_opt), ylim=window(start[1], b_opt),
                   good_lr=good_lr, labels=("w (slope)", "b (intercept)"))


LEAST_SQUARES = least_squares_surface()
SURFACES: dict[str, Surface] = {"bowl": BOWL, "rosenbrock": ROSENBROCK, "least squares": LEAST_SQUARES,
                               "two valleys": TWO_VALLEYS}


def get_surface(surface: str | Surface) -> Surface:
    """Turn a name from :data:`SURFACES` into the surface; surfaces pass through."""
    if isinstance(surface, Surface):
        return surface
    try:
        return SURFACES[surface]
    except KeyError:
        raise ValueError(f"unknown surface {surface!r}; choose one of: {', '.join(SURFACES)}") from None


# --------------------------------------------------------------------------- 2. descent


def _as_point(start: Point) -> Tensor:
    p = torch.as_tensor(start, dtype=DTYPE).clone()
    if p.shape != (2,):
        raise ValueError(f"a start point has two coordinates, got shape {tuple(p.shape)}")
    return p


def _blew_up(p: Tensor, max_norm: float) -> bool:
    return not bool(torch.isfinite(p).all()) or float(p.abs().max()) > max_norm


def _check_lr(lr: float, steps: int) -> None:
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"learning rate must be a finite number >= 0, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")


def run_descent(grad_fn: Callable[[Tensor], Tensor], start: Point, lr: float, steps: int,
                max_norm: float = MAX_NORM) -> Tensor:
    """Gradient descent ``p <- p - lr * grad_fn(p)`` from ``start``; returns every point, shape ``(steps + 1, 2)``.

    If the parameters become non-finite or larger than ``max_norm`` the run has diverged:
    it stops there and the remaining rows are NaN (see :func:`divergence_step`).
    """
    _check_lr(lr, steps)
    path = torch.full((steps + 1, 2), float("nan"), dtype=DTYPE)
    p = _as_point(start)
    path[0] = p
    for t in range(1, steps + 1):
        p = p - lr * grad_fn(p)
        if _blew_up(p, max_norm):
            break
        path[t] = p
    return path


def divergence_step(trajectory: Tensor) -> int | None:
    """The first step whose point is missing (the run blew up there), or None if the run finished."""
    bad = ~torch.isfinite(trajectory).all(dim=-1)
    return int(bad.nonzero()[0, 0]) if bad.any() else None


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Updates in one epoch, one pass over ``n`` examples in batches of ``batch_size`` (the last may be smaller)."""
    return math.ceil(n / batch_size)


def run_minibatch_descent(x: Tensor, y: Tensor, start: Point, lr: float, steps: int, batch_size: int,
                          seed: int = 0, max_norm: float = MAX_NORM) -> Tensor:
    """Mini-batch gradient descent on the line fit to ``(x, y)``; returns the ``(steps + 1, 2)`` path of ``(w, b)``.

    Each epoch shuffles the data and walks through it in batches of ``batch_size``; every
    batch gives one update using the gradient of the loss *on that batch only*. ``batch_size=1``
    is stochastic gradient descent; ``batch_size=len(x)`` is full-batch gradient descent.
    """
    _check_lr(lr, steps)
    n = len(x)
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and the number of examples ({n}), got {batch_size}")
    x, y = x.to(DTYPE), y.to(DTYPE)
    g = torch.Generator().manual_seed(seed)
    path = torch.full((steps + 1, 2), float("nan"), dtype=DTYPE)
    p = _as_point(start)
    path[0] = p
    batches: list[Tensor] = []
    for t in range(1, steps + 1):
        if not batches:  # a new epoch: a fresh random order
            batches = list(torch.randperm(n, generator=g).split(batch_size))
        idx = batches.pop(0)
        p = p - lr * least_squares_grad(p, x[idx], y[idx])
        if _blew_up(p, max_norm):
            break
        path[t] = p
    return path


def compare_batch_sizes(epochs: int = 5, lr: float = 0.05, batch_sizes: Sequence[int] | None = None,
                        x: Tensor | None = None, y: Tensor | None = None, start: Point = (-1.0, 3.0),
                        seed: int = 0, steps: int | None = None) -> dict[str, Tensor]:
    """Paths of full-batch GD, mini-batch and SGD on the line fit, all given the same number of *epochs*.

    Full-batch GD makes one update per epoch, batch ``B`` makes ``n / B``, SGD makes ``n``.
    Pass ``steps`` instead to give every run the same number of *updates*.
    Keys are readable labels such as ``"full batch (32)"``, ``"mini-batch (8)"``, ``"SGD (batch 1)"``.
    """
    if x is None or y is None:
        x, y = make_line_data()
    n = len(x)
    if batch_sizes is None:
        batch_sizes = (n, 8, 1)
    paths = {}
    for bs in batch_sizes:
        label = f"full batch ({n})" if bs == n else ("SGD (batch 1)" if bs == 1 else f"mini-batch ({bs})")
        n_steps = epochs * steps_per_epoch(n, bs) if steps is None else steps
        paths[label] = run_minibatch_descent(x, y, start, lr, n_steps, bs, seed)
    return paths


def run_optimizer(surface: str | Surface, make_optimizer: Callable[[list[Tensor]], Optimizer | torch.optim.Optimizer],
                  steps: int, start: Point | None = None, max_norm: float = MAX_NORM) -> Tensor:
    """Minimise ``surface`` with an optimizer, e.g. ``run_optimizer(ROSENBROCK, lambda ps: Adam(ps, lr=0.05), 500)``.

    The gradient comes from autograd on ``surface.loss``. Returns the ``(steps + 1, 2)`` path
    (NaN after a blow-up, as in :func:`run_descent`).
    """
    surface = get_surface(surface)
    p = _as_point(surface.start if start is None else start).requires_grad_(True)
    optimizer = make_optimizer([p])
    path = torch.full((steps + 1, 2), float("nan"), dtype=DTYPE)
    path[0] = p.detach()
    for t in range(1, steps + 1):
        optimizer.zero_grad()
        surface.loss(p).backward()
        optimizer.step()
        if _blew_up(p.detach(), max_norm):
            break
        path[t] = p.detach()
    return path


# --------------------------------------------------------------------------- 3. learning-rate sweep


@dataclass
class SweepResult:
    """One run of :func:`lr_sweep`: its path, its losses and a verdict.

    ``verdict`` is ``"converged"`` (the gap to the minimum shrank by the factor ``tol``),
    ``"too slow"`` (still on its way), or ``"diverged"`` (the loss ended above where it started,
    or the run blew up). ``diverged_at`` is the first step whose loss exceeded the starting
    loss; ``final_loss`` is the last finite loss, so a report never shows inf or NaN.
    """

    lr: float
    trajectory: Tensor
    losses: Tensor
    verdict: str
    final_loss: float
    diverged_at: int | None = None
    blew_up_at: int | None = None

    @property
    def diverged(self) -> bool:
        return self.verdict == "diverged"

    def __str__(self) -> str:
        text = f"lr={self.lr:<8g} {self.verdict:<10} final loss {self.final_loss:.3g}"
        if self.diverged_at is not None:
            text += f" (loss above its start from step {self.diverged_at}"
            text += f", blew up at step {self.blew_up_at})" if self.blew_up_at is not None else ")"
        return text


def lr_sweep(surface: str | Surface = "bowl", lrs: Sequence[float] = (0.01, 0.15, 0.25), steps: int = 50,
             start: Point | None = None, tol: float = 1e-3) -> list[SweepResult]:
    """Plain gradient descent on ``surface`` once per learning rate; see :class:`SweepResult` for the verdicts.

    The default learning rates on the bowl are too small, about right, and too large
    (the bowl's steepest curvature is 10, so anything above 2 / 10 = 0.2 diverges).
    """
    surface = get_surface(surface)
    start = surface.start if start is None else start
    results = []
    for lr in lrs:
        path = run_descent(surface.grad, start, lr, steps)
        losses = surface.loss(path)  # NaN rows stay NaN
        finite = losses[torch.isfinite(losses)]
        first, last = float(finite[0]), float(finite[-1])
        blew_up_at = divergence_step(path)
        above = (losses > first).nonzero()
        diverged_at = int(above[0, 0]) if len(above) else blew_up_at
        gap0, gap = first - surface.min_value, last - surface.min_value
        if blew_up_at is not None or last > first:
            verdict = "diverged"
        elif gap <= tol * max(gap0, 1e-300):
            verdict, diverged_at = "converged", None
        else:
            verdict, diverged_at = "too slow", None
        results.append(SweepResult(lr, path, losses, verdict, last, diverged_at, blew_up_at))
    return results


def sweep_report(results: Sequence[SweepResult]) -> str:
    """One line per run of :func:`lr_sweep`."""
    return "\n".join(str(r) for r in results)


# --------------------------------------------------------------------------- 4. gradient flow in deep networks


def init_weight(n_in: int, n_out: int, init: str, generator: torch.Generator) -> Tensor:
    """A weight matrix ``(n_in, n_out)`` for one of the schemes in :data:`INITS`.

    * ``"default"``: uniform in ``±1/sqrt(n_in)``, what ``torch.nn.Linear`` does (std ``1/sqrt(3 n_in)``).
    * ``"xavier"``: normal with std ``sqrt(2 / (n_in + n_out))`` (Glorot), made for tanh/sigmoid.
    * ``"kaiming"``: normal with std ``sqrt(2 / n_in)`` (He), made for ReLU: it makes up for
      ReLU zeroing half of its inputs, so the signal keeps its size layer after layer.
    * ``"normal"``: standard normal, std 1: far too large, gradients explode.
    """
    if init == "default":
        return (torch.rand(n_in, n_out, generator=generator, dtype=DTYPE) * 2 - 1) / math.sqrt(n_in)
    std = {"xavier": math.sqrt(2 / (n_in + n_out)), "kaiming": math.sqrt(2 / n_in), "normal": 1.0}.get(init)
    if std is None:
        raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    return torch.randn(n_in, n_out, generator=generator, dtype=DTYPE) * std


INITS = ("default", "xavier", "kaiming", "normal")


def gradient_norms_per_layer(depth: int = 20, width: int = 64, activation: str = "sigmoid", init: str = "default",
                             residual: bool = False, seed: int = 0, batch: int = 64,
                             of: str = "weights") -> list[float]:
    """The size (Frobenius norm) of each layer's gradient in a deep MLP, first layer to last.

    The network has ``depth`` layers ``width -> width``; every layer but the last applies
    ``activation``. With ``residual=True`` each hidden layer *adds* its output to its input,
    ``h = h + activation(h @ W + b)``, so the gradient has a path that skips the layer.
    The loss is the mean squared error against a random target, for a random batch.

    ``of="weights"`` measures dLoss/dW, what the optimizer uses. ``of="sensitivities"``
    measures dLoss/dz for each layer's weighted sum ``z = h @ W + b``: the "sensitivity"
    that backpropagation passes from layer to layer (dLoss/dW is ``h.T @`` that).
    """
    if depth < 2:
        raise ValueError(f"depth must be at least 2, got {depth}")
    if of not in ("weights", "sensitivities"):
        raise ValueError(f"of must be 'weights' or 'sensitivities', got {of!r}")
    g = torch.Generator().manual_seed(seed)
    act = get_activation(activation)
    weights = [init_weight(width, width, init, g).requires_grad_(True) for _ in range(depth)]
    biases = [torch.zeros(width, dtype=DTYPE, requires_grad=True) for _ in range(depth)]
    x = torch.randn(batch, width, generator=g, dtype=DTYPE)
    target = torch.randn(batch, width, generator=g, dtype=DTYPE)
    h = x
    sums = []
    for i, (W, b) in enumerate(zip(weights, biases)):
        z = h @ W + b
        z.retain_grad()
        sums.append(z)
        if i == depth - 1:
            h = z  # the output layer is linear
        elif residual:
            h = h + act(z)
        else:
            h = act(z)
    ((h - target) ** 2).mean().backward()
    return [float(t.grad.norm()) for t in (weights if of == "weights" else sums)]


GRADIENT_FLOW_SETUPS: dict[str, dict] = {
    "sigmoid": dict(activation="sigmoid", init="default"),
    "sigmoid + residual": dict(activation="sigmoid", init="default", residual=True),
    "relu + kaiming init": dict(activation="relu", init="kaiming"),
    "relu + N(0, 1) init": dict(activation="relu", init="normal"),
}


def compare_gradient_flow(depth: int = 20, width: int = 64, seed: int = 0, setups: dict[str, dict] | None = None,
                          of: str = "weights") -> dict[str, list[float]]:
    """:func:`gradient_norms_per_layer` for each setup in :data:`GRADIENT_FLOW_SETUPS` (same depth, width, seed)."""
    setups = GRADIENT_FLOW_SETUPS if setups is None else setups
    return {name: gradient_norms_per_layer(depth, width, seed=seed, of=of, **kw) for name, kw in setups.items()}


# --------------------------------------------------------------------------- 5. overfitting and dropout


def noisy_circle_data(n: int, label_noise: float = 0.15, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` points in the square [-1, 1]^2, class 1 inside the circle of radius sqrt(0.5), class 0 outside;
    a fraction ``label_noise`` of the labels is flipped (noise that no model should learn)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    y = ((x**2).sum(dim=1) < 0.5).long()
    flip = torch.rand(n, generator=g) < label_noise
    return x, torch.where(flip, 1 - y, y)


class DropoutMLP(torch.nn.Module):
    """2 -> hidden -> hidden -> 2 with ReLU, and inverted dropout after each hidden layer."""

    def __init__(self, hidden: int = 128, p: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(2, hidden), torch.nn.Linear(hidden, hidden),
                                           torch.nn.Linear(hidden, 2)])
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # nn.Linear's own initialisation, drawn from our seeded generator
            for layer in self.layers:
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=g)
                layer.bias.uniform_(-bound, bound, generator=g)
        self.p = p
        self.mask_generator = torch.Generator().manual_seed(seed + 1)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.layers[:-1]:
            h = dropout(torch.relu(layer(h)), self.p, self.training, self.mask_generator)
        return self.layers[-1](h)


@dataclass
class TrainValCurves:
    """Loss and accuracy after every epoch, on the training set and on held-out validation data."""

    label: str
    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)

    @property
    def best_epoch(self) -> int:
        """The epoch (counted from 1) with the lowest validation loss: where early stopping would stop."""
        return min(range(len(self.val)), key=self.val.__getitem__) + 1


def overfit_experiment(dropout_p: float = 0.0, epochs: int | None = None, seed: int = 0, hidden: int = 128,
                       n_train: int = 40, n_val: int = 500, label_noise: float = 0.15,
                       lr: float = 3e-3) -> TrainValCurves:
    """Train a too-large MLP (:class:`DropoutMLP`) on ``n_train`` noisy points and record both losses per epoch.

    One epoch is one full-batch Adam step on the cross-entropy (the training set is tiny).
    Both curves are measured in evaluation mode (dropout off), so they are comparable.
    Without dropout the training loss heads to 0 while the validation loss turns around
    and climbs: the model memorises the flipped labels. Default ``epochs``: ``scaled(400, 100)``.
    """
    epochs = scaled(400, 100) if epochs is None else epochs
    x_train, y_train = noisy_circle_data(n_train, label_noise, seed)
    x_val, y_val = noisy_circle_data(n_val, label_noise, seed + 1000)
    model = DropoutMLP(hidden, dropout_p, seed)
    optimizer = Adam(model.parameters(), lr=lr)
    curves = TrainValCurves(f"dropout p={dropout_p:g}")
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            for xs, ys, losses, accs in ((x_train, y_train, curves.train, curves.train_acc),
                                         (x_val, y_val, curves.val, curves.val_acc)):
                logits = model(xs)
                losses.append(float(F.cross_entropy(logits, ys)))
                accs.append(float((logits.argmax(dim=1) == ys).double().mean()))
    return curves


__all__ = [
    "Surface", "BOWL", "ROSENBROCK", "LEAST_SQUARES", "SURFACES", "BOWL_CURVATURES", "get_surface",
    "bowl_loss", "bowl_grad", "rosenbrock_loss", "rosenbrock_grad",
    "TWO_VALLEYS", "TWO_VALLEYS_TILT", "TWO_VALLEYS_STATIONARY", "TWO_VALLEYS_LOCAL_MINIMUM", "two_valleys_loss",
    "two_valleys_grad",
    "make_line_data", "least_squares_loss", "least_squares_grad", "least_squares_solution", "least_squares_surface",
    "run_descent", "divergence_step", "steps_per_epoch", "run_minibatch_descent", "compare_batch_sizes",
    "run_optimizer", "SweepResult", "lr_sweep", "sweep_report",
    "INITS", "init_weight", "gradient_norms_per_layer", "GRADIENT_FLOW_SETUPS", "compare_gradient_flow",
    "noisy_circle_data", "DropoutMLP", "TrainValCurves", "overfit_experiment",
]
