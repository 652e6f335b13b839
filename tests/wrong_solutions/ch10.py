"""Common mistakes in chapter 10's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- average_gradients


def average_sums_only(per_worker_grads):
    """All-reduce without the division: the sum, N times too large."""
    return [torch.stack(same).sum(dim=0) for same in zip(*per_worker_grads)]


def average_divides_by_parameters(per_worker_grads):
    """Divides by the number of parameters instead of the number of workers."""
    return [torch.stack(same).sum(dim=0) / len(per_worker_grads[0]) for same in zip(*per_worker_grads)]


def average_over_the_wrong_axis(per_worker_grads):
    """Averages each worker's parameters together (one result per worker)."""
    return [torch.cat([g.flatten() for g in worker]).mean() for worker in per_worker_grads]


def average_in_place(per_worker_grads):
    """Right values, but accumulates into worker 0's tensors, changing the input."""
    out = []
    for same in zip(*per_worker_grads):
        total = same[0]
        for g in same[1:]:
            total += g
        out.append(total / len(per_worker_grads))
    return out


# --------------------------------------------------------------------------- bubble_fraction


def bubble_over_useful_time(n_stages, n_microbatches):
    """(p - 1) / m: the bubble relative to the useful work, not a share of all time (can exceed 1)."""
    if n_stages < 1 or n_microbatches < 1:
        raise ValueError("need at least one stage and one micro-batch")
    return (n_stages - 1) / n_microbatches


def bubble_is_utilisation(n_stages, n_microbatches):
    """Returns the busy share m / (m + p - 1) instead of the idle share."""
    if n_stages < 1 or n_microbatches < 1:
        raise ValueError("need at least one stage and one micro-batch")
    return n_microbatches / (n_microbatches + n_stages - 1)


def bubble_off_by_one(n_stages, n_microbatches):
    """(p - 1) / (m + p): one slot too many in the step."""
    if n_stages < 1 or n_microbatches < 1:
        raise ValueError("need at least one stage and one micro-batch")
    return (n_stages - 1) / (n_microbatches + n_stages)


def bubble_unchecked(n_stages, n_microbatches):
    """Right formula, but 0 micro-batches quietly gives a number."""
    return (n_stages - 1) / (n_microbatches + n_stages - 1)


# --------------------------------------------------------------------------- gpipe_order


def _valid(n_stages, n_microbatches, stage):
    if n_stages < 1 or n_microbatches < 1 or not 0 <= stage < n_stages:
        raise ValueError("bad pipeline size or stage")


def gpipe_backwards_in_forward_order(n_stages, n_microbatches, stage):
    """Runs the backwards B0, B1, ... instead of the reverse order the exercise asks for."""
    _valid(n_stages, n_microbatches, stage)
    return [("F", i) for i in range(n_microbatches)] + [("B", i) for i in range(n_microbatches)]


def gpipe_interleaved(n_stages, n_microbatches, stage):
    """Alternates F and B (that is 1F1B-like, not GPipe)."""
    _valid(n_stages, n_microbatches, stage)
    return [step for i in range(n_microbatches) for step in (("F", i), ("B", i))]


def gpipe_forwards_only(n_stages, n_microbatches, stage):
    """Forgets the backward passes."""
    _valid(n_stages, n_microbatches, stage)
    return [("F", i) for i in range(n_microbatches)]


def gpipe_unchecked_stage(n_stages, n_microbatches, stage):
    """Right order, but a stage that does not exist is accepted."""
    return [("F", i) for i in range(n_microbatches)] + [("B", i) for i in reversed(range(n_microbatches))]


# --------------------------------------------------------------------------- column_parallel_forward


def column_full_then_split(x, weight, bias, world_size):
    """Computes the whole output on one device and only cuts it afterwards."""
    if weight.shape[0] % world_size:
        raise ValueError("out_features must be divisible by world_size")
    return torch.cat(F.linear(x, weight, bias).chunk(world_size, dim=-1), dim=-1)


