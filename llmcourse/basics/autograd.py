"""A scalar autograd engine: numbers that remember how they were made (chapter 02).

Every :class:`Value` holds one number (``data``), the Values it was computed
from (``parents``) and the name of the operation (``op``). Calling
``loss.backward()`` then fills in ``grad`` on every Value the loss depends on:
``v.grad`` is the **sensitivity** of the loss to ``v``, written δv in the
lesson, ``∂loss/∂v``: nudge ``v`` by a small Δ and the loss moves by about ``δv · Δ``.

Backpropagation needs only two ingredients:

1. **A local rule per operation.** An operation knows how its output changes
   when each input changes (its *local derivatives*) and nothing else, e.g.
   for ``out = a * b``: ``∂out/∂a = b`` and ``∂out/∂b = a``. The rules are the
   small functions ``add_rule`` ... ``relu_rule``, collected in :data:`RULES`.
2. **An order.** :func:`topological_order` lists the nodes so that every node
   comes after the nodes it was made from. :func:`backpropagate` walks that
   list backwards, from the loss to the inputs, and applies the chain rule:
   ``δparent += δout · ∂out/∂parent``. The ``+=`` matters: a Value used on
   several paths collects a contribution from each (the chain rule's second case).

At the end, :class:`Neuron`, :class:`Layer` and :class:`MLP` build a small
network out of Values and :func:`train_mlp_on_values` trains it by gradient descent.
"""
from __future__ import annotations

import math
import numbers
import random
from typing import Callable, Iterable, Sequence, Union

Number = Union[int, float]


# --------------------------------------------------------------------------- the Value node


def _as_value(other: object, op: str) -> "Value":
    """Wrap a plain number as a constant Value; refuse anything that is not a number."""
    if isinstance(other, Value):
        return other
    if isinstance(other, numbers.Real):
        return Value(float(other))
    raise TypeError(f"cannot use {type(other).__name__} {other!r} in '{op}' with a Value: "
                    "only numbers (int, float) and other Values are supported")


