"""Graded checks of chapter 00, "Setup and PyTorch essentials".

Nine exercises: ``gradients``, ``count_trainable_parameters``, ``swap_modules``,
``prepare_batch``, ``make_loader``, ``train_step`` and ``evaluate_accuracy``; an open
experiment, ``first_step_size`` (how far one SGD or AdamW step moves the weights, for
gradients of very different sizes); and a derivation, ``linear_mse_grads`` (the
gradients of a linear layer's mean squared error, worked out on paper).

Each check builds small seeded inputs, runs the learner's function and compares
the result with an independent reference: a hand-derived formula, a hand count,
the same computation done with PyTorch's own tools (autograd, switched off while
the learner's derivation runs), or, for the experiment, the bound the theory gives.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
# The first optimizer a program creates imports torch._dynamo, which takes seconds:
# import it here, so that this time does not count against a check's time limit.
import torch._dynamo  # noqa: F401
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llmcourse.grading.checks import (
    Chapter,
    as_number,
    call,
    call_inplace,
    expect,
    expect_close,
    expect_tensors,
    forbid_autograd,
    seeded_generator,
)

chapter = Chapter("00", "Setup and PyTorch essentials")


class _Probe(nn.Module):
    """A linear layer that remembers, at every forward pass, its mode and whether autograd was on."""

    def __init__(self, n_in: int = 4, n_out: int = 3):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.linear(x)


def _plain(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64)


# --------------------------------------------------------------------------- gradients


@chapter.check("gradients", points=2,
               hint="For c = a * b, dc/da is b and dc/db is a. Return one gradient per input, "
                    "in the order of the inputs, as computed by autograd.")
def gradients_of_a_product(ns):
    a, b = torch.tensor(3.0), torch.tensor(2.0)
    got = call(ns, "gradients", lambda a, b: a * b, a, b)
    expect(isinstance(got, (tuple, list)) and len(got) == 2,
           "gradients(f, a, b) should return a tuple of two gradients, one per input.")
    expect_close(got[0], b, "the gradient of a * b with respect to a (a=3, b=2)")
    expect_close(got[1], a, "the gradient of a * b with respect to b (a=3, b=2)")
    a, b = _plain((3, 4)), _plain((3, 4))
    got = call(ns, "gradients", lambda a, b: (a * b).sum(), a, b)
    expect_close(got[0], b, "the gradient of (a * b).sum() with respect to a")
    expect_close(got[1], a, "the gradient of (a * b).sum() with respect to b")


@chapter.check("gradients", points=1,
               hint="Let autograd do the calculus for any f: do not hard-code the gradient of a product.")
def gradients_of_other_functions(ns):
    x, y = _plain((5,)), _plain((5,))
    got = call(ns, "gradients", lambda x, y: (torch.sin(x) * y**2).sum(), x, y)
    expect_close(got[0], torch.cos(x) * y**2, "the gradient of sum(sin(x) * y**2) with respect to x")
    expect_close(got[1], 2 * y * torch.sin(x), "the gradient of sum(sin(x) * y**2) with respect to y")
    w = _plain((2, 3))
    got = call(ns, "gradients", lambda w: (w**3).mean(), w)
    expect(isinstance(got, (tuple, list)) and len(got) == 1, "with one input, return a tuple of one gradient.")
    expect_close(got[0], 3 * w**2 / w.numel(), "the gradient of mean(w**3)")


@chapter.check("gradients", points=2,
               hint=".grad adds up over backward calls. Work on fresh copies of the inputs so the caller's "
                    "tensors are never changed, and return gradients that are not part of a graph.")
def gradients_leave_inputs_alone(ns):
    a, b = _plain((4,)), _plain((4,))
    expected = b.clone()  # before the calls, which get the check's own tensors: this check watches them
    first = call_inplace(ns, "gradients", lambda a, b: (a * b).sum(), a, b)
    second = call_inplace(ns, "gradients", lambda a, b: (a * b).sum(), a, b)
    expect_close(second[0], first[0], "the gradient from a second call with the same inputs")
    expect_close(second[0], expected, "the gradient from a second call with the same inputs")
    expect(not a.requires_grad and a.grad is None and not b.requires_grad and b.grad is None,
           "gradients changed the caller's tensors (they now require grad or carry a .grad).")
    expect(not any(g.requires_grad for g in second),
           "the returned gradients still require grad: return plain tensors, not part of a graph.")


# --------------------------------------------------------------------------- counting parameters


@chapter.check("count_trainable_parameters", points=1,
               hint="Count numbers, not tensors: a weight of shape (8, 16) holds 128 of them.")
def counts_numbers_not_tensors(ns):
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    got = call(ns, "count_trainable_parameters", model)
    expect(isinstance(got, int), f"count_trainable_parameters should return an int, got {type(got).__name__}.")
    expected = (16 * 8 + 8) + (8 * 2 + 2)
    expect(got == expected, f"Linear(16, 8) then Linear(8, 2) have {expected} trainable numbers, you counted {got}.")


@chapter.check("count_trainable_parameters", points=1,
               hint="Only parameters with requires_grad=True are trainable, and buffers in the state_dict "
                    "(like BatchNorm's running mean) are not parameters at all.")
def skips_frozen_parameters_and_buffers(ns):
    model = nn.Sequential(nn.Linear(10, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    model[0].requires_grad_(False)
    got = call(ns, "count_trainable_parameters", model)
    expected = (6 + 6) + (6 * 3 + 3)  # BatchNorm's weight and bias, then the last Linear
    expect(got == expected, f"with the first Linear frozen, {expected} numbers are trainable, you counted {got}.")


# --------------------------------------------------------------------------- swapping submodules


class _Doubled(nn.Module):
    """Wraps a module and doubles its output (a stand-in for an adapter such as LoRA)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.base(x)


