"""Tests of chapter 10's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub and every common mistake, and are quick and deterministic."""
from __future__ import annotations

import torch
from check_contract import contract_tests
from wrong_solutions.ch10 import _Buckets as _Build10  # the correct program the wrong ones break

from llmcourse.grading.chapters.ch10 import chapter
from llmcourse.grading.checks import run_checks
from llmcourse.parallel import communication, loss_scaling, memory, schedule, weight_stashing

# --------------------------------------------------------------------------- correct solutions, written here


def _average_gradients(per_worker_grads):
    n = len(per_worker_grads)
    return [sum(grads[i] for grads in per_worker_grads) / n for i in range(len(per_worker_grads[0]))]


def _bubble_fraction(n_stages, n_microbatches):
    if min(n_stages, n_microbatches) < 1:
        raise ValueError("a pipeline needs a stage and a micro-batch")
    idle_slots = n_stages - 1
    return idle_slots / (idle_slots + n_microbatches)


def _gpipe_order(n_stages, n_microbatches, stage):
    if n_stages < 1 or n_microbatches < 1 or stage < 0 or stage >= n_stages:
        raise ValueError("no such stage")
    forwards = [("F", i) for i in range(n_microbatches)]
    return forwards + [("B", i) for _, i in forwards[::-1]]


def _column_parallel_forward(x, weight, bias, world_size):
    out_features = weight.shape[0]
    if out_features % world_size:
        raise ValueError("out_features must split evenly")
    size = out_features // world_size
    outputs = []
    for rank in range(world_size):
        rows = slice(rank * size, (rank + 1) * size)
        y = x @ weight[rows].T
        outputs.append(y if bias is None else y + bias[rows])
    return torch.cat(outputs, dim=-1)


def _zero_memory_per_device(n_params, world_size, stage):
    if stage not in range(4) or world_size < 1:
        raise ValueError("stage must be 0-3 and world_size >= 1")
    split = [world_size if stage >= s else 1 for s in (3, 2, 1)]  # parameters, gradients, optimizer states
    return n_params * (2 / split[0] + 2 / split[1] + 12 / split[2])


def _dynamic_scale_update(scale, found_inf, good_steps, growth_factor, backoff_factor, growth_interval):
    if found_inf:
        return scale * backoff_factor, 0
    if good_steps + 1 < growth_interval:
        return scale, good_steps + 1
    return scale * growth_factor, 0


def _fp16_accumulation_error(values):
    # written differently from the solution: an fp16 accumulator updated in place, plain Python for the exact sum
    total = torch.tensor(0.0, dtype=torch.float16)
    for value in values.tolist():
        total.add_(torch.tensor(value, dtype=torch.float16))
    exact = sum(float(v) for v in values.double())
    return abs(total.item() - exact) / exact


def _column_parallel_input_grads(grad_output, weight, world_size):
    # y_r = x W_r^T + b_r, so dL/dx through y_r is dL/dy_r W_r; written with einsum over blocks
    blocks_w = weight.reshape(world_size, -1, weight.shape[1])
    blocks_g = grad_output.reshape(*grad_output.shape[:-1], world_size, -1)
    return list(torch.einsum("...rs,rsi->r...i", blocks_g, blocks_w))


def _stashed_version(n_stages, stage, microbatch):
    # counted the long way: walk the stage's 1F1B order and count the updates before ('F', microbatch)
    if n_stages < 1 or not 0 <= stage < n_stages or microbatch < 0:
        raise ValueError("no such pass")
    warmup = n_stages - stage - 1
    updates = 0
    for i in range(microbatch + 1):
        if i > warmup:
            updates += 1
    return updates


CORRECT = {
    "GradientBuckets": _Build10,
    "average_gradients": _average_gradients,
    "bubble_fraction": _bubble_fraction,
    "gpipe_order": _gpipe_order,
    "column_parallel_forward": _column_parallel_forward,
    "zero_memory_per_device": _zero_memory_per_device,
    "dynamic_scale_update": _dynamic_scale_update,
    "fp16_accumulation_error": _fp16_accumulation_error,
    "column_parallel_input_grads": _column_parallel_input_grads,
    "stashed_version": _stashed_version,
}

PACKAGE = {
    "average_gradients": communication.average_gradients,
    "bubble_fraction": schedule.gpipe_bubble,
    "gpipe_order": lambda p, m, stage: schedule.order("gpipe", p, m, stage),
    "zero_memory_per_device": memory.zero_memory_per_device,
    "dynamic_scale_update": loss_scaling.dynamic_scale_update,
    "stashed_version": weight_stashing.stashed_version,
}


def _stub(*args, **kwargs):
    raise NotImplementedError


# --------------------------------------------------------------------------- the tests


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "10", CORRECT, PACKAGE, at_least=6)


def test_an_untouched_stub_fails_every_check():
    results = run_checks(chapter, {name: _stub for name in CORRECT})
    assert results and not any(r.passed for r in results)


def test_full_product_is_caught_but_a_loop_of_shards_is_not():
    wrong = {"column_parallel_forward": lambda x, w, b, n: torch.cat(
        (x @ w.T + (0 if b is None else b)).chunk(n, -1), -1) if w.shape[0] % n == 0 else _column_parallel_forward(
        x, w, b, n)}
    failed = [r.name for r in run_checks(chapter, wrong, "column_parallel_forward") if not r.passed]
    assert failed == ["column_parallel_computes_shards"]



def test_the_fp16_reference_is_the_lessons_counter():
    from llmcourse.grading.chapters.ch10 import _fp16_running_sum_error

    assert abs(_fp16_running_sum_error(torch.ones(3000)) - (3000 - 2048) / 3000) < 1e-12  # stuck at 2048
    assert _fp16_running_sum_error(torch.ones(100)) == 0.0


def test_column_parallel_input_grads_refuse_autograd():
    import torch.nn.functional as F

    def by_autograd(grad_output, weight, world_size):
        size = weight.shape[0] // world_size
        x = torch.zeros(*grad_output.shape[:-1], weight.shape[1], dtype=weight.dtype, requires_grad=True)
        return [torch.autograd.grad(F.linear(x, weight[r * size:(r + 1) * size]), x,
                                    grad_output[..., r * size:(r + 1) * size])[0] for r in range(world_size)]

    results = run_checks(chapter, {"column_parallel_input_grads": by_autograd}, "column_parallel_input_grads")
    failed = [r for r in results if not r.passed]
    assert failed and all("asks you to write" in r.message for r in failed)
