"""Graded checks of chapter 01, "Neural networks are numbers".

Nine exercises. Seven pieces of the forward pass (``neuron``, ``dense_layer``,
``mlp_forward``, ``relu``, ``gelu``, ``stable_softmax``, ``cross_entropy_from_logits``),
each checked against PyTorch's own implementation on seeded random inputs plus the
edge cases that catch the usual mistakes (huge scores, batches, other dimensions,
transposed weights). Then an open experiment, ``naive_softmax_breaks_at`` (the first
logit at which softmax without the max-shift overflows, checked against the limit
each dtype's largest number sets), and a derivation, ``cross_entropy_grad`` (the
gradient of the mean cross-entropy with respect to the logits, checked against
``torch.autograd`` while autograd is switched off for the learner's code). Each
exercise is checked on its own: no check needs any other exercise's function.

Where an exercise asks you to write something PyTorch already has, the check
runs your function with that built-in switched off, so calling it fails the check.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    call,
    expect,
    expect_close,
    expect_shape,
    forbid,
    forbid_autograd,
    seeded_generator,
    seeded_randn,
)

chapter = Chapter("01", "Neural networks are numbers")

Namespace = Mapping[str, Any]

# (owner, attribute, how a learner would write it)
_SOFTMAX = [(torch, "softmax", "torch.softmax"), (F, "softmax", "F.softmax"), (torch.Tensor, "softmax", "x.softmax"),
            (torch.special, "softmax", "torch.special.softmax")]
_LOG_SOFTMAX = [(torch, "log_softmax", "torch.log_softmax"), (F, "log_softmax", "F.log_softmax"),
                (torch.Tensor, "log_softmax", "x.log_softmax"), (torch, "logsumexp", "torch.logsumexp"),
                (torch.Tensor, "logsumexp", "x.logsumexp")]
_CROSS_ENTROPY = [(F, "cross_entropy", "F.cross_entropy"), (F, "nll_loss", "F.nll_loss")]
_RELU = [(torch, "relu", "torch.relu"), (F, "relu", "F.relu"), (torch.Tensor, "relu", "x.relu")]
_GELU = [(F, "gelu", "F.gelu")]
_LINEAR = [(F, "linear", "F.linear")]  # nn.Linear calls it too


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, (int, float)):
        return float(value)
    raise CheckFailed(f"the loss should be a single number (a 0-d tensor), got {value!r:.60}")


# --------------------------------------------------------------------------- neuron

@chapter.check("neuron", points=1, hint="A neuron multiplies each input by its weight, adds the products up, adds "
               "the bias, and only then applies the sigmoid.")
def neuron_one_example(ns: Namespace) -> None:
    x, w, b = torch.tensor([0.8, 0.5]), torch.tensor([3.0, -1.0]), 0.25
    expect_close(call(ns, "neuron", x, w, b), torch.sigmoid(x @ w + b), "neuron([0.8, 0.5], [3, -1], 0.25)")
    x, w = seeded_randn(5, seed=1), seeded_randn(5, seed=2)
    expect_close(call(ns, "neuron", x, w, -0.7), torch.sigmoid(x @ w - 0.7), "neuron on a random 5-input example")


@chapter.check("neuron", points=1, hint="With a batch, x has shape (batch, n): sum the products over the last "
               "dimension only, so each example keeps its own output.")
def neuron_batch(ns: Namespace) -> None:
    x, w = seeded_randn(4, 3, seed=3), seeded_randn(3, seed=4)
    expect_close(call(ns, "neuron", x, w, 0.5), torch.sigmoid(x @ w + 0.5), "neuron on a batch of 4 examples")


# --------------------------------------------------------------------------- dense_layer

@chapter.check("dense_layer", points=1, hint="Rows of `a` are examples and columns of `W` are neurons, so the result "
               "(batch, n_out) needs no transposes. Check the shapes of each factor.")
def dense_layer_matches_linear(ns: Namespace) -> None:
    a, W, b = seeded_randn(5, 3, seed=10), seeded_randn(3, 4, seed=11), seeded_randn(4, seed=12)
    expected = F.linear(a, W.T, b)
    expect_close(_dense_layer(ns, a, W, b), expected, "dense_layer with a (5, 3), W (3, 4), b (4,)")


def _dense_layer(ns: Namespace, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> Any:
    with forbid("dense_layer", _LINEAR):
        return call(ns, "dense_layer", a, W, b)


@chapter.check("dense_layer", points=1, hint="Every neuron adds its own bias: with all-zero inputs each row of the "
               "output should equal b.")
def dense_layer_adds_bias(ns: Namespace) -> None:
    a, W, b = torch.zeros(2, 3), seeded_randn(3, 2, seed=13), torch.tensor([1.5, -2.0])
    expect_close(_dense_layer(ns, a, W, b), b.expand(2, 2), "dense_layer of all-zero inputs")
    a = seeded_randn(3, 3, seed=14)
    expect_close(_dense_layer(ns, a, W, b), a @ W + b, "dense_layer with a (3, 3), W (3, 2)")


@chapter.check("dense_layer", points=1, hint="The same code must work for a batch of one example and for a big "
               "batch, and it must not apply an activation: the layer returns z itself.")
def dense_layer_any_batch(ns: Namespace) -> None:
    for batch, n_in, n_out, seed in [(1, 6, 2, 15), (64, 8, 3, 16)]:
        a, W, b = seeded_randn(batch, n_in, seed=seed), seeded_randn(n_in, n_out, seed=seed + 100), seeded_randn(n_out, seed=seed + 200)
        expect_close(_dense_layer(ns, a, W, b), F.linear(a, W.T, b),
                     f"dense_layer with a batch of {batch} ({n_in} inputs, {n_out} neurons)")


# --------------------------------------------------------------------------- mlp_forward

def _reference_mlp(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    modules: list[torch.nn.Module] = []
    for i, (W, b) in enumerate(zip(weights, biases)):
        linear = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(W.T)
            linear.bias.copy_(b)
        modules.append(linear)
        if i < len(weights) - 1:
            modules.append(torch.nn.ReLU())
    with torch.no_grad():
        return torch.nn.Sequential(*modules)(x)


def _random_mlp(sizes: list[int], seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = seeded_generator(seed)
    weights = [torch.randn(n_in, n_out, generator=g) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    biases = [torch.randn(n_out, generator=g) for n_out in sizes[1:]]
    return weights, biases


@chapter.check("mlp_forward", points=1, hint="Each layer computes a @ W + b from the previous layer's output; "
               "ReLU goes between layers.")
def mlp_forward_matches_sequential(ns: Namespace) -> None:
    weights, biases = _random_mlp([4, 8, 8, 3], seed=20)
    x = seeded_randn(5, 4, seed=21)
    expect_close(call(ns, "mlp_forward", x, weights, biases), _reference_mlp(x, weights, biases),
                 "mlp_forward with layer sizes 4 -> 8 -> 8 -> 3")


@chapter.check("mlp_forward", points=1, hint="The last layer has no activation: its outputs are raw scores that may "
               "be negative. A network of one layer is just a @ W + b.")
def mlp_forward_last_layer_is_linear(ns: Namespace) -> None:
    weights, biases = _random_mlp([3, 4], seed=22)
    x = seeded_randn(6, 3, seed=23)
    expect_close(call(ns, "mlp_forward", x, weights, biases), x @ weights[0] + biases[0],
                 "mlp_forward with a single layer")


@chapter.check("mlp_forward", points=1, hint="Loop over all the layers you are given, whatever their number and sizes.")
def mlp_forward_any_depth(ns: Namespace) -> None:
    weights, biases = _random_mlp([3, 5, 2, 6, 4, 2], seed=24)
    x = seeded_randn(2, 3, seed=25)
    expect_close(call(ns, "mlp_forward", x, weights, biases), _reference_mlp(x, weights, biases),
                 "mlp_forward with five layers (3 -> 5 -> 2 -> 6 -> 4 -> 2)")


# --------------------------------------------------------------------------- relu

@chapter.check("relu", points=1, hint="Work on the whole tensor at once (a comparison and torch.where, say); "
               "Python's max() compares single numbers, not tensors.")
def relu_values(ns: Namespace) -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    with forbid("relu", _RELU):
        got = call(ns, "relu", x)
    expect_close(got, torch.tensor([0.0, 0.0, 0.0, 0.5, 2.0]), "relu([-2, -0.5, 0, 0.5, 2])")
    x = seeded_randn(3, 7, seed=30)
    with forbid("relu", _RELU):
        got = call(ns, "relu", x)
    expect_close(got, F.relu(x), "relu of a random (3, 7) tensor")


@chapter.check("relu", points=1, hint="Return a tensor with the input's shape and dtype: ReLU changes values, "
               "nothing else.")
def relu_keeps_shape_and_dtype(ns: Namespace) -> None:
    x = seeded_randn(2, 3, 4, seed=31, dtype=torch.float64)
    with forbid("relu", _RELU):
        got = expect_shape(call(ns, "relu", x), (2, 3, 4), "relu of a (2, 3, 4) tensor")
    expect(got.dtype == torch.float64, f"relu of a float64 tensor returned {got.dtype}; keep the input's dtype.")
    expect_close(got, F.relu(x), "relu of a (2, 3, 4) float64 tensor", atol=0, rtol=0)


# --------------------------------------------------------------------------- gelu

@chapter.check("gelu", points=1, hint="Use the exact GELU, x times the standard normal CDF, written with torch.erf; "
               "an approximation is not close enough here. Mind the scaling inside erf.")
def gelu_exact_values(ns: Namespace) -> None:
    x = torch.linspace(-5, 5, 101)
    with forbid("gelu", _GELU):
        got = call(ns, "gelu", x)
    expect_close(got, F.gelu(x), "gelu on [-5, 5]", atol=2e-6, rtol=1e-5)


@chapter.check("gelu", points=1, hint="GELU is elementwise: it must keep any shape, stay finite for large inputs "
               "and keep float64 precision.")
def gelu_shapes_and_extremes(ns: Namespace) -> None:
    x = torch.cat([seeded_randn(11, seed=40, dtype=torch.float64) * 3,
                   torch.tensor([-30.0, -10.0, -1e-3, 0.0, 1e-3, 10.0, 30.0], dtype=torch.float64)]).reshape(3, 6)
    with forbid("gelu", _GELU):
        got = call(ns, "gelu", x)
    expect_close(got, F.gelu(x), "gelu of a (3, 6) float64 tensor with large entries", atol=1e-10, rtol=1e-9)


# --------------------------------------------------------------------------- stable_softmax

@chapter.check("stable_softmax", points=1, hint="softmax(x) = exp(x) / sum(exp(x)) along `dim`: every slice along "
               "`dim` must be positive and sum to 1.")
def softmax_matches_torch(ns: Namespace) -> None:
    x = seeded_randn(4, 6, seed=50)
    with forbid("stable_softmax", _SOFTMAX + _LOG_SOFTMAX):
        got = call(ns, "stable_softmax", x)
    expect_close(got, torch.softmax(x, dim=-1), "stable_softmax of a random (4, 6) tensor")


@chapter.check("stable_softmax", points=1, hint="exp(1000) overflows to inf. Shifting every score in a slice by the "
               "same amount does not change softmax; which shift keeps exp small, slice by slice?")
def softmax_large_inputs(ns: Namespace) -> None:
    x = torch.tensor([1000.0, 1001.0])
    with forbid("stable_softmax", _SOFTMAX + _LOG_SOFTMAX):
        got = call(ns, "stable_softmax", x)
    expect_close(got, torch.softmax(x, dim=-1), "stable_softmax([1000, 1001])")
    x = torch.tensor([[1000.0, 1001.0, 1002.0], [0.0, 1.0, 2.0], [-1000.0, -999.0, -998.0]])
    with forbid("stable_softmax", _SOFTMAX + _LOG_SOFTMAX):
        got = call(ns, "stable_softmax", x)
    expect_close(got, torch.softmax(x, dim=-1), "stable_softmax of rows around 1000, 0 and -1000")


@chapter.check("stable_softmax", points=1, hint="Respect the `dim` argument everywhere (the max and the sum), and "
               "keep the reduced dimension so the shapes line up for broadcasting.")
def softmax_other_dims(ns: Namespace) -> None:
    x = seeded_randn(3, 4, 5, seed=51) * 4
    for dim in (0, 1, -1):
        with forbid("stable_softmax", _SOFTMAX + _LOG_SOFTMAX):
            got = call(ns, "stable_softmax", x, dim=dim)
        expect_close(got, torch.softmax(x, dim=dim), f"stable_softmax of a (3, 4, 5) tensor with dim={dim}")


# --------------------------------------------------------------------------- cross_entropy_from_logits

@chapter.check("cross_entropy_from_logits", points=1, hint="The loss of one example is -log of the softmax "
               "probability of its target class, computed from the raw logits; average over the batch.")
def cross_entropy_matches_torch(ns: Namespace) -> None:
    logits = seeded_randn(8, 5, seed=60) * 2
    targets = torch.randint(0, 5, (8,), generator=seeded_generator(61))
    with forbid("cross_entropy_from_logits", _CROSS_ENTROPY + _LOG_SOFTMAX + _SOFTMAX):
        got = call(ns, "cross_entropy_from_logits", logits, targets)
    expect_close(got, F.cross_entropy(logits, targets), "cross_entropy_from_logits on 8 examples, 5 classes")


@chapter.check("cross_entropy_from_logits", points=1, hint="Logits can be large or negative: they are not "
               "probabilities. Compute log-softmax stably (log of a sum of exps, after a shift) instead of log(softmax).")
def cross_entropy_large_logits(ns: Namespace) -> None:
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [-5.0, -3.0, -8.0], [200.0, 210.0, 190.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([1, 2, 1, 0])
    with forbid("cross_entropy_from_logits", _CROSS_ENTROPY + _LOG_SOFTMAX + _SOFTMAX):
        got = call(ns, "cross_entropy_from_logits", logits, targets)
    expect_close(got, F.cross_entropy(logits, targets), "cross_entropy_from_logits on large and negative logits")


@chapter.check("cross_entropy_from_logits", points=1, hint="Average the per-example losses (mean, not sum), so the "
               "loss does not grow with the batch size.")
def cross_entropy_is_a_mean(ns: Namespace) -> None:
    logits = seeded_randn(16, 4, seed=62)
    targets = torch.randint(0, 4, (16,), generator=seeded_generator(63))
    with forbid("cross_entropy_from_logits", _CROSS_ENTROPY + _LOG_SOFTMAX + _SOFTMAX):
        got = call(ns, "cross_entropy_from_logits", logits, targets)
        got_one = call(ns, "cross_entropy_from_logits", logits[:1], targets[:1])
    expect_close(got_one, F.cross_entropy(logits[:1], targets[:1]), "cross_entropy_from_logits on one example")
    expect_close(got, F.cross_entropy(logits, targets), "cross_entropy_from_logits on a batch of 16")
    confident = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    with forbid("cross_entropy_from_logits", _CROSS_ENTROPY + _LOG_SOFTMAX + _SOFTMAX):
        got = _as_float(call(ns, "cross_entropy_from_logits", confident, torch.tensor([0, 1])))
    expect(0 <= got < 1e-6, f"confident, correct logits should give a loss near 0, got {got:.6g}.")


# --------------------------------------------------------------------------- an experiment: where naive softmax breaks

def _first_overflow(dtype: torch.dtype) -> int:
    """The first whole number c with exp(c) above the dtype's largest finite number (theory: floor(ln max) + 1)."""
    return math.floor(math.log(torch.finfo(dtype).max)) + 1


