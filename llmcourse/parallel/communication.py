"""Chapter 10: how much data parallelism sends per training step.

After the backward pass every worker holds gradients for its own slice of the
batch; they must be summed (and divided by the number of workers) so that every
replica applies the same update. Two ways, for ``N`` workers and ``Psi`` values:

* a **parameter server** receives every worker's gradients and sends back the new
  parameters: each worker sends Psi and receives Psi (2 Psi), but the server handles
  2 N Psi — it is the bottleneck, and it grows with N;
* a **ring all-reduce** (reduce-scatter, then all-gather, round a ring of workers)
  has each worker send 2 (N - 1) / N Psi and receive as many — below 4 Psi for any N,
  spread evenly over all links, so adding workers does not slow the exchange down.

:func:`simulate_ring_all_reduce` passes the chunks round a ring in plain Python and
counts what each worker sends, so the formula can be checked rather than believed.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch


def _check_sizes(n_params: float, world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a whole number >= 1, got {world_size!r}.")
    if isinstance(n_params, bool) or not isinstance(n_params, (int, float)) or n_params < 0:
        raise ValueError(f"n_params must be a number >= 0, got {n_params!r}.")


def parameter_server_volume(n_params: float, world_size: int, bytes_per_value: float = 2) -> dict[str, float]:
    """Bytes per step with a parameter server.

    Each worker sends its gradients (Psi values) and receives the new parameters (Psi values);
    the server receives N Psi and sends N Psi. Keys: ``worker_sent``, ``worker_received``,
    ``server_sent``, ``server_received``.
    """
    _check_sizes(n_params, world_size)
    one = n_params * bytes_per_value
    return {"worker_sent": one, "worker_received": one,
            "server_sent": world_size * one, "server_received": world_size * one}


def ring_all_reduce_volume(n_params: float, world_size: int, bytes_per_value: float = 2) -> float:
    """Bytes each worker SENDS in a ring all-reduce, ``2 (N - 1) / N * Psi`` values; it receives as many."""
    _check_sizes(n_params, world_size)
    return 2 * (world_size - 1) / world_size * n_params * bytes_per_value


def communication_table(n_params: float, world_sizes: Sequence[int], bytes_per_value: float = 2) -> list[dict]:
    """One row per world size, in bytes sent + received per step.

    ``ps_worker`` (2 Psi) and ``ps_server`` (2 N Psi, the busiest node) for a parameter server;
    ``ring_worker`` (4 (N - 1) / N Psi) for a ring all-reduce, where every worker is equally busy.
    """
    rows = []
    for n in world_sizes:
        server = parameter_server_volume(n_params, n, bytes_per_value)
        rows.append({"world_size": n,
                     "ps_worker": server["worker_sent"] + server["worker_received"],
                     "ps_server": server["server_sent"] + server["server_received"],
                     "ring_worker": 2 * ring_all_reduce_volume(n_params, n, bytes_per_value)})
    return rows


def _chunk_bounds(length: int, n: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into ``n`` contiguous chunks whose sizes differ by at most one."""
    edges = [length * i // n for i in range(n + 1)]
    return list(pairwise(edges))


def simulate_ring_all_reduce(values: Sequence[Sequence[float]]) -> tuple[list[list[float]], list[int]]:
    """All-reduce (sum) ``values[w]`` over workers ``w`` round a ring; return (each worker's result, values sent).

    Each worker's list is cut into N chunks. Reduce-scatter: in step t, worker w sends chunk (w - t) mod N
    to worker w + 1, which adds it to its own; after N - 1 steps worker w owns the full sum of chunk
    (w + 1) mod N. All-gather: N - 1 more steps pass the finished chunks on, each receiver overwriting its copy.
    """
    n = len(values)
    if n < 1:
        raise ValueError("simulate_ring_all_reduce needs at least one worker's values.")
    length = len(values[0])
    if any(len(v) != length for v in values):
        raise ValueError(f"every worker must hold the same number of values, got {[len(v) for v in values]}.")
    data = [list(map(float, v)) for v in values]
    chunks = _chunk_bounds(length, n)
    sent = [0] * n
    for phase in ("reduce-scatter", "all-gather"):
        for t in range(n - 1):
            offset = t if phase == "reduce-scatter" else t - 1
            # every worker sends at the same time: read all messages before anyone writes
            messages = []
            for w in range(n):
                lo, hi = chunks[(w - offset) % n]
                messages.append(((w + 1) % n, lo, data[w][lo:hi]))
                sent[w] += hi - lo
            for receiver, lo, chunk in messages:
                for j, value in enumerate(chunk):
                    if phase == "reduce-scatter":
                        data[receiver][lo + j] += value
                    else:
                        data[receiver][lo + j] = value
    return data, sent


def average_gradients(per_worker_grads: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """What all-reduce + divide gives every worker: the mean over workers of each parameter's gradient.

    ``per_worker_grads[w][i]`` is worker ``w``'s gradient of parameter ``i``; returns one list of tensors.
    """
    if len(per_worker_grads) == 0:
        raise ValueError("average_gradients needs the gradients of at least one worker.")
    counts = {len(grads) for grads in per_worker_grads}
    if len(counts) != 1:
        raise ValueError(f"every worker must hold one gradient per parameter; the workers hold {sorted(counts)}.")
    averaged = []
    for i, same_param in enumerate(zip(*per_worker_grads)):
        shapes = {tuple(g.shape) for g in same_param}
        if len(shapes) != 1:
            raise ValueError(f"parameter {i} has gradients of different shapes on different workers: {shapes}.")
        total = torch.zeros_like(same_param[0])
        for g in same_param:
            total = total + g
        averaged.append(total / len(per_worker_grads))
    return averaged
