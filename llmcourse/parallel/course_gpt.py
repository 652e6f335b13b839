"""Chapter 10: the course's GPT, trained by chapter 08's Trainer in several processes.

The :class:`~llmcourse.pretraining.trainer.Trainer` is built on accelerate, so the same code runs in one process
or in ``world_size`` processes (each gets a full copy of the model, wrapped for data parallelism). Its
``batch_size`` is *per process*. To repeat chapter 08's run in several processes, keep everything and split the
batch (:func:`per_process_config`): an optimizer step then still reads ``batch_size`` windows in all.

Which windows? The Trainer's :class:`~llmcourse.pretraining.trainer.StepBatchSampler` gives process ``rank``, at
micro-batch ``m``, the ``B`` examples starting at position ``(m * W + r) * B`` of one shuffled stream (``W``
processes, ``B`` windows each). With ``W * B`` equal to the one-process batch, rank 0 reads the first ``B`` of
exactly the windows one process reads at step ``m``, rank 1 the next ``B``, and so on
(:func:`windows_of_step`, :func:`same_windows_as_one_process`). Equal halves, averaged gradients: the run is the
one-process run, up to the order of floating-point sums. Evaluation counts per process too: ``eval_steps`` batches
of ``batch_size`` windows, so the split run evaluates ``world_size`` times as many, smaller batches to score the
same windows.

:func:`compare_runs` measures how close two loss histories are, step by step and at the evaluations.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from llmcourse.pretraining.trainer import StepBatchSampler, TrainConfig

__all__ = ["RunComparison", "compare_runs", "per_process_config", "same_windows_as_one_process",
           "windows_of_step"]


def _check_world_size(world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a whole number >= 1 (how many processes), got {world_size!r}")


def per_process_config(config: TrainConfig, world_size: int) -> TrainConfig:
    """``config`` for each of ``world_size`` processes: the same run, the same windows in all.

    Two settings count per process. ``batch_size`` is divided by ``world_size``, so that an optimizer step still
    reads ``batch_size`` windows in all. ``eval_steps`` is multiplied by it: the Trainer evaluates on
    ``eval_steps * batch_size`` windows spread over the validation data
    (:func:`~llmcourse.pretraining.trainer.eval_indices`) and shares those batches out between the processes, so
    this keeps exactly the one-process validation windows. Every other setting (model shape, steps,
    learning-rate schedule, seed) stays as it is. The batch must divide evenly: with unequal shares, the plain
    average of the processes' gradients would weight windows unequally.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_world_size(world_size)
    if config.batch_size % world_size:
        raise ValueError(f"batch_size={config.batch_size} windows cannot be split evenly over {world_size} "
                         f"processes; choose a batch size divisible by {world_size}")
    return dataclasses.replace(config, batch_size=config.batch_size // world_size,
                               eval_steps=config.eval_steps * world_size)


def windows_of_step(n_windows: int, config: TrainConfig, step: int, world_size: int = 1) -> list[list[int]]:
    """The training windows (example indices) each process reads at optimizer step ``step`` (counted from 0).

    ``config`` is the per-process configuration; one list per rank, in rank order, each holding
    ``batch_size * grad_accum_steps`` indices (the micro-batches of that step, in order).
    """
    _check_world_size(world_size)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a whole number >= 0, got {step!r}")
    out = []
    for rank in range(world_size):
        sampler = StepBatchSampler(n_windows, config.batch_size, seed=config.seed, rank=rank, world_size=world_size)
        first = step * config.grad_accum_steps
        out.append([i for m in range(first, first + config.grad_accum_steps) for i in sampler.indices(m)])
    return out