def _breaks_at(ns: Namespace, dtype: torch.dtype) -> float:
    return as_number(call(ns, "naive_softmax_breaks_at", dtype), f"naive_softmax_breaks_at({dtype})")


def _expect_breaks_at(ns: Namespace, dtype: torch.dtype) -> None:
    name = str(dtype).removeprefix("torch.")
    got, want, largest = _breaks_at(ns, dtype), _first_overflow(dtype), torch.finfo(dtype).max
    expect(got == want, f"naive_softmax_breaks_at(torch.{name}) returned {got:g}, but the largest {name} number is "
                        f"{largest:.4g}, whose natural log is {math.log(largest):.2f}: exp(c) overflows to inf for "
                        f"the first whole c above that, and not before.")


@chapter.check("naive_softmax_breaks_at", points=1, hint="Build the logits [c, 0] in the dtype you are given, "
               "compute exp(z) / exp(z).sum() without subtracting the maximum, and return the first whole c "
               "(0, 1, 2, ...) whose result contains nan or inf (torch.isfinite tells you).")
def naive_softmax_breaks_in_single_and_double(ns: Namespace) -> None:
    for dtype in (torch.float32, torch.float64):
        _expect_breaks_at(ns, dtype)


@chapter.check("naive_softmax_breaks_at", points=1, hint="Half-precision numbers end much sooner (the largest "
               "float16 is 65504). Keep every step in the given dtype: a Python float or a float32 tensor on the "
               "way would move the breaking point.")
