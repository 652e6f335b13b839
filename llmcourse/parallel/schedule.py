"""Chapter 10: pipeline schedules and their bubbles.

A model cut into ``p`` stages runs on ``p`` devices; a batch is cut into ``m``
micro-batches. Each stage runs a forward pass ``F`` and a backward pass ``B`` for
every micro-batch, with three rules:

* ``F`` of micro-batch ``i`` on stage ``s`` needs ``F`` of ``i`` on stage ``s - 1`` (its input);
* ``B`` of ``i`` on stage ``s`` needs ``B`` of ``i`` on stage ``s + 1`` (its output gradient)
  and ``F`` of ``i`` on stage ``s`` (its stored activations);
* a device runs one operation at a time, in the order its schedule gives.

:func:`order` says which order each stage runs (``"naive"``, ``"gpipe"`` or
``"1f1b"``), :func:`simulate` turns the orders into start and end times, and
:func:`bubble_share` measures the idle share, to compare with GPipe's closed
form :func:`gpipe_bubble` ``(p - 1) / (m + p - 1)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SCHEDULES = ("naive", "gpipe", "1f1b")

Step = tuple[str, int]  # ("F", micro-batch) or ("B", micro-batch)


@dataclass(frozen=True)
class Op:
    """One forward (``kind="F"``) or backward (``kind="B"``) pass of one micro-batch on one stage."""

    stage: int
    microbatch: int
    kind: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def _check_sizes(n_stages: int, n_microbatches: int) -> None:
    for name, value in (("n_stages", n_stages), ("n_microbatches", n_microbatches)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, got {value!r} ({type(value).__name__}).")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")


def order(schedule: str, n_stages: int, n_microbatches: int, stage: int) -> list[Step]:
    """The passes stage ``stage`` runs, in order, e.g. ``[("F", 0), ("F", 1), ("B", 1), ("B", 0)]``.

    * ``"naive"``: one micro-batch at a time, forward then backward (no overlap at all);
    * ``"gpipe"``: all forwards, then all backwards in reverse micro-batch order (same on every stage);
    * ``"1f1b"``: ``p - stage - 1`` warm-up forwards, then one forward / one backward in turn
      (steady state), then the remaining backwards (cool-down).
    """
    _check_sizes(n_stages, n_microbatches)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < n_stages:
        raise ValueError(f"stage must be a whole number from 0 to {n_stages - 1}, got {stage!r}.")
    m = n_microbatches
    if schedule == "naive":
        return [step for i in range(m) for step in (("F", i), ("B", i))]
    if schedule == "gpipe":
        return [("F", i) for i in range(m)] + [("B", i) for i in reversed(range(m))]
    warmup = min(n_stages - stage - 1, m)
    steps: list[Step] = [("F", i) for i in range(warmup)]
    for i in range(m - warmup):  # steady state: one forward, one backward
        steps += [("F", warmup + i), ("B", i)]
    steps += [("B", i) for i in range(m - warmup, m)]  # cool-down
    return steps


def _per_stage(value: float | Sequence[float], n_stages: int, name: str) -> list[float]:
    values = [value] * n_stages if isinstance(value, (int, float)) else list(value)
    if len(values) != n_stages:
        raise ValueError(f"{name} must be one number or one per stage ({n_stages}), got {len(values)} values.")
    if not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise ValueError(f"{name} must be positive, got {value!r}.")
    return [float(v) for v in values]


def run_orders(orders: Sequence[Sequence[Step]], forward_time: float | Sequence[float] = 1,
               backward_time: float | Sequence[float] = 2) -> list[Op]:
    """Time the given per-stage orders: every pass starts as soon as its stage is free and its inputs exist.

    ``orders[s]`` lists stage ``s``'s passes; each ``("F", i)`` and ``("B", i)`` must appear exactly once per
    stage. Times may be one number or one per stage. Raises ``ValueError`` if the orders deadlock.
    """
    n_stages = len(orders)
    if n_stages < 1:
        raise ValueError("orders must hold at least one stage's list of passes.")
    m = len(orders[0]) // 2
    for s, steps in enumerate(orders):
        expected = sorted((kind, i) for kind in "BF" for i in range(m))
        if sorted(tuple(step) for step in steps) != expected:
            raise ValueError(f"stage {s} must run ('F', i) and ('B', i) exactly once for each micro-batch "
                             f"i in 0..{m - 1}; it runs {list(steps)}.")
    f_time = _per_stage(forward_time, n_stages, "forward_time")
    b_time = _per_stage(backward_time, n_stages, "backward_time")
    done: dict[tuple[str, int, int], float] = {}  # (kind, stage, micro-batch) -> end time
    free = [0.0] * n_stages
    position = [0] * n_stages
    ops: list[Op] = []
    while len(ops) < 2 * m * n_stages:
        progressed = False
        for s in range(n_stages):
            if position[s] == len(orders[s]):
                continue
            kind, i = orders[s][position[s]]
            needs = [("F", s - 1, i)] if kind == "F" and s > 0 else []
            if kind == "B":
                needs = [("F", s, i)] + ([("B", s + 1, i)] if s < n_stages - 1 else [])
            if not all(need in done for need in needs):
                continue
            start = max([free[s]] + [done[need] for need in needs])
            end = start + (f_time[s] if kind == "F" else b_time[s])
            ops.append(Op(s, i, kind, start, end))
            done[(kind, s, i)] = free[s] = end
            position[s] += 1
            progressed = True
        if not progressed:
            stuck = {s: orders[s][position[s]] for s in range(n_stages) if position[s] < len(orders[s])}
            raise ValueError(f"these orders deadlock: every stage waits for a pass that never runs ({stuck}).")
    return sorted(ops, key=lambda op: (op.start, op.stage))


def simulate(schedule: str = "gpipe", n_stages: int = 4, n_microbatches: int = 4,
             forward_time: float | Sequence[float] = 1, backward_time: float | Sequence[float] = 2) -> list[Op]:
    """Simulate one training step of ``schedule`` and return every pass as an :class:`Op` with its times."""
    _check_sizes(n_stages, n_microbatches)
    orders = [order(schedule, n_stages, n_microbatches, s) for s in range(n_stages)]
    return run_orders(orders, forward_time, backward_time)


def makespan(ops: Sequence[Op]) -> float:
    """Time from the first pass's start to the last pass's end."""
    return max(op.end for op in ops) - min(op.start for op in ops)


def bubble_share(ops: Sequence[Op]) -> float:
    """The idle share of all devices' time: 1 - busy time / (devices x makespan)."""
    if not ops:
        raise ValueError("bubble_share needs at least one pass.")
    n_stages = max(op.stage for op in ops) + 1
    busy = sum(op.duration for op in ops)
    return 1.0 - busy / (n_stages * makespan(ops))


def gpipe_bubble(n_stages: int, n_microbatches: int) -> float:
    """GPipe's bubble share in closed form, ``(p - 1) / (m + p - 1)``, for balanced stages."""
    _check_sizes(n_stages, n_microbatches)
    return (n_stages - 1) / (n_microbatches + n_stages - 1)


def peak_activations(ops: Sequence[Op]) -> list[int]:
    """Per stage, the most micro-batches whose activations are held at once (forward started, backward not done)."""
    n_stages = max(op.stage for op in ops) + 1
    peaks = []
    for s in range(n_stages):
        held = peak = 0
        for op in sorted((op for op in ops if op.stage == s), key=lambda op: op.start):
            if op.kind == "F":
                held += 1
                peak = max(peak, held)
            else:
                held -= 1
        peaks.append(peak)
    return peaks


def idle_time(ops: Sequence[Op]) -> list[float]:
    """Per stage, how long the device waits during the step."""
    n_stages = max(op.stage for op in ops) + 1
    total = makespan(ops)
    return [total - sum(op.duration for op in ops if op.stage == s) for s in range(n_stages)]