@chapter.check("swap_modules", points=2,
               hint="Replacements must reach modules nested inside other modules, and a module only changes "
                    "when you assign the new one to its parent's attribute (setattr).")
def swaps_nested_modules(ns):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2))
    reference = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 8), nn.GELU()), nn.Linear(8, 2))
    reference.load_state_dict(model.state_dict())
    first_weight = model[0].weight
    got = call_inplace(ns, "swap_modules", model, nn.ReLU, lambda old: nn.GELU())
    expect(got == 2, f"the model holds 2 ReLUs (one nested), but swap_modules returned {got!r}.")
    kinds = [m.__class__.__name__ for m in model.modules()]  # (the class a module says it has, wherever it lives)
    expect(kinds.count("ReLU") == 0 and kinds.count("GELU") == 2,
           f"after swapping, the model should hold 2 GELU and no ReLU; it holds {kinds.count('GELU')} GELU "
           f"and {kinds.count('ReLU')} ReLU.")
    expect(len(model) == 4, f"the top Sequential should still have 4 layers, it has {len(model)}.")
    expect(model[0].weight is first_weight, "the other layers (and their weights) must stay as they were.")
    x = torch.randn(5, 4)
    expect_close(model(x), reference(x), "the swapped model's output")


@chapter.check("swap_modules", points=1,
               hint="Call make_new with the old module, and swap each original module exactly once "
                    "(do not descend into the modules you just inserted).")
def wraps_the_old_module(ns):
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    w1, b1, w2, b2 = (p.detach().clone() for p in model.parameters())
    got = call_inplace(ns, "swap_modules", model, nn.Linear, _Doubled)
    expect(got == 2, f"the model holds 2 Linear layers, but swap_modules returned {got!r}.")
    expect(isinstance(model[0], _Doubled) and isinstance(model[2], _Doubled),
           "each Linear should now be the module that make_new(old) returned.")
    x = torch.randn(4, 3)
    hidden = torch.tanh(2 * (x @ w1.T + b1))
    expect_close(model(x), 2 * (hidden @ w2.T + b2), "the output of the model with wrapped Linear layers")


# --------------------------------------------------------------------------- devices and dtypes


@chapter.check("prepare_batch", points=2,
               hint="A tensor's .to returns a new tensor and leaves the old one as it was; the model's "
                    "parameters tell you its device. Move the data, never the model.")