class Value:
    """One number in a computation graph, with its gradient.

    ``data``: the number. ``grad``: ∂root/∂self after ``root.backward()``
    (the sensitivity δ), 0 before. ``parents``: the Values this one was made from.
    ``op``: the operation that made it (``""`` for inputs, parameters and constants).
    ``label``: a name for printing and drawing. ``exponent``: the power, for ``op == "**"``.
    """

    def __init__(self, data: Number, parents: tuple["Value", ...] = (), op: str = "", label: str = "",
                 exponent: float | None = None):
        if isinstance(data, Value):
            raise TypeError("Value(...) takes a number, not another Value")
        if not isinstance(data, numbers.Real):
            raise TypeError(f"a Value holds a real number, got {type(data).__name__} {data!r}")
        self.data = float(data)
        self.grad = 0.0
        self.parents = tuple(parents)
        self.op = op
        self.label = label
        self.exponent = exponent

    def __repr__(self) -> str:
        name = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g}{name})"

    # ---- arithmetic: each builds a new node that remembers its parents and op

    def __add__(self, other: Value | Number) -> Value:
        other = _as_value(other, "+")
        return Value(self.data + other.data, (self, other), "+")

    def __sub__(self, other: Value | Number) -> Value:
        other = _as_value(other, "-")
        return Value(self.data - other.data, (self, other), "-")

    def __mul__(self, other: Value | Number) -> Value:
        other = _as_value(other, "*")
        return Value(self.data * other.data, (self, other), "*")

    def __truediv__(self, other: Value | Number) -> Value:
        other = _as_value(other, "/")
        if other.data == 0.0:
            raise ZeroDivisionError(f"division by a Value equal to 0 ({self!r} / {other!r})")
        return Value(self.data / other.data, (self, other), "/")

    def __pow__(self, exponent: Number) -> Value:
        if isinstance(exponent, Value):
            raise TypeError("v ** w with a Value exponent is not supported: the exponent must be a plain "
                            "number, e.g. v ** 2 or v ** -1. For a learnable exponent write (w * v.log()).exp().")
        if not isinstance(exponent, numbers.Real):
            raise TypeError(f"the exponent must be a number, got {type(exponent).__name__} {exponent!r}")
        n = float(exponent)
        if self.data < 0 and not n.is_integer():
            raise ValueError(f"({self.data}) ** {n} is not a real number: a negative base needs an integer exponent")
        if self.data == 0 and n < 0:
            raise ZeroDivisionError(f"0 ** {n} is undefined (division by zero)")
        return Value(self.data ** n, (self,), "**", exponent=n)

    def __neg__(self) -> Value:
        return Value(-self.data, (self,), "neg")

    # reversed operations: 2 * v, 1 - v, 3 / v, 0 + v (what sum() starts with)
    def __radd__(self, other: Number) -> Value:
        return _as_value(other, "+") + self

    def __rsub__(self, other: Number) -> Value:
        return _as_value(other, "-") - self

    def __rmul__(self, other: Number) -> Value:
        return _as_value(other, "*") * self

    def __rtruediv__(self, other: Number) -> Value:
        return _as_value(other, "/") / self

    def __rpow__(self, base: Number) -> Value:
        raise TypeError("number ** Value (a Value exponent) is not supported: the exponent must be a plain "
                        "number. For c ** v with c > 0 write (v * math.log(c)).exp().")

    # ---- functions of one Value

    def exp(self) -> Value:
        try:
            return Value(math.exp(self.data), (self,), "exp")
        except OverflowError:
            raise OverflowError(f"exp({self.data}) is too large for a float") from None

    def log(self) -> Value:
        if self.data <= 0:
            raise ValueError(f"log is defined only for positive numbers, got log({self.data})")
        return Value(math.log(self.data), (self,), "log")

    def tanh(self) -> Value:
        return Value(math.tanh(self.data), (self,), "tanh")

    def sigmoid(self) -> Value:
        x = self.data
        e = math.exp(-abs(x))  # in (0, 1]: never overflows
        s = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
        return Value(s, (self,), "sigmoid")

    def relu(self) -> Value:
        return Value(max(self.data, 0.0), (self,), "relu")

    # ---- the backward pass

    def backward(self) -> None:
        """Fill in ``grad`` on every Value this one depends on (see :func:`backpropagate`)."""
        backpropagate(self)


# --------------------------------------------------------------------------- local rules
# Each rule receives the output node ``out`` of one operation and returns the
# local derivatives ∂out/∂parent, one per parent, in the order of ``out.parents``.


def add_rule(out: Value) -> tuple[float, ...]:
    """out = a + b: ∂out/∂a = 1, ∂out/∂b = 1."""
    return (1.0, 1.0)


def sub_rule(out: Value) -> tuple[float, ...]:
    """out = a - b: ∂out/∂a = 1, ∂out/∂b = -1."""
    return (1.0, -1.0)


def mul_rule(out: Value) -> tuple[float, ...]:
    """out = a * b: ∂out/∂a = b, ∂out/∂b = a."""
    a, b = out.parents
    return (b.data, a.data)


def div_rule(out: Value) -> tuple[float, ...]:
    """out = a / b: ∂out/∂a = 1/b, ∂out/∂b = -a/b²."""
    a, b = out.parents
    return (1.0 / b.data, -a.data / b.data ** 2)


def pow_rule(out: Value) -> tuple[float, ...]:
    """out = a ** n (n a number): ∂out/∂a = n · a^(n-1)."""
    (a,) = out.parents
    n = out.exponent
    return (n * a.data ** (n - 1),)


def neg_rule(out: Value) -> tuple[float, ...]:
    """out = -a: ∂out/∂a = -1."""
    return (-1.0,)


def exp_rule(out: Value) -> tuple[float, ...]:
    """out = e^a: ∂out/∂a = e^a, which is ``out`` itself."""
    return (out.data,)


def log_rule(out: Value) -> tuple[float, ...]:
    """out = log a: ∂out/∂a = 1/a."""
    (a,) = out.parents
    return (1.0 / a.data,)


