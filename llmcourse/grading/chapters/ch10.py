"""Graded checks of chapter 10, "Parallel training".

Six exercises, each checked on fixed inputs against an independent reference:
``torch.stack(...).mean``, hand-computed values, the pipeline simulator in
``llmcourse.parallel.schedule``, ``torch.nn.functional.linear``, the ZeRO paper's
worked example, and PyTorch's own loss-scale kernel ``torch._amp_update_scale_``
(what ``torch.amp.GradScaler.update`` runs). Then a program to build,
``GradientBuckets``, run in two real processes.

Last, an open experiment and a derivation. ``fp16_accumulation_error`` keeps a
running sum in fp16 and reports its relative error; it is checked against the
same sum written with NumPy's float16 scalars and against the bound that the gap
between fp16 numbers sets (a total past 2048 no longer grows by numbers below 1).
``column_parallel_input_grads`` is each device's part of dL/dx in a
column-parallel linear layer, checked device by device and summed (the backward
all-reduce) against ``torch.autograd`` while every autograd entry point is
switched off for the learner's code.

``stashed_version`` is the weight version a stage of PipeDream's asynchronous
1F1B uses for a micro-batch, checked by hand and against the versions read off
the simulator's 1F1B order (``llmcourse.parallel.weight_stashing``). No check
needs another exercise's function.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    beside_the_learner,
    call,
    expect,
    expect_close,
    expect_raises_value_error,
    expect_shape,
    forbid_autograd,
    get_function,
    run_learner,
    seeded_generator,
    seeded_randn,
)
from llmcourse.parallel.schedule import bubble_share, run_orders, simulate
from llmcourse.parallel.weight_stashing import weight_versions

chapter = Chapter("10", "Parallel training")

Namespace = Mapping[str, Any]


# --------------------------------------------------------------------------- average_gradients

def _worker_grads(n_workers: int, shapes: list[tuple[int, ...]], seed: int) -> list[list[torch.Tensor]]:
    generator = seeded_generator(seed)
    return [[torch.randn(*shape, generator=generator) for shape in shapes] for _ in range(n_workers)]


def _expect_averaged(got: Any, grads: list[list[torch.Tensor]], what: str) -> None:
    n_params = len(grads[0])
    expect(isinstance(got, (list, tuple)) and len(got) == n_params,
           f"{what} should return a list with one averaged gradient per parameter ({n_params}), got "
           f"{len(got) if isinstance(got, (list, tuple)) else type(got).__name__}.")
    for i, tensor in enumerate(got):
        expected = torch.stack([worker[i] for worker in grads]).mean(dim=0)
        expect_close(tensor, expected, f"{what}, parameter {i}")


@chapter.check("average_gradients", points=2, hint="For each parameter i, add up grads[w][i] over the workers w "
               "(that is the all-reduce), then divide by the number of WORKERS. Return one list, one tensor per "
               "parameter, each with that parameter's shape.")
def average_matches_mean(ns: Namespace) -> None:
    grads = _worker_grads(4, [(3, 4), (5,), (2, 3)], seed=1)
    _expect_averaged(call(ns, "average_gradients", grads), grads, "average_gradients(4 workers x 3 parameters)")
    grads = _worker_grads(7, [(6,), (2, 2)], seed=2)
    _expect_averaged(call(ns, "average_gradients", grads), grads, "average_gradients(7 workers x 2 parameters)")


@chapter.check("average_gradients", points=1, hint="Build the sums in new tensors (e.g. torch.zeros_like, or "
               "torch.stack(...).mean(0)): `total = grads[0][i]` then `total += ...` changes worker 0's gradient "
               "in place. One worker's average is its own gradient.")
def average_leaves_inputs_alone(ns: Namespace) -> None:
    grads = _worker_grads(3, [(4,), (2, 5)], seed=3)
    copies = [[g.clone() for g in worker] for worker in grads]
    got = call(ns, "average_gradients", grads)
    for w, (worker, copy) in enumerate(zip(grads, copies)):
        for i, (g, c) in enumerate(zip(worker, copy)):
            expect(torch.equal(g, c), f"average_gradients changed worker {w}'s gradient of parameter {i}; "
                                      f"it must leave its input as it was.")
    _expect_averaged(got, copies, "average_gradients(3 workers x 2 parameters)")
    single = _worker_grads(1, [(3,), (2, 2)], seed=4)
    _expect_averaged(call(ns, "average_gradients", single), single, "average_gradients(1 worker)")


# --------------------------------------------------------------------------- bubble_fraction

@chapter.check("bubble_fraction", points=1, hint="With p stages and m micro-batches a GPipe step lasts m + p - 1 "
               "slots (per kind of pass); each device is busy for m of them. The bubble is the idle share: "
               "(p - 1) / (m + p - 1). One stage never waits.")
def bubble_by_hand(ns: Namespace) -> None:
    for p, m, expected in [(4, 4, 3 / 7), (1, 8, 0.0), (8, 1, 7 / 8), (2, 6, 1 / 7), (5, 16, 0.2)]:
        got = as_number(call(ns, "bubble_fraction", p, m), f"bubble_fraction({p}, {m})")
        expect(math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12),
               f"bubble_fraction({p}, {m}) returned {got:.6g}, expected {expected:.6g}.")


@chapter.check("bubble_fraction", points=1, hint="Divide by the WHOLE step (m + p - 1), not by the useful work m: "
               "the answer is a share of all device time, between 0 and 1.")
def bubble_matches_simulation(ns: Namespace) -> None:
    for p, m in [(3, 5), (6, 2), (4, 12), (7, 7)]:
        measured = bubble_share(simulate("gpipe", p, m, forward_time=1, backward_time=2))
        got = as_number(call(ns, "bubble_fraction", p, m), f"bubble_fraction({p}, {m})")
        expect(math.isclose(got, measured, rel_tol=1e-9),
               f"bubble_fraction({p}, {m}) returned {got:.6g}, but a simulated GPipe step is idle "
               f"{measured:.6g} of the time.")


@chapter.check("bubble_fraction", points=1, hint="A pipeline needs at least one stage and one micro-batch: raise "
               "a ValueError when n_stages < 1 or n_microbatches < 1.")
def bubble_rejects_empty_pipelines(ns: Namespace) -> None:
    expect_raises_value_error(ns, "bubble_fraction", 0, 4)
    expect_raises_value_error(ns, "bubble_fraction", 4, 0)


# --------------------------------------------------------------------------- gpipe_order

def _reference_gpipe_order(m: int) -> list[tuple[str, int]]:
    return [("F", i) for i in range(m)] + [("B", i) for i in reversed(range(m))]


def _as_steps(value: Any, what: str) -> list[tuple[str, int]]:
    if not isinstance(value, (list, tuple)):
        raise CheckFailed(f"{what} should return a list of (kind, micro-batch) pairs, got {type(value).__name__}.")
    steps = []
    for item in value:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and item[0] in ("F", "B")):
            raise CheckFailed(f"{what} contains {item!r}; each entry must be a pair like ('F', 0) or ('B', 3).")
        steps.append((item[0], int(item[1])))
    return steps


@chapter.check("gpipe_order", points=1, hint="GPipe runs every forward first, F0, F1, ..., F(m-1), then every "
               "backward in REVERSE order, B(m-1), ..., B0 — the last micro-batch's activations are the freshest. "
               "Every stage runs the same order.")
def gpipe_order_small(ns: Namespace) -> None:
    for p, m, stage in [(4, 3, 0), (4, 3, 3), (2, 5, 1), (1, 1, 0)]:
        what = f"gpipe_order({p}, {m}, {stage})"
        got = _as_steps(call(ns, "gpipe_order", p, m, stage), what)
        expected = _reference_gpipe_order(m)
        expect(got == expected, f"{what} returned {got}, expected {expected}.")


@chapter.check("gpipe_order", points=1, hint="Each stage must run every ('F', i) and every ('B', i) exactly once, "
               "all forwards before any backward; the simulator then finds GPipe's bubble (p-1)/(m+p-1).")
def gpipe_order_runs_in_the_simulator(ns: Namespace) -> None:
    p, m = 4, 6
    orders = [_as_steps(call(ns, "gpipe_order", p, m, s), f"gpipe_order({p}, {m}, {s})") for s in range(p)]
    try:
        ops = run_orders(orders, forward_time=1, backward_time=2)
    except ValueError as exc:
        raise CheckFailed(f"the orders from gpipe_order({p}, {m}, stage) cannot run as a pipeline: {exc}") from None
    share = bubble_share(ops)
    expect(math.isclose(share, (p - 1) / (m + p - 1)),
           f"running your orders leaves the devices idle {share:.3f} of the time; GPipe's is {(p - 1) / (m + p - 1):.3f}.")
    for s, steps in enumerate(orders):
        expect(steps == _reference_gpipe_order(m), f"gpipe_order({p}, {m}, {s}) returned {steps}, expected "
                                                    f"{_reference_gpipe_order(m)}.")


@chapter.check("gpipe_order", points=1, hint="Stages are numbered 0 .. n_stages - 1: raise a ValueError for a stage "
               "outside that range, and for n_stages < 1 or n_microbatches < 1.")
def gpipe_order_rejects_bad_input(ns: Namespace) -> None:
    expect_raises_value_error(ns, "gpipe_order", 4, 4, 4)
    expect_raises_value_error(ns, "gpipe_order", 4, 4, -1)
    expect_raises_value_error(ns, "gpipe_order", 4, 0, 0)


# --------------------------------------------------------------------------- column_parallel_forward

_PRODUCTS = {"linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm", "einsum",
             "tensordot", "mv", "addmv", "inner", "dot"}


def _products_of(func, *args):
    """``func(*args)`` and the result shape of every matrix product it ran."""
    with _RecordProducts() as recorder:
        out = func(*args)
    return out, recorder.shapes


class _RecordProducts(TorchFunctionMode):
    """Remember the result shape of every matrix product run inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in _PRODUCTS and isinstance(out, torch.Tensor):
            self.shapes.append(tuple(out.shape))
        return out


