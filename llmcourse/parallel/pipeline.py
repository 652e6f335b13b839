"""Chapter 10: pipeline parallelism, run for real with one process per stage.

The model's layers are cut into consecutive *stages*, one per rank
(:func:`split_into_stages`). A batch is cut into ``m`` micro-batches. For each
micro-batch, stage ``s``

* forward ``F``: receives its input from stage ``s - 1`` (``dist.recv``), runs its
  layers, sends the output on to stage ``s + 1``; the last stage computes the loss;
* backward ``B``: receives the gradient of its output from stage ``s + 1``, runs
  backward through its layers, sends the gradient of its input back to ``s - 1``.

Which ``F`` and ``B`` a stage runs in which order is the *schedule*; this module
takes it from :func:`llmcourse.parallel.schedule.order`, the same function the
simulator uses, so a simulated and an executed step do exactly the same passes:
``"naive"`` (one micro-batch at a time), ``"gpipe"`` (all forwards, then all
backwards) or ``"1f1b"`` (after a short warm-up, one forward then one backward).

Each micro-batch's loss is divided by ``m``, so the gradients summed over the
micro-batches equal the gradients of the whole batch's mean loss: one pipeline
step gives the same gradients as ordinary single-process training.

Sends are non-blocking (``dist.isend``) and receives block: a stage never waits
for its *own* message to be picked up, so no order of passes can deadlock on a
send. Before every tensor goes its shape, so stages need not know each other's
activation shapes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from llmcourse.parallel.schedule import SCHEDULES, Op, order

_MAX_DIMS = 7  # activations with up to 7 dimensions; the shape message has a fixed length


def split_into_stages(layers: Sequence[nn.Module], n_stages: int) -> list[nn.Sequential]:
    """Cut consecutive layers into ``n_stages`` stages of (nearly) equal length; earlier stages get any extra.

    ``layers`` is a list or an ``nn.Sequential``; each layer must map one tensor to one tensor.
    The stages share the layers' parameters (no copies).
    """
    layers = list(layers)
    if isinstance(n_stages, bool) or not isinstance(n_stages, int) or n_stages < 1:
        raise ValueError(f"n_stages must be a whole number >= 1, got {n_stages!r}")
    if n_stages > len(layers):
        raise ValueError(f"cannot cut {len(layers)} layers into {n_stages} stages: every stage needs at least "
                         f"one layer. Use at most {len(layers)} stages (processes) or a deeper model.")
    base, extra = divmod(len(layers), n_stages)
    stages, start = [], 0
    for s in range(n_stages):
        size = base + (1 if s < extra else 0)
        stages.append(nn.Sequential(*layers[start:start + size]))
        start += size
    return stages


# --------------------------------------------------------------------------- point-to-point messages


def _send(tensor: Tensor, dst: int, pending: list) -> None:
    """Start sending ``tensor`` (shape first, then values) to rank ``dst`` without waiting."""
    if tensor.dim() > _MAX_DIMS:
        raise ValueError(f"can only send tensors with at most {_MAX_DIMS} dimensions, got {tensor.dim()}")
    shape = [tensor.dim(), *tensor.shape] + [0] * (_MAX_DIMS - tensor.dim())
    meta = torch.tensor(shape, dtype=torch.int64, device=tensor.device)
    data = tensor.detach().contiguous()
    pending.append((dist.isend(meta, dst), meta))
    pending.append((dist.isend(data, dst), data))  # keep the tensors alive until the send completes


def _recv(src: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Receive one tensor sent by :func:`_send` from rank ``src`` (blocks until it arrives)."""
    meta = torch.empty(_MAX_DIMS + 1, dtype=torch.int64, device=device)
    dist.recv(meta, src)
    ndim = int(meta[0])
    buffer = torch.empty([int(d) for d in meta[1:1 + ndim]], dtype=dtype, device=device)
    dist.recv(buffer, src)
    return buffer


# --------------------------------------------------------------------------- one training step