def tanh_rule(out: Value) -> tuple[float, ...]:
    """out = tanh a: ∂out/∂a = 1 - tanh² a = 1 - out²."""
    return (1.0 - out.data ** 2,)


def sigmoid_rule(out: Value) -> tuple[float, ...]:
    """out = sigmoid a: ∂out/∂a = sigmoid(a) (1 - sigmoid(a)) = out (1 - out)."""
    return (out.data * (1.0 - out.data),)


def relu_rule(out: Value) -> tuple[float, ...]:
    """out = max(a, 0): ∂out/∂a = 1 where a > 0, else 0 (0 at a = 0, as in PyTorch)."""
    (a,) = out.parents
    return (1.0 if a.data > 0 else 0.0,)


RULES: dict[str, Callable[[Value], tuple[float, ...]]] = {
    "+": add_rule, "-": sub_rule, "*": mul_rule, "/": div_rule, "**": pow_rule, "neg": neg_rule,
    "exp": exp_rule, "log": log_rule, "tanh": tanh_rule, "sigmoid": sigmoid_rule, "relu": relu_rule,
}


# --------------------------------------------------------------------------- order and backward pass


def topological_order(root: Value) -> list[Value]:
    """Every Value that ``root`` depends on (and ``root``), each listed after all of its parents.

    A depth-first search: a node is appended only once all its parents are in
    the list. Written with an explicit stack rather than recursion so that very
    deep graphs (a sum of thousands of terms) do not hit Python's recursion limit.
    Each node appears once, however many paths lead to it.
    """
    order: list[Value] = []
    visited: set[Value] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:  # second visit: all its parents are already in the order
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))  # come back to it after its parents
        for parent in node.parents:
            if parent not in visited:
                stack.append((parent, False))
    return order


def backpropagate(root: Value, order: Sequence[Value] | None = None) -> None:
    """The backward pass: set ``grad`` (the sensitivity ∂root/∂v) on every Value ``root`` depends on.

    ``δroot = 1``; then, walking ``order`` (default: :func:`topological_order`)
    from the root back to the inputs, each node passes its sensitivity to its
    parents through its local rule: ``δparent += δnode · ∂node/∂parent``.
    Intermediate nodes start again from 0 on every call. Leaves (inputs,
    parameters) *add* to what they hold, like PyTorch's ``.grad``: reset them
    with ``zero_grad()`` between training steps.
    """
    order = topological_order(root) if order is None else list(order)
    for node in order:
        if node.parents:
            node.grad = 0.0
    root.grad = 1.0
    for node in reversed(order):
        if not node.parents:
            continue  # an input, parameter or constant: nothing further back
        local = RULES[node.op](node)
        for parent, derivative in zip(node.parents, local):
            parent.grad += node.grad * derivative


# --------------------------------------------------------------------------- a small network of Values

ACTIVATIONS: dict[str | None, Callable[[Value], Value]] = {
    "tanh": Value.tanh, "sigmoid": Value.sigmoid, "relu": Value.relu, None: lambda v: v,
}