def column_bias_in_every_shard(x, weight, bias, world_size):
    """Splits the input features (row parallel), sums the partial products, but adds the full bias per shard."""
    if weight.shape[0] % world_size or weight.shape[1] % world_size:
        raise ValueError("sizes must be divisible by world_size")
    parts = [F.linear(xs, ws, bias) for xs, ws in zip(x.chunk(world_size, -1), weight.chunk(world_size, 1))]
    return sum(parts)


def column_uneven_chunks(x, weight, bias, world_size):
    """Right values, but torch.chunk silently makes uneven shards instead of raising."""
    biases = bias.chunk(world_size) if bias is not None else [None] * world_size
    return torch.cat([F.linear(x, w, b) for w, b in zip(weight.chunk(world_size), biases)], dim=-1)


def column_concat_first_dim(x, weight, bias, world_size):
    """Concatenates the shards along the batch dimension."""
    if weight.shape[0] % world_size:
        raise ValueError("out_features must be divisible by world_size")
    biases = bias.chunk(world_size) if bias is not None else [None] * world_size
    return torch.cat([F.linear(x, w, b) for w, b in zip(weight.chunk(world_size), biases)], dim=0)


# --------------------------------------------------------------------------- zero_memory_per_device


def _stage_ok(world_size, stage):
    if stage not in (0, 1, 2, 3) or world_size < 1:
        raise ValueError("bad stage or world size")


def zero_stage1_splits_everything(n_params, world_size, stage):
    """Divides all model states by N from stage 1 on."""
    _stage_ok(world_size, stage)
    return 16 * n_params / (world_size if stage >= 1 else 1)


def zero_k_is_8(n_params, world_size, stage):
    """Uses Adam's 8 bytes of states and forgets the fp32 master copy of the weights (K = 8)."""
    _stage_ok(world_size, stage)
    n = world_size
    return 2 * n_params / (n if stage >= 3 else 1) + 2 * n_params / (n if stage >= 2 else 1) + 8 * n_params / (
        n if stage >= 1 else 1)


def zero_gradients_never_split(n_params, world_size, stage):
    """Stage 2 and 3 forget to split the gradients."""
    _stage_ok(world_size, stage)
    n = world_size
    return 2 * n_params / (n if stage >= 3 else 1) + 2 * n_params + 12 * n_params / (n if stage >= 1 else 1)


def zero_in_gigabytes(n_params, world_size, stage):
    """Answers in GB instead of bytes."""
    _stage_ok(world_size, stage)
    n = world_size
    total = 2 * n_params / (n if stage >= 3 else 1) + 2 * n_params / (n if stage >= 2 else 1) + 12 * n_params / (
        n if stage >= 1 else 1)
    return total / 1e9


def zero_unchecked(n_params, world_size, stage):
    """Right for stages 0-3, but stage 4 quietly behaves like stage 3."""
    n = world_size
    return 2 * n_params / (n if stage >= 3 else 1) + 2 * n_params / (n if stage >= 2 else 1) + 12 * n_params / (
        n if stage >= 1 else 1)


# --------------------------------------------------------------------------- dynamic_scale_update


def scale_keeps_count_on_inf(scale, found_inf, good_steps, growth_factor, backoff_factor, growth_interval):
    """Backs off on inf but keeps counting good steps from where it was."""
    if found_inf:
        return scale * backoff_factor, good_steps
    good_steps += 1
    if good_steps >= growth_interval:
        return scale * growth_factor, 0
    return scale, good_steps


def scale_grows_one_step_early(scale, found_inf, good_steps, growth_factor, backoff_factor, growth_interval):
    """Compares the count with the interval before adding this step: grows after interval - 1 good steps."""
    if found_inf:
        return scale * backoff_factor, 0
    if good_steps + 1 >= growth_interval - 1:
        return scale * growth_factor, 0
    return scale, good_steps + 1