@chapter.check("column_parallel_forward", points=2, hint="weight has shape (out_features, in_features) as in "
               "F.linear. Split its ROWS (the output features) and the bias into world_size equal shards, compute "
               "F.linear(x, w_shard, b_shard) for each, and concatenate the results along the last dimension.")
def column_parallel_matches_linear(ns: Namespace) -> None:
    x, weight, bias = seeded_randn(2, 5, 8, seed=5), seeded_randn(12, 8, seed=6), seeded_randn(12, seed=7)
    for world_size in [1, 2, 3, 4, 6]:
        expect_close(call(ns, "column_parallel_forward", x, weight, bias, world_size), F.linear(x, weight, bias),
                     f"column_parallel_forward(x (2, 5, 8), weight (12, 8), bias, world_size={world_size})")
    expect_close(call(ns, "column_parallel_forward", x, weight, None, 3), F.linear(x, weight),
                 "column_parallel_forward with bias=None")


@chapter.check("column_parallel_forward", points=1, hint="Each simulated device may only compute its own slice "
               "of the output: out_features / world_size columns. Do not compute the full x @ weight.T and cut "
               "it afterwards.")
def column_parallel_computes_shards(ns: Namespace) -> None:
    x, weight, bias = seeded_randn(3, 8, seed=8), seeded_randn(12, 8, seed=9), seeded_randn(12, seed=10)
    expected = F.linear(x, weight, bias)
    # the recorder runs beside the learner's code (in their kernel when grading), so it sees its own products
    got, shapes = run_learner("`column_parallel_forward`", lambda: beside_the_learner(
        ns, _products_of, get_function(ns, "column_parallel_forward"), x.clone(), weight.clone(), bias.clone(), 4))
    expect_close(got, expected, "column_parallel_forward(x (3, 8), weight (12, 8), bias, 4)")
    full = [tuple(shape) for shape in shapes if 12 in shape]
    expect(not full, f"column_parallel_forward(..., world_size=4) computed a product with all 12 output features "
                     f"(result shape {full[0] if full else ''}); each shard should produce 3.")