def moves_to_the_model_device(ns):
    model = nn.Linear(3, 2).to("meta")
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    got = call(ns, "prepare_batch", model, x, y)
    expect(isinstance(got, (tuple, list)) and len(got) == 2, "prepare_batch should return a pair (x, y).")
    expect(got[0].device.type == "meta" and got[1].device.type == "meta",
           f"the model lives on 'meta', but the batch came back on {got[0].device} and {got[1].device}.")
    expect(model.weight.device.type == "meta", "prepare_batch moved the model: it should only move the batch.")
    expect(x.device.type == "cpu", "prepare_batch should return new tensors, not change its arguments.")


@chapter.check("prepare_batch", points=1,
               hint="The inputs take the model's floating dtype; class labels must be int64 (torch.long) "
                    "whatever dtype they arrive in.")
def matches_the_model_dtype(ns):
    model = nn.Linear(3, 4).to(torch.float64)
    x, y = torch.randn(5, 3), torch.tensor([0.0, 3.0, 1.0, 2.0, 3.0])
    got_x, got_y = call(ns, "prepare_batch", model, x, y)
    expect(got_x.dtype == torch.float64, f"the model is float64, but x came back as {got_x.dtype}.")
    expect(got_y.dtype == torch.long, f"labels should come back as torch.int64, not {got_y.dtype}.")
    expect_close(got_x, x.double(), "the values of x")
    expect(torch.equal(got_y, torch.tensor([0, 3, 1, 2, 3])), "the label values changed.")
    loss = F.cross_entropy(model(got_x), got_y)  # the whole point: now the batch fits the model
    expect(bool(torch.isfinite(loss)), "cross-entropy on the prepared batch is not finite.")


# --------------------------------------------------------------------------- reproducible data loading


def _epoch_order(loader: DataLoader) -> list[int]:
    return [int(i) for (batch,) in loader for i in batch]


@chapter.check("make_loader", points=2,
               hint="Seeding the global random generator is not enough: the shuffle happens when you iterate. "
                    "Give the DataLoader its own seeded torch.Generator.")
def same_seed_same_batches(ns):
    dataset = TensorDataset(torch.arange(20))
    first = call(ns, "make_loader", dataset, 4, 7)
    second = call(ns, "make_loader", dataset, 4, 7)
    torch.rand(3)  # other code using random numbers in between must not matter
    order_first = [_epoch_order(first), _epoch_order(first)]
    order_second = [_epoch_order(second), _epoch_order(second)]
    expect(order_first == order_second, "two loaders made with the same seed gave different batches.")
    expect(order_first[0] != order_first[1], "every epoch should be shuffled anew, but two epochs had the same order.")


@chapter.check("make_loader", points=1,
               hint="Use the given batch size, shuffle, and make a different seed give a different order.")
def shuffles_every_item_once(ns):
    dataset = TensorDataset(torch.arange(20))
    loader = call(ns, "make_loader", dataset, 4, 0)
    sizes = [len(batch) for (batch,) in loader]
    expect(sizes == [4] * 5, f"20 items in batches of 4 should give 5 batches of 4, got sizes {sizes}.")
    order = _epoch_order(loader)
    expect(sorted(order) == list(range(20)), "one epoch should visit every item exactly once.")
    expect(order != list(range(20)), "the items came in their original order: the loader should shuffle.")
    other = _epoch_order(call(ns, "make_loader", dataset, 4, 1))
    expect(order != other, "seeds 0 and 1 gave the same order: the seed should decide the shuffle.")


# --------------------------------------------------------------------------- one training step


def _classifier() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


@chapter.check("train_step", points=2,
               hint="Gradients add up in .grad until you clear them: each step must start from zero "
                    "gradients, then backward, then step.")
def matches_reference_steps(ns):
    model = _classifier()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for step in range(3):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        expected_loss = F.cross_entropy(reference(x), y)
        reference_optimizer.zero_grad()
        expected_loss.backward()
        reference_optimizer.step()
        got = call_inplace(ns, "train_step", model, optimizer, x, y)
        expect_close(got, expected_loss, f"the loss returned at step {step + 1}")
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            expect_close(p, q, f"parameter {name} after step {step + 1}")


@chapter.check("train_step", points=1,
               hint="Return the loss as a plain Python number (a tensor keeps the whole graph alive).")