def scale_count_not_reset_after_growth(scale, found_inf, good_steps, growth_factor, backoff_factor, growth_interval):
    """Grows at the interval but keeps the count, so it grows again on every following step."""
    if found_inf:
        return scale * backoff_factor, 0
    good_steps += 1
    if good_steps >= growth_interval:
        return scale * growth_factor, good_steps
    return scale, good_steps


def scale_grows_on_inf(scale, found_inf, good_steps, growth_factor, backoff_factor, growth_interval):
    """Swaps the factors: grows when inf is found."""
    if found_inf:
        return scale * growth_factor, 0
    good_steps += 1
    if good_steps == growth_interval:
        return scale * backoff_factor, 0
    return scale, good_steps



# --------------------------------------------------------------------------- GradientBuckets (build the program)

import torch.distributed as _dist  # noqa: E402


class _Buckets:
    """Correct buckets whose subclasses each break one thing."""
    average, use_async, per_parameter, reset = True, True, False, True

    def __init__(self, model, bucket_size):
        params = [p for p in model.parameters() if p.requires_grad][::-1]
        size = 1 if self.per_parameter else bucket_size
        self.buckets = [params[i:i + size] for i in range(0, len(params), size)]
        self.bucket_of = {id(p): b for b, bucket in enumerate(self.buckets) for p in bucket}
        self.ready, self.pending = [0] * len(self.buckets), []
        for p in params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def _grad_ready(self, param):
        b = self.bucket_of[id(param)]
        self.ready[b] += 1
        if self.ready[b] == len(self.buckets[b]):
            flat = torch.cat([p.grad.flatten() for p in self.buckets[b]])
            work = _dist.all_reduce(flat, async_op=True) if self.use_async else _dist.all_reduce(flat)
            self.pending.append((b, flat, work))

    def wait(self):
        world = _dist.get_world_size() if self.average else 1
        for b, flat, work in self.pending:
            if work is not None:
                work.wait()
            offset = 0
            for p in self.buckets[b]:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p) / world)
                offset += p.numel()
        self.pending = []
        if self.reset:
            self.ready = [0] * len(self.buckets)


class BucketsSumInsteadOfAverage(_Buckets):
    """Adds the gradients of the processes without dividing by their number."""
    average = False


class BucketsBlockingAllReduce(_Buckets):
    """Waits for every all-reduce inside the hook: nothing overlaps the backward pass."""
    use_async = False


class BucketsOneCallPerParameter(_Buckets):
    """Ignores bucket_size and sends every parameter on its own."""
    per_parameter = True


class BucketsNeverReset(_Buckets):
    """Forgets to reset the counts after a step, so later steps never send their buckets."""
    reset = False


# --------------------------------------------------------------------------- the experiment: fp16_accumulation_error


def _relative_error(total, values):
    exact = values.double().sum()
    return ((torch.as_tensor(total).double() - exact).abs() / exact).item()


def fp16_error_with_torch_sum(values):
    """Uses values.half().sum(), which PyTorch accumulates in fp32 internally: no stalling shows."""
    return _relative_error(values.half().sum(), values)


def fp16_error_float32_total(values):
    """Starts the total as a float32 zero, so every addition of an fp16 value is done (and kept) in fp32."""
    total = torch.zeros(())
    for value in values.half():
        total += value
    return _relative_error(total, values)


def fp16_error_rounds_only_at_the_end(values):
    """Adds in float32 and rounds only the finished total to fp16."""
    return _relative_error(values.sum().half(), values)


def fp16_error_absolute(values):
    """Returns |total - exact| without dividing by the exact sum."""
    total = torch.zeros((), dtype=torch.float16)
    for value in values.half():
        total = total + value
    return (total.double() - values.double().sum()).abs().item()


# --------------------------------------------------------------------------- the derivation: column_parallel_input_grads


def input_grads_whole_gradient_everywhere(grad_output, weight, world_size):
    """Gives every device the whole dL/dx, as if each already held every output's gradient."""
    return [grad_output @ weight for _ in range(world_size)]