@chapter.check("column_parallel_forward", points=1, hint="When out_features is not a multiple of world_size the "
               "shards cannot be equal: raise a ValueError saying so (torch.chunk would silently make uneven shards).")
def column_parallel_rejects_uneven_split(ns: Namespace) -> None:
    expect_raises_value_error(ns, "column_parallel_forward", seeded_randn(2, 4, seed=11), seeded_randn(10, 4, seed=12),
                               seeded_randn(10, seed=13), 4)


# --------------------------------------------------------------------------- zero_memory_per_device

@chapter.check("zero_memory_per_device", points=2, hint="Mixed precision with Adam keeps 2 bytes of fp16 "
               "parameters, 2 of fp16 gradients and K = 12 of fp32 optimizer states per parameter. Stage 1 divides "
               "the optimizer states by N, stage 2 also the gradients, stage 3 also the parameters. Answer in bytes.")
def zero_paper_example(ns: Namespace) -> None:
    psi, n = 7.5e9, 64  # the ZeRO paper's example: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB
    for stage, expected in enumerate([16 * psi, 4 * psi + 12 * psi / n, 2 * psi + 14 * psi / n, 16 * psi / n]):
        got = as_number(call(ns, "zero_memory_per_device", psi, n, stage), f"zero_memory_per_device(7.5e9, 64, {stage})")
        expect(math.isclose(got, expected, rel_tol=1e-6),
               f"zero_memory_per_device(7.5e9, 64, {stage}) returned {got:.4g} bytes, expected {expected:.4g} "
               f"({expected / 1e9:.1f} GB).")