class Neuron:
    """``activation(w1 x1 + ... + wn xn + b)`` on Values (chapter 01's neuron, now with gradients).

    Weights and bias start uniform in ±1/√n_in, drawn from ``rng``.
    ``activation``: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``None`` (linear).
    """

    def __init__(self, n_in: int, activation: str | None = "tanh", rng: random.Random | None = None, name: str = ""):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose tanh, sigmoid, relu or None")
        rng = rng if rng is not None else random.Random(0)
        bound = 1.0 / math.sqrt(n_in)
        self.w = [Value(rng.uniform(-bound, bound), label=f"{name}w{i + 1}") for i in range(n_in)]
        self.b = Value(rng.uniform(-bound, bound), label=f"{name}b")
        self.activation = activation

    def __call__(self, x: Sequence[Value | Number]) -> Value:
        if len(x) != len(self.w):
            raise ValueError(f"this neuron takes {len(self.w)} inputs, got {len(x)}")
        z = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return ACTIVATIONS[self.activation](z)

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class Layer:
    """``n_out`` neurons that all read the same ``n_in`` inputs."""

    def __init__(self, n_in: int, n_out: int, activation: str | None = "tanh", rng: random.Random | None = None,
                 name: str = ""):
        rng = rng if rng is not None else random.Random(0)
        self.neurons = [Neuron(n_in, activation, rng, name=f"{name}n{j + 1}.") for j in range(n_out)]

    def __call__(self, x: Sequence[Value | Number]) -> list[Value]:
        return [neuron(x) for neuron in self.neurons]

    def parameters(self) -> list[Value]:
        return [p for neuron in self.neurons for p in neuron.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class MLP:
    """Layers in a row: ``MLP(2, [4, 4, 1])`` reads 2 numbers, has two hidden layers of 4, and 1 output.

    Hidden layers use ``activation``; the last layer is linear. ``seed`` fixes
    the initial weights (through its own ``random.Random``, not the global one).
    Calling the MLP returns one Value if there is one output, else a list.
    """

    def __init__(self, n_in: int, sizes: Sequence[int], activation: str | None = "tanh", seed: int = 0):
        if not sizes:
            raise ValueError("an MLP needs at least one layer, e.g. MLP(2, [1])")
        rng = random.Random(seed)
        widths = [n_in, *sizes]
        self.layers = [
            Layer(widths[i], widths[i + 1], activation if i < len(sizes) - 1 else None, rng, name=f"L{i + 1}.")
            for i in range(len(sizes))
        ]

    def __call__(self, x: Sequence[Value | Number]) -> Value | list[Value]:
        out: list = list(x)
        for layer in self.layers:
            out = layer(out)
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


def mse_loss(predictions: Iterable[Value], targets: Iterable[Number]) -> Value:
    """Mean squared error over the examples, as one Value: mean of (prediction - target)²."""
    errors = [(p - t) ** 2 for p, t in zip(predictions, targets)]
    if not errors:
        raise ValueError("mse_loss needs at least one example")
    return sum(errors) / len(errors)


# Invented leaves (+1) and flowers (-1): (greenness 0..1, volume in units of 10 ml).
TINY_DATASET: tuple[list[list[float]], list[float]] = (
    [[0.9, 0.4], [0.8, 0.7], [0.7, 0.3], [0.3, 1.5], [0.2, 1.1], [0.4, 1.8]],
    [1.0, 1.0, 1.0, -1.0, -1.0, -1.0],
)


def train_mlp_on_values(xs: Sequence[Sequence[Number]] | None = None, ys: Sequence[Number] | None = None,
                        sizes: Sequence[int] = (4, 4, 1), steps: int = 60, learning_rate: float = 0.1,
                        activation: str | None = "tanh", seed: int = 0) -> tuple[MLP, list[float]]:
    """Fit an :class:`MLP` to ``(xs, ys)`` (default :data:`TINY_DATASET`) by plain gradient descent.

    Each step: forward pass over every example, mean squared error, ``zero_grad``,
    ``backward``, then ``p.data -= learning_rate * p.grad`` for every parameter.
    Returns the trained model and the loss before each step.
    """
    if xs is None or ys is None:
        xs, ys = TINY_DATASET
    model = MLP(len(xs[0]), sizes, activation=activation, seed=seed)
    losses: list[float] = []
    for _ in range(steps):
        loss = mse_loss([model(x) for x in xs], ys)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= learning_rate * p.grad
        losses.append(loss.data)
    return model, losses


__all__ = [
    "Value", "RULES", "topological_order", "backpropagate",
    "add_rule", "sub_rule", "mul_rule", "div_rule", "pow_rule", "neg_rule",
    "exp_rule", "log_rule", "tanh_rule", "sigmoid_rule", "relu_rule",
    "Neuron", "Layer", "MLP", "mse_loss", "TINY_DATASET", "train_mlp_on_values",
]