def input_grads_averaged(grad_output, weight, world_size):
    """Divides each part by world_size, as if the all-reduce averaged (as in data parallelism) instead of summing."""
    size = weight.shape[0] // world_size
    return [grad_output[..., r * size:(r + 1) * size] @ weight[r * size:(r + 1) * size] / world_size
            for r in range(world_size)]


def input_grads_strided_rows(grad_output, weight, world_size):
    """Deals the rows of weight out round-robin (rows r, r + world_size, ...) but slices grad_output in blocks."""
    size = weight.shape[0] // world_size
    return [grad_output[..., r * size:(r + 1) * size] @ weight[r::world_size] for r in range(world_size)]


def input_grads_split_by_input_features(grad_output, weight, world_size):
    """Splits weight by its columns (the input features), as a row-parallel layer would, so each part is a slice."""
    size = weight.shape[1] // world_size
    return [grad_output @ weight[:, r * size:(r + 1) * size] for r in range(world_size)]


# --------------------------------------------------------------------------- stashed_version


def _stash_ok(n_stages, stage, microbatch):
    if n_stages < 1 or not 0 <= stage < n_stages or microbatch < 0:
        raise ValueError("no such stage or micro-batch")


def stashed_uses_current(n_stages, stage, microbatch):
    """No stashing: the newest version at the backward pass, i updates, on every stage."""
    _stash_ok(n_stages, stage, microbatch)
    return microbatch


def stashed_off_by_one(n_stages, stage, microbatch):
    """Counts p - s warm-up forwards instead of p - s - 1."""
    _stash_ok(n_stages, stage, microbatch)
    return max(0, microbatch - (n_stages - stage))


def stashed_stages_reversed(n_stages, stage, microbatch):
    """Gives the last stage the most warm-up forwards (numbering the stages from the end)."""
    _stash_ok(n_stages, stage, microbatch)
    return max(0, microbatch - stage)


def stashed_goes_negative(n_stages, stage, microbatch):
    """Forgets that no stage has fewer than 0 updates."""
    _stash_ok(n_stages, stage, microbatch)
    return microbatch - (n_stages - stage - 1)


def stashed_unchecked(n_stages, stage, microbatch):
    """Right versions, but accepts stages that do not exist."""
    return max(0, microbatch - (n_stages - stage - 1))


WRONG: dict[str, list[Callable]] = {
    "GradientBuckets": [BucketsSumInsteadOfAverage, BucketsBlockingAllReduce, BucketsOneCallPerParameter,
                        BucketsNeverReset],
    "average_gradients": [average_sums_only, average_divides_by_parameters, average_over_the_wrong_axis,
                          average_in_place],
    "bubble_fraction": [bubble_over_useful_time, bubble_is_utilisation, bubble_off_by_one, bubble_unchecked],
    "gpipe_order": [gpipe_backwards_in_forward_order, gpipe_interleaved, gpipe_forwards_only, gpipe_unchecked_stage],
    "column_parallel_forward": [column_full_then_split, column_bias_in_every_shard, column_uneven_chunks,
                                column_concat_first_dim],
    "zero_memory_per_device": [zero_stage1_splits_everything, zero_k_is_8, zero_gradients_never_split,
                               zero_in_gigabytes, zero_unchecked],
    "dynamic_scale_update": [scale_keeps_count_on_inf, scale_grows_one_step_early,
                             scale_count_not_reset_after_growth, scale_grows_on_inf],
    "fp16_accumulation_error": [fp16_error_with_torch_sum, fp16_error_float32_total, fp16_error_rounds_only_at_the_end,
                                fp16_error_absolute],
    "column_parallel_input_grads": [input_grads_whole_gradient_everywhere, input_grads_averaged,
                                    input_grads_strided_rows, input_grads_split_by_input_features],
    "stashed_version": [stashed_uses_current, stashed_off_by_one, stashed_stages_reversed, stashed_goes_negative,
                        stashed_unchecked],
}