@chapter.check("zero_memory_per_device", points=1, hint="Stage 0 is plain data parallelism: every device keeps "
               "all 16 bytes per parameter, whatever N. With N = 1 every stage gives 16 bytes per parameter.")
def zero_scaling(ns: Namespace) -> None:
    psi = 2e9
    for n in [1, 2, 8, 1000]:
        for stage in range(4):
            parts = [2 * psi / (n if stage >= 3 else 1), 2 * psi / (n if stage >= 2 else 1),
                     12 * psi / (n if stage >= 1 else 1)]
            got = as_number(call(ns, "zero_memory_per_device", psi, n, stage),
                          f"zero_memory_per_device(2e9, {n}, {stage})")
            expect(math.isclose(got, sum(parts), rel_tol=1e-6),
                   f"zero_memory_per_device(2e9, {n}, {stage}) returned {got:.4g} bytes, expected {sum(parts):.4g}.")


@chapter.check("zero_memory_per_device", points=1, hint="ZeRO has stages 0 (none), 1, 2 and 3 only: raise a "
               "ValueError for any other stage, and for world_size < 1.")
def zero_rejects_bad_stage(ns: Namespace) -> None:
    expect_raises_value_error(ns, "zero_memory_per_device", 1e9, 8, 4)
    expect_raises_value_error(ns, "zero_memory_per_device", 1e9, 8, -1)
    expect_raises_value_error(ns, "zero_memory_per_device", 1e9, 0, 1)


# --------------------------------------------------------------------------- dynamic_scale_update

def _torch_update(scale: float, found_inf: bool, good_steps: int, growth: float, backoff: float,
                  interval: int) -> tuple[float, int]:
    scale_t, tracker = torch.tensor([scale]), torch.tensor([good_steps], dtype=torch.int32)
    torch._amp_update_scale_(scale_t, tracker, torch.tensor([float(found_inf)]), growth, backoff, interval)
    return scale_t.item(), int(tracker.item())


