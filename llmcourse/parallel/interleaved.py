"""Chapter 10: interleaved 1F1B, a pipeline whose devices each hold several chunks of layers.

With plain 1F1B, device ``d`` of ``p`` holds one run of consecutive layers. Interleaving cuts the model into
``p * v`` *virtual stages* instead and gives device ``d`` the virtual stages ``d, d + p, d + 2p, ...``: ``v``
chunks, each ``1/v`` of the device's layers. A micro-batch now visits every device ``v`` times, and each visit
is ``v`` times shorter, so filling and draining the pipe costs ``v`` times less: the bubble share falls from
``(p - 1) / (m + p - 1)`` to ``(p - 1) / (v * m + p - 1)`` (:func:`interleaved_bubble`), at the price of ``v``
times as many messages between devices.

:func:`order` is Megatron-LM's order for one device (warm-up forwards, then one forward / one backward, then
the remaining backwards), :func:`simulate` times it, and the result is a list of
:class:`~llmcourse.parallel.schedule.Op` (``stage`` = the device) that ``schedule.bubble_share`` and
``plots.plot_schedule`` take as they are; :func:`chunk_of` says which chunk each pass ran.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmcourse.parallel.schedule import Op

Pass = tuple[str, int, int]  # (kind "F"/"B", micro-batch, chunk on this device)


@dataclass(frozen=True)
class ChunkOp(Op):
    """An :class:`~llmcourse.parallel.schedule.Op` that also knows which of its device's chunks it ran."""

    chunk: int = 0


def _check(n_devices: int, n_chunks: int, n_microbatches: int) -> None:
    for name, value in (("n_devices", n_devices), ("n_chunks", n_chunks), ("n_microbatches", n_microbatches)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, got {value!r} ({type(value).__name__}).")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    if n_microbatches % n_devices:
        raise ValueError(f"interleaved 1F1B sends micro-batches round in groups of n_devices: n_microbatches "
                         f"({n_microbatches}) must be a multiple of n_devices ({n_devices}).")


def interleaved_bubble(n_devices: int, n_microbatches: int, n_chunks: int = 1) -> float:
    """The idle share of interleaved 1F1B, ``(p - 1) / (v * m + p - 1)``; ``n_chunks = 1`` is plain 1F1B/GPipe."""
    _check(n_devices, n_chunks, n_microbatches)
    return (n_devices - 1) / (n_chunks * n_microbatches + n_devices - 1)


def _unit(j: int, n_devices: int, n_chunks: int, backward: bool) -> tuple[int, int]:
    """The (micro-batch, chunk) of a device's j-th forward (or backward) pass."""
    group, within = divmod(j, n_devices * n_chunks)
    chunk = within // n_devices
    return group * n_devices + within % n_devices, (n_chunks - 1 - chunk if backward else chunk)


def order(n_devices: int, n_chunks: int, n_microbatches: int, device: int) -> list[Pass]:
    """The passes device ``device`` runs, in order, as ``(kind, micro-batch, chunk)``.

    Forwards go through the chunks in rounds of ``p`` micro-batches (micro-batches 0..p-1 through chunk 0,
    then through chunk 1, ...); backwards take the chunks the other way round. Device ``d`` starts with
    ``2 (p - d - 1) + (v - 1) p`` warm-up forwards, then alternates one forward and one backward.
    """
    _check(n_devices, n_chunks, n_microbatches)
    if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < n_devices:
        raise ValueError(f"device must be a whole number from 0 to {n_devices - 1}, got {device!r}.")
    total = n_microbatches * n_chunks
    warmup = min(2 * (n_devices - device - 1) + (n_chunks - 1) * n_devices, total)
    forward = [("F", *_unit(j, n_devices, n_chunks, False)) for j in range(total)]
    backward = [("B", *_unit(j, n_devices, n_chunks, True)) for j in range(total)]
    steps: list[Pass] = forward[:warmup]
    for j in range(total - warmup):
        steps += [forward[warmup + j], backward[j]]
    return steps + backward[total - warmup:]


def run_orders(orders: Sequence[Sequence[Pass]], n_chunks: int, forward_time: float = 1,
               backward_time: float = 2) -> list[ChunkOp]:
    """Time per-device orders of ``(kind, micro-batch, chunk)``; a chunk's pass takes ``1/v`` of the device's time.

    Virtual stage ``k = chunk * p + device``: its forward needs the forward of stage ``k - 1``, its backward
    needs its own forward and the backward of stage ``k + 1``. Raises ``ValueError`` if the orders deadlock.
    """
    p = len(orders)
    last = p * n_chunks - 1
    times = {"F": forward_time / n_chunks, "B": backward_time / n_chunks}
    done: dict[tuple[str, int, int], float] = {}  # (kind, virtual stage, micro-batch) -> end time
    free, position, ops = [0.0] * p, [0] * p, []
    n_passes = sum(len(steps) for steps in orders)
    while len(ops) < n_passes:
        progressed = False
        for d in range(p):
            if position[d] == len(orders[d]):
                continue
            kind, i, chunk = orders[d][position[d]]
            k = chunk * p + d
            if kind == "F":
                needs = [("F", k - 1, i)] if k > 0 else []
            else:
                needs = [("F", k, i)] + ([("B", k + 1, i)] if k < last else [])
            if not all(need in done for need in needs):
                continue
            start = max([free[d]] + [done[need] for need in needs])
            end = start + times[kind]
            ops.append(ChunkOp(d, i, kind, start, end, chunk))
            done[(kind, k, i)] = free[d] = end
            position[d] += 1
            progressed = True
        if not progressed:
            stuck = {d: orders[d][position[d]] for d in range(p) if position[d] < len(orders[d])}
            raise ValueError(f"these orders deadlock: every device waits for a pass that never runs ({stuck}).")
    return sorted(ops, key=lambda op: (op.start, op.stage))


def simulate(n_devices: int = 4, n_chunks: int = 2, n_microbatches: int = 8, forward_time: float = 1,
             backward_time: float = 2) -> list[ChunkOp]:
    """One step of interleaved 1F1B; ``forward_time``/``backward_time`` are a whole device's share of the model."""
    orders = [order(n_devices, n_chunks, n_microbatches, d) for d in range(n_devices)]
    return run_orders(orders, n_chunks, forward_time, backward_time)


def chunk_of(ops: Sequence[Op]) -> list[int]:
    """The chunk each pass ran (0 for a plain schedule's :class:`~llmcourse.parallel.schedule.Op`)."""
    return [getattr(op, "chunk", 0) for op in ops]


def layers_of_chunks(n_layers: int, n_devices: int, n_chunks: int) -> list[list[list[int]]]:
    """Which layers device ``d``'s chunks hold: virtual stage ``k = c p + d`` gets the k-th run of layers."""
    _check(n_devices, n_chunks, n_devices)
    per_stage, rest = divmod(n_layers, n_devices * n_chunks)
    if rest or per_stage == 0:
        raise ValueError(f"{n_layers} layers do not split into {n_devices} x {n_chunks} equal chunks.")
    return [[list(range((c * n_devices + d) * per_stage, (c * n_devices + d + 1) * per_stage))
             for c in range(n_chunks)] for d in range(n_devices)]