def same_windows_as_one_process(n_windows: int, config: TrainConfig, world_size: int,
                                steps: int | None = None) -> bool:
    """True when, at every optimizer step of the run, the ``world_size`` processes of
    ``per_process_config(config, world_size)`` read exactly the windows one process with ``config`` reads:
    rank 0's windows, then rank 1's, ... are the one-process batch, in order. ``steps``: how many steps to
    check (default: the whole run, ``config.max_steps``).
    """
    split = per_process_config(config, world_size)
    steps = config.max_steps if steps is None else steps
    one = StepBatchSampler(n_windows, config.batch_size, seed=config.seed)
    ranks = [StepBatchSampler(n_windows, split.batch_size, seed=config.seed, rank=r, world_size=world_size)
             for r in range(world_size)]
    # micro-batch by micro-batch (with gradient accumulation, a step is grad_accum_steps of them in both runs)
    return all(one.indices(m) == [i for rank in ranks for i in rank.indices(m)]
               for m in range(steps * config.grad_accum_steps))


@dataclass(frozen=True)
class RunComparison:
    """How far apart two runs' losses are.

    ``gaps``: |loss difference| at each step both histories have (training loss, step 1 first);
    ``agree_steps``: the first steps checked for agreement to rounding; ``max_gap_early``: the largest gap among
    them; ``first_apart``: the first step whose gap exceeds ``tolerance`` (None if none does);
    ``val_steps`` and ``val_gaps``: the evaluations both runs made, and other - reference at each;
    ``mean_gap_last``: the difference of the mean training losses over the last tenth of the steps.
    """

    steps: int
    gaps: list[float]
    agree_steps: int
    max_gap_early: float
    tolerance: float
    first_apart: int | None
    val_steps: list[int]
    val_gaps: list[float]
    mean_gap_last: float

    @property
    def final_val_gap(self) -> float:
        """other - reference at the last evaluation both runs made (nan if there was none)."""
        return self.val_gaps[-1] if self.val_gaps else math.nan


def _field(history: Any, name: str) -> list:
    value = history[name] if isinstance(history, Mapping) else getattr(history, name)
    return list(value)


def compare_runs(reference: Any, other: Any, agree_steps: int, tolerance: float = 1e-3) -> RunComparison:
    """Compare two training histories (``History`` objects or their ``to_dict()``, e.g. ``checkpoint["history"]``).

    The runs are lined up by step; only the steps both made are compared. ``agree_steps``: how many first steps
    should agree to ``tolerance`` (nats) if the runs are the same computation up to rounding.
    """
    steps_a, steps_b = _field(reference, "step"), _field(other, "step")
    n = min(len(steps_a), len(steps_b))
    if n == 0:
        raise ValueError("compare_runs needs two histories with at least one step each")
    if steps_a[:n] != steps_b[:n]:
        raise ValueError("the two histories do not count their steps alike (different 'step' lists)")
    if isinstance(agree_steps, bool) or not isinstance(agree_steps, int) or not 1 <= agree_steps <= n:
        raise ValueError(f"agree_steps must be a whole number from 1 to {n} (the steps both runs made), "
                         f"got {agree_steps!r}")
    loss_a, loss_b = _field(reference, "train_loss")[:n], _field(other, "train_loss")[:n]
    gaps = [abs(float(a) - float(b)) for a, b in zip(loss_a, loss_b)]
    first_apart = next((steps_a[i] for i, g in enumerate(gaps) if g > tolerance), None)
    last = max(1, n // 10)
    mean_gap_last = sum(loss_b[-last:]) / last - sum(loss_a[-last:]) / last
    val_a = dict(zip(_field(reference, "val_step"), _field(reference, "val_loss")))
    val_b = dict(zip(_field(other, "val_step"), _field(other, "val_loss")))
    val_steps = sorted(set(val_a) & set(val_b))
    return RunComparison(steps=n, gaps=gaps, agree_steps=agree_steps, max_gap_early=max(gaps[:agree_steps]),
                         tolerance=tolerance, first_apart=first_apart, val_steps=val_steps,
                         val_gaps=[float(val_b[s]) - float(val_a[s]) for s in val_steps],
                         mean_gap_last=float(mean_gap_last))