def _as_pair(value: Any, what: str) -> tuple[float, int]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise CheckFailed(f"{what} should return a pair (new_scale, new_good_steps), got {value!r:.60}.")
    return as_number(value[0], what), int(as_number(value[1], what))


@chapter.check("dynamic_scale_update", points=1, hint="inf/nan found: multiply the scale by backoff_factor and "
               "reset good_steps to 0. Otherwise add 1 to good_steps; if it reaches growth_interval, multiply the "
               "scale by growth_factor and reset good_steps to 0.")
def dynamic_update_by_hand(ns: Namespace) -> None:
    cases = [((1024.0, True, 5, 2.0, 0.5, 10), (512.0, 0)), ((1024.0, False, 3, 2.0, 0.5, 10), (1024.0, 4)),
             ((1024.0, False, 9, 2.0, 0.5, 10), (2048.0, 0)), ((8.0, True, 0, 4.0, 0.25, 1), (2.0, 0)),
             ((8.0, False, 0, 4.0, 0.25, 1), (32.0, 0))]
    for args, expected in cases:
        what = f"dynamic_scale_update{args}"
        got = _as_pair(call(ns, "dynamic_scale_update", *args), what)
        expect(got == expected, f"{what} returned {got}, expected {expected}.")


@chapter.check("dynamic_scale_update", points=2, hint="Feed each step's (new_scale, new_good_steps) into the next "
               "call. The count only grows on good steps, restarts after every change of the scale, and the scale "
               "changes at most once per step.")
def dynamic_update_matches_grad_scaler(ns: Namespace) -> None:
    generator = seeded_generator(14)
    found = (torch.rand(60, generator=generator) < 0.2).tolist()
    ours = theirs = (2.0 ** 16, 0)
    for step, found_inf in enumerate(found):
        theirs = _torch_update(theirs[0], found_inf, theirs[1], 2.0, 0.5, 3)
        ours = _as_pair(call(ns, "dynamic_scale_update", ours[0], found_inf, ours[1], 2.0, 0.5, 3),
                        "dynamic_scale_update")
        expect(ours == theirs, f"after step {step} (inf found: {found_inf}) your (scale, good_steps) is {ours}; "
                               f"torch.amp.GradScaler's rule gives {theirs}.")


__all__ = ["chapter"]


# --------------------------------------------------------------------------- GradientBuckets (build the program)

_BUCKETS = "GradientBuckets"
_DP_STEPS, _DP_BATCH = 3, 8


def _dp_model():
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))


def _dp_batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(_DP_BATCH, 6, generator=g), torch.randn(_DP_BATCH, 2, generator=g)