@dataclass
class PipelineStep:
    """What one pipeline step returns on every rank.

    ``loss``: the whole batch's mean loss (the last stage computes it; it is broadcast to all).
    ``ops``: this stage's passes in the order they ran, as :class:`~llmcourse.parallel.schedule.Op` with measured
    start and end times, in seconds since all ranks left a common barrier (waiting for a message is not part of a
    pass). Pool every rank's ``ops`` to use the schedule module's ``bubble_share`` or plots on a real run.
    """

    loss: Tensor
    ops: list[Op] = field(default_factory=list)


def pipeline_step(stage: nn.Module, inputs: Tensor | None, targets: Tensor | None,
                  loss_fn: Callable[[Tensor, Tensor], Tensor], n_microbatches: int = 4,
                  schedule: str = "1f1b") -> PipelineStep:
    """Run forward and backward of one batch through the pipeline; this rank runs stage ``dist.get_rank()``.

    ``inputs`` (the whole batch) is only read on the first stage and ``targets`` only on the last; other ranks
    may pass ``None``. ``loss_fn(output, target)`` must average over its micro-batch. Afterwards every stage's
    parameters hold (in ``.grad``) the gradient of the whole batch's mean loss; call ``optimizer.step()`` next.
    """
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized: run the pipeline inside run_parallel / "
                           "notebook_launch (llmcourse.parallel.launch) or torchrun, one process per stage.")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    rank, n_stages = dist.get_rank(), dist.get_world_size()
    first, last = rank == 0, rank == n_stages - 1
    param = next(stage.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    micro_inputs = _micro_batches(inputs, n_microbatches, "inputs") if first else None
    micro_targets = _micro_batches(targets, n_microbatches, "targets") if last else None

    held: dict[int, tuple[Tensor | None, Tensor]] = {}  # micro-batch -> (stage input, stage output or loss)
    pending: list = []
    ops: list[Op] = []
    total_loss = torch.zeros((), device=device, dtype=dtype)
    dist.barrier()
    t0 = time.perf_counter()
    for kind, i in order(schedule, n_stages, n_microbatches, rank):
        if kind == "F":
            if first:
                x = micro_inputs[i].to(device)
            else:
                x = _recv(rank - 1, device, dtype).requires_grad_()
            start = _now(t0, device)
            y = stage(x)
            if last:
                y = loss_fn(y, micro_targets[i].to(device)) / n_microbatches
                total_loss += y.detach()
            held[i] = (None if first else x, y)
            end = _now(t0, device)
            if not last:
                _send(y, rank + 1, pending)
        else:
            x, y = held.pop(i)
            grad_y = None if last else _recv(rank + 1, device, dtype)
            start = _now(t0, device)
            torch.autograd.backward(y, grad_y)
            end = _now(t0, device)
            if not first:
                _send(x.grad, rank - 1, pending)
        ops.append(Op(rank, i, kind, start, end))
    for work, _ in pending:
        work.wait()
    dist.broadcast(total_loss, src=n_stages - 1)
    return PipelineStep(loss=total_loss, ops=ops)


def _micro_batches(batch: Tensor | None, n_microbatches: int, name: str) -> list[Tensor]:
    if isinstance(n_microbatches, bool) or not isinstance(n_microbatches, int) or n_microbatches < 1:
        raise ValueError(f"n_microbatches must be a whole number >= 1, got {n_microbatches!r}")
    if not isinstance(batch, Tensor):
        raise TypeError(f"this stage needs {name} (a tensor holding the whole batch), got {type(batch).__name__}")
    if batch.shape[0] % n_microbatches:
        raise ValueError(f"{name} has {batch.shape[0]} examples, which cannot be cut into {n_microbatches} equal "
                         f"micro-batches; use a batch size that is a multiple of n_microbatches")
    return list(batch.chunk(n_microbatches))


def _now(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # GPU work is asynchronous: wait for it before reading the clock
    return time.perf_counter() - t0