def returns_a_float(ns):
    model = _classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    got = call_inplace(ns, "train_step", model, optimizer, torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
    expect(isinstance(got, float), f"train_step should return a Python float, got {type(got).__name__}.")


@chapter.check("train_step", points=1,
               hint="Layers such as dropout behave differently in training: switch the model to training mode.")
def trains_in_training_mode(ns):
    model = _Probe()
    model.eval()  # as if the model had just been evaluated
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    call_inplace(ns, "train_step", model, optimizer, torch.randn(4, 4), torch.tensor([0, 1, 2, 0]))
    expect(model.seen == [(True, True)],
           f"the model ran in {'training' if model.seen and model.seen[0][0] else 'evaluation'} mode "
           f"{len(model.seen)} time(s); one forward pass in training mode was expected.")


# --------------------------------------------------------------------------- evaluation


@chapter.check("evaluate_accuracy", points=2,
               hint="Count correct examples over the whole loader and divide by the number of examples; "
                    "the last batch can be smaller, so an average of batch accuracies is wrong.")
def counts_every_example(ns):
    model = nn.Linear(5, 3)
    x = torch.randn(10, 5)
    predictions = model(x).argmax(dim=1)
    right = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 1, 1], dtype=torch.bool)
    y = torch.where(right, predictions, (predictions + 1) % 3)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # batches of 4, 4 and 2
    got = call(ns, "evaluate_accuracy", model, loader)
    expect(isinstance(got, float), f"evaluate_accuracy should return a Python float, got {type(got).__name__}.")
    expect_close(torch.tensor(got), torch.tensor(0.4), "the accuracy with 4 of 10 examples right")


@chapter.check("evaluate_accuracy", points=1,
               hint="Evaluate in evaluation mode and without building a graph (torch.no_grad).")
def evaluates_in_eval_mode_without_grad(ns):
    model = _Probe()
    model.train()
    loader = DataLoader(TensorDataset(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])), batch_size=3)
    call(ns, "evaluate_accuracy", model, loader)
    expect(len(model.seen) == 2, f"with 2 batches the model should run twice, it ran {len(model.seen)} time(s).")
    expect(all(not training for training, _ in model.seen), "the model ran in training mode.")
    expect(all(not grad for _, grad in model.seen), "autograd was recording during evaluation.")


# --------------------------------------------------------------------------- an experiment: the first optimizer step


def _step_sizes(ns: Mapping[str, Any], optimizer: str, settings: list[tuple[float, float]]) -> list[float]:
    """The learner's first_step_size for each (grad_scale, lr), as numbers."""
    return [as_number(call(ns, "first_step_size", optimizer, scale, lr), f'first_step_size("{optimizer}", {scale:g}, '
                      f'{lr:g})') for scale, lr in settings]


@chapter.check("first_step_size", points=1,
               hint="Measure how far the weights moved: keep a copy of the parameter before optimizer.step() and "
                    "return the mean absolute difference after it. AdamW's first step divides each gradient by its "
                    "own size, so the answer should hardly depend on grad_scale.")
def adamw_first_step_is_the_learning_rate(ns: Mapping[str, Any]) -> None:
    settings = [(1e-3, 0.01), (1.0, 0.01), (1e3, 0.01), (1.0, 0.1), (1e3, 0.001)]
    for (scale, lr), got in zip(settings, _step_sizes(ns, "adamw", settings)):
        # Adam's first step is lr * g / (|g| + eps): lr for every weight whose gradient is far above eps
        expect(0.99 * lr <= got <= 1.001 * lr,
               f'first_step_size("adamw", {scale:g}, {lr:g}) is {got:.4g}; AdamW\'s first step moves each weight by '
               f"about the learning rate, so about {lr:g} was expected.")


@chapter.check("first_step_size", points=1,
               hint="Plain SGD moves each weight by lr times its gradient, so the mean change grows with grad_scale. "
                    "Give every entry its own random gradient (grad_scale times standard normal noise), use all n "
                    "entries, and take exactly one step.")