def _dp_one_process() -> list[torch.Tensor]:
    """The reference: plain SGD on the whole batch in one process."""
    model = _dp_model()
    for step in range(_DP_STEPS):
        x, y = _dp_batch(step)
        F.mse_loss(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad = None
    return [p.detach().clone() for p in model.parameters()]


def _dp_rank(cls, bucket_size: int):
    """One rank: its half of every batch, the learner's buckets averaging the gradients, then the same SGD."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    calls = []
    original = dist.all_reduce

    def counting_all_reduce(tensor, *args, **kwargs):
        calls.append(bool(kwargs.get("async_op", False)))
        return original(tensor, *args, **kwargs)

    dist.all_reduce = counting_all_reduce
    try:
        model = _dp_model()
        buckets = cls(model, bucket_size)
        for step in range(_DP_STEPS):
            x, y = _dp_batch(step)
            share = slice(rank * _DP_BATCH // world, (rank + 1) * _DP_BATCH // world)
            F.mse_loss(model(x[share]), y[share]).backward()
            buckets.wait()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
                    p.grad = None
    finally:
        dist.all_reduce = original
    return {"params": [p.detach().clone() for p in model.parameters()], "calls": calls}


def _dp_launch(cls, bucket_size: int) -> list:
    """Two processes, each training with the learner's class ``cls``; what each rank reports."""
    from llmcourse.parallel.launch import notebook_launch

    return notebook_launch(_dp_rank, 2, args=(cls, bucket_size), timeout_s=30)


def _dp_run(ns: Namespace, bucket_size: int):
    cls = get_function(ns, _BUCKETS)
    try:  # the processes start beside the learner's code (from their kernel when grading), where the class is
        return beside_the_learner(ns, _dp_launch, cls, bucket_size)
    except Exception as exc:  # noqa: BLE001 (the launcher's ParallelError, here or from the kernel)
        if type(exc).__name__ != "ParallelError":
            raise
        message = str(exc)
        if "NotImplementedError" in message:
            raise CheckFailed(f"`{_BUCKETS}` is not written yet: replace `raise NotImplementedError` with your "
                              f"code.") from None
        raise CheckFailed(f"running `{_BUCKETS}` in 2 processes failed: {message[:600]}") from None


@chapter.check(_BUCKETS, points=2, hint="Each parameter's hook (register_post_accumulate_grad_hook) marks its gradient "
               "ready; when a bucket is complete, flatten its gradients into one tensor and all-reduce it. wait() "
               "waits for every bucket, divides by the number of processes and copies the averages back into .grad.")
def buckets_equal_one_process(ns: Namespace) -> None:
    expected = _dp_one_process()
    for rank, result in enumerate(_dp_run(ns, bucket_size=2)):
        for i, (got, want) in enumerate(zip(result["params"], expected)):
            expect_close(got, want, f"rank {rank}'s parameter {i} after {_DP_STEPS} steps (one process on the "
                         f"whole batch gives these)", atol=1e-6)


@chapter.check(_BUCKETS, points=2, hint="One all_reduce per bucket per step, started with async_op=True as soon as the "
               "bucket is complete (so communication overlaps the rest of the backward pass): 6 parameters in "
               "buckets of 4 make 2 calls per step; buckets follow the order gradients arrive (last layer first).")
def buckets_one_async_call_per_bucket(ns: Namespace) -> None:
    for bucket_size in (4, 6, 1):
        results = _dp_run(ns, bucket_size)
        expected = _DP_STEPS * math.ceil(6 / bucket_size)
        for rank, result in enumerate(results):
            calls = result["calls"]
            expect(len(calls) == expected, f"with buckets of {bucket_size} parameters, rank {rank} should call "
                   f"dist.all_reduce {expected} times in {_DP_STEPS} steps, called it {len(calls)} times")
            expect(all(calls), f"rank {rank} called dist.all_reduce without async_op=True")


# --------------------------------------------------------------------------- an experiment: a running sum kept in fp16

def _fp16_running_sum_error(values: torch.Tensor) -> float:
    """The same measurement written with NumPy's float16 scalars: every addition rounds to float16."""
    import numpy as np

    total = np.float16(0.0)
    for value in values.numpy().astype(np.float16):
        total = np.float16(total + value)
    exact = math.fsum(values.double().tolist())
    return abs(float(total) - exact) / abs(exact)


def _accumulation_error(ns: Namespace, values: torch.Tensor, what: str) -> float:
    got = as_number(call(ns, "fp16_accumulation_error", values.clone()), what)
    expect(math.isfinite(got) and got >= 0, f"{what} returned {got}; a relative error is a number >= 0.")
    return got


@chapter.check("fp16_accumulation_error", points=1, hint="Keep the running total itself in fp16: start from "
               "torch.zeros((), dtype=torch.float16), add the fp16 values one at a time in a loop, and only at the "
               "end compare it (as a float) with the exact sum: |total - exact| / exact.")
def fp16_sum_matches_a_float16_reference(ns: Namespace) -> None:
    generator = seeded_generator(130)
    cases = [(torch.ones(3000), "3000 ones"), (torch.rand(6000, generator=generator), "6000 numbers from [0, 1)"),
             (torch.rand(3000, generator=generator) * 0.01, "3000 numbers from [0, 0.01)")]
    for values, what in cases:
        got = _accumulation_error(ns, values, f"fp16_accumulation_error({what})")
        want = _fp16_running_sum_error(values)
        expect(abs(got - want) <= 2e-4 + 1e-3 * want,
               f"fp16_accumulation_error({what}) returned {got:.5f}; a running total kept in fp16 (every addition "
               f"rounded to fp16) is off by {want:.5f} of the exact sum.")


@chapter.check("fp16_accumulation_error", points=1, hint="values.half().sum() and a float32 total do not show the "
               "effect: PyTorch adds fp16 numbers in fp32 internally. Past 2048 the gap between fp16 numbers is 2, "
               "so adding anything below 1 changes nothing: a long sum stalls.")
def fp16_sum_stalls(ns: Namespace) -> None:
    values = torch.rand(20_000, generator=seeded_generator(131))
    got = _accumulation_error(ns, values, "fp16_accumulation_error(20000 numbers from [0, 1))")
    exact = float(values.double().sum())
    expect(got > 0.75, f"fp16_accumulation_error(20000 numbers from [0, 1)) returned {got:.4f}, but a running fp16 "
                       f"total cannot pass 2048 by adding numbers below 1, so it misses at least "
                       f"{1 - 2048 / exact:.3f} of the exact sum {exact:.0f}.")
    few = torch.rand(100, generator=seeded_generator(132))
    got = _accumulation_error(ns, few, "fp16_accumulation_error(100 numbers from [0, 1))")
    expect(got < 0.01, f"fp16_accumulation_error(100 numbers from [0, 1)) returned {got:.4f}; a short sum near 50 "
                       f"stays within 1 % in fp16.")


# --------------------------------------------------------------------------- a derivation: the backward pass of a column-parallel layer


def _input_grad(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, grad_output: torch.Tensor):
    """dL/dx by autograd, for a loss whose gradient with respect to F.linear(x, weight, bias) is grad_output."""
    leaf = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.linear(leaf, weight, bias), leaf, grad_output)
    return grad