def naive_softmax_breaks_in_half_precision(ns: Namespace) -> None:
    for dtype in (torch.float16, torch.bfloat16):
        _expect_breaks_at(ns, dtype)


# --------------------------------------------------------------------------- a derivation: the gradient of cross-entropy


def _cross_entropy_grad_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    z = logits.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(z, targets), z)
    return grad


def _expect_cross_entropy_grad(ns: Namespace, logits: torch.Tensor, targets: torch.Tensor, what: str) -> None:
    want = _cross_entropy_grad_reference(logits, targets)
    with forbid_autograd("cross_entropy_grad"):
        got = call(ns, "cross_entropy_grad", logits.clone(), targets.clone())
    expect_close(got, want, f"cross_entropy_grad {what}", atol=1e-10, rtol=1e-8)


@chapter.check("cross_entropy_grad", points=1, hint="Differentiate -log softmax(z)[t] with respect to one logit "
               "z_i on paper: treat i == t and i != t separately, and write log softmax as z_t - log sum_j exp(z_j). "
               "The loss is a mean over the batch, and the gradient has the logits' shape.")
def cross_entropy_grad_matches_autograd(ns: Namespace) -> None:
    logits = seeded_randn(8, 5, seed=80, dtype=torch.float64) * 2
    targets = torch.randint(0, 5, (8,), generator=seeded_generator(81))
    _expect_cross_entropy_grad(ns, logits, targets, "on 8 examples, 5 classes")


@chapter.check("cross_entropy_grad", points=1, hint="Your formula needs softmax probabilities: compute them stably "
               "(subtract each row's maximum before exp), or logits like 1000 give inf and nan.")
def cross_entropy_grad_large_logits(ns: Namespace) -> None:
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [-5.0, -3.0, -8.0], [200.0, 210.0, 190.0], [0.0, 0.0, 0.0]],
                          dtype=torch.float64)
    _expect_cross_entropy_grad(ns, logits, torch.tensor([1, 2, 1, 0]), "on large and negative logits")


@chapter.check("cross_entropy_grad", points=1, hint="Only the target class of each row is treated differently, one "
               "entry per row (index with the row numbers and the targets together), and the whole gradient "
               "shrinks as the batch grows.")
def cross_entropy_grad_any_batch(ns: Namespace) -> None:
    for n, c, seed in [(1, 4, 82), (32, 3, 83), (6, 2, 84)]:
        logits = seeded_randn(n, c, seed=seed, dtype=torch.float64)
        targets = torch.randint(0, c, (n,), generator=seeded_generator(seed + 100))
        _expect_cross_entropy_grad(ns, logits, targets, f"on {n} example{'s' if n > 1 else ''}, {c} classes")