def sgd_first_step_follows_the_gradient(ns: Mapping[str, Any]) -> None:
    settings = [(1e-3, 0.01), (1.0, 0.01), (1e3, 0.01), (1.0, 0.1)]
    mean_abs_normal = math.sqrt(2 / math.pi)  # E|z| for a standard normal z; 10,000 draws land within 1%
    for (scale, lr), got in zip(settings, _step_sizes(ns, "sgd", settings)):
        expected = lr * scale * mean_abs_normal
        expect(0.95 * expected <= got <= 1.05 * expected,
               f'first_step_size("sgd", {scale:g}, {lr:g}) is {got:.4g}; SGD moves each weight by lr times its '
               f"gradient, so about {expected:.4g} (lr x grad_scale x 0.80, the mean size of a normal draw) was "
               f"expected.")


# --------------------------------------------------------------------------- a derivation: gradients of a linear layer


def _linear_problem(n: int, n_in: int, n_out: int, seed: int,
                    dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = seeded_generator(seed)
    x, weight = torch.randn(n, n_in, generator=g, dtype=dtype), torch.randn(n_out, n_in, generator=g, dtype=dtype)
    bias, y = torch.randn(n_out, generator=g, dtype=dtype), torch.randn(n, n_out, generator=g, dtype=dtype)
    return x, weight, bias, y


def _linear_mse_autograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = weight.detach().clone().requires_grad_(True), bias.detach().clone().requires_grad_(True)
    grad_w, grad_b = torch.autograd.grad(F.mse_loss(F.linear(x, w, b), y), [w, b])
    return grad_w, grad_b


def _learner_grads(ns: Mapping[str, Any], problem: tuple[torch.Tensor, ...]) -> tuple[Any, Any]:
    """The learner's (grad_weight, grad_bias), computed with autograd switched off."""
    with forbid_autograd("linear_mse_grads"):
        got = call(ns, "linear_mse_grads", *(t.clone() for t in problem))
    return expect_tensors(got, [problem[1].shape, problem[2].shape], ["grad_weight", "grad_bias"], "linear_mse_grads")


@chapter.check("linear_mse_grads", points=1,
               hint="Work it out for one weight first: which outputs does weight[j, k] change, and by how much per "
                    "unit? The loss is a mean over every entry of the output (batch times outputs), and the "
                    "derivative of a square brings a factor 2. The gradient has the weight's shape (out, in).")
def linear_mse_weight_gradient(ns: Mapping[str, Any]) -> None:
    problem = _linear_problem(6, 4, 3, seed=70)
    want_w, _ = _linear_mse_autograd(*problem)
    got_w, _ = _learner_grads(ns, problem)
    expect_close(got_w, want_w, "grad_weight for x (6, 4), weight (3, 4), y (6, 3)", atol=1e-10, rtol=1e-8)


@chapter.check("linear_mse_grads", points=1,
               hint="The bias is added to every row of the output, so its gradient collects a contribution from "
                    "every example; it has the bias's shape (out,).")
def linear_mse_bias_gradient(ns: Mapping[str, Any]) -> None:
    problem = _linear_problem(6, 4, 3, seed=71)
    _, want_b = _linear_mse_autograd(*problem)
    _, got_b = _learner_grads(ns, problem)
    expect_close(got_b, want_b, "grad_bias for x (6, 4), weight (3, 4), y (6, 3)", atol=1e-10, rtol=1e-8)


@chapter.check("linear_mse_grads", points=1,
               hint="Write it with matrix products for any sizes: one example or many, one output or several, "
                    "float32 or float64. Divide by the number of entries the mean runs over, not just the batch.")
def linear_mse_grads_any_size(ns: Mapping[str, Any]) -> None:
    for n, n_in, n_out, seed, dtype in [(1, 3, 1, 72, torch.float64), (10, 2, 5, 73, torch.float64),
                                        (32, 8, 4, 74, torch.float32)]:
        problem = _linear_problem(n, n_in, n_out, seed=seed, dtype=dtype)
        want_w, want_b = _linear_mse_autograd(*problem)
        what = f"x ({n}, {n_in}), weight ({n_out}, {n_in}) in {str(dtype).removeprefix('torch.')}"
        got_w, got_b = _learner_grads(ns, problem)
        tolerance = dict(atol=1e-10, rtol=1e-8) if dtype == torch.float64 else dict(atol=1e-6, rtol=1e-5)
        expect_close(got_w, want_w, f"grad_weight for {what}", **tolerance)
        expect_close(got_b, want_b, f"grad_bias for {what}", **tolerance)