def _partial_grads(ns: Namespace, grad_output: torch.Tensor, weight: torch.Tensor, world_size: int,
                   what: str) -> list[torch.Tensor]:
    with forbid_autograd("column_parallel_input_grads"):
        got = call(ns, "column_parallel_input_grads", grad_output.clone(), weight.clone(), world_size)
    if isinstance(got, torch.Tensor):
        got = list(got)
    expect(isinstance(got, (list, tuple)) and len(got) == world_size,
           f"{what} should return a list of {world_size} tensors, one per device, got "
           f"{len(got) if isinstance(got, (list, tuple)) else type(got).__name__}.")
    return list(got)


@chapter.check("column_parallel_input_grads", points=2, hint="Device r computed y_r = x W_r^T + b_r. Differentiate "
               "that with respect to x on paper: the gradient flowing back through y_r needs only dL/dy_r (its slice "
               "of grad_output) and W_r (its rows of weight); neither x nor the bias appears.")
def column_parallel_grads_per_device(ns: Namespace) -> None:
    x, weight, bias = (seeded_randn(2, 3, 6, seed=140, dtype=torch.float64), seeded_randn(8, 6, seed=141,
                       dtype=torch.float64), seeded_randn(8, seed=142, dtype=torch.float64))
    grad_output = seeded_randn(2, 3, 8, seed=143, dtype=torch.float64)
    for world_size in (2, 4):
        what = f"column_parallel_input_grads(grad_output (2, 3, 8), weight (8, 6), world_size={world_size})"
        got = _partial_grads(ns, grad_output, weight, world_size, what)
        size = 8 // world_size
        for rank, partial in enumerate(got):
            rows = slice(rank * size, (rank + 1) * size)
            want = _input_grad(x, weight[rows], bias[rows], grad_output[..., rows])
            expect_close(partial, want, f"{what}: device {rank}'s part (the gradient through its {size} outputs "
                                        f"only)", atol=1e-10, rtol=1e-8)


@chapter.check("column_parallel_input_grads", points=1, hint="Every output feature depends on every input feature, "
               "so each device's part is only a piece of dL/dx: the whole gradient is what the all-reduce makes of "
               "the pieces. With world_size = 1 the one piece is the whole gradient.")
def column_parallel_grads_add_up(ns: Namespace) -> None:
    x, weight = seeded_randn(5, 4, seed=144, dtype=torch.float64), seeded_randn(9, 4, seed=145, dtype=torch.float64)
    bias, grad_output = seeded_randn(9, seed=146, dtype=torch.float64), seeded_randn(5, 9, seed=147,
                                                                                     dtype=torch.float64)
    want = _input_grad(x, weight, bias, grad_output)
    for world_size in (1, 3):
        what = f"column_parallel_input_grads(grad_output (5, 9), weight (9, 4), world_size={world_size})"
        got = _partial_grads(ns, grad_output, weight, world_size, what)
        for partial in got:
            expect_shape(partial, (5, 4), f"{what}: each device's part")
        expect_close(torch.stack([torch.as_tensor(p) for p in got]).sum(0), want,
                     f"{what}, added up over the devices (what the all-reduce computes), against dL/dx of the "
                     f"whole layer", atol=1e-10, rtol=1e-8)


# --------------------------------------------------------------------------- stashed_version

def _stashed(ns: Namespace, p: int, s: int, i: int) -> float:
    return as_number(call(ns, "stashed_version", p, s, i), f"stashed_version({p}, {s}, {i})")


@chapter.check("stashed_version", points=1, hint="Stage s runs p - s - 1 warm-up forwards before its first backward, "
               "and updates its weights after every backward. So micro-batch i's forward comes after "
               "i - (p - s - 1) backwards (never fewer than 0): that many updates, that version. The last stage "
               "runs each backward right after its forward: version i.")
def stashed_version_by_hand(ns: Namespace) -> None:
    for p, s, i, expected in [(4, 0, 0, 0), (4, 0, 3, 0), (4, 0, 4, 1), (4, 0, 7, 4), (4, 3, 5, 5), (4, 2, 5, 4),
                              (4, 1, 2, 0), (1, 0, 6, 6), (8, 0, 10, 3)]:
        got = _stashed(ns, p, s, i)
        expect(got == expected, f"stashed_version(n_stages={p}, stage={s}, microbatch={i}) returned {got:g}, "
                                f"expected {expected}.")


@chapter.check("stashed_version", points=1, hint="Count, in stage s's 1F1B order, the backward passes that come "
               "before ('F', i): each one was followed by an update. Stage 0 is the stage whose micro-batches wait "
               "longest for their backward pass, not the last one.")
def stashed_version_matches_the_schedule(ns: Namespace) -> None:
    for p, m in [(3, 7), (5, 12), (6, 9)]:
        for s, rows in enumerate(weight_versions(p, m)):
            for row in rows:
                got = _stashed(ns, p, s, row.microbatch)
                expect(got == row.forward, f"stashed_version({p}, {s}, {row.microbatch}) returned {got:g}, but in "
                                           f"the 1F1B order stage {s} has updated its weights {row.forward} times "
                                           f"when micro-batch {row.microbatch}'s forward pass starts.")


@chapter.check("stashed_version", points=1, hint="Raise a ValueError for n_stages < 1, a stage outside "
               "0 .. n_stages - 1, or a negative micro-batch.")
def stashed_version_rejects_bad_input(ns: Namespace) -> None:
    expect_raises_value_error(ns, "stashed_version", 0, 0, 0)
    expect_raises_value_error(ns, "stashed_version", 4, 4, 0)
    expect_raises_value_error(ns, "stashed_version", 4, -1, 2)
    expect_raises_value_error(ns, "stashed_version", 4, 1, -1)
