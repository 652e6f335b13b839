"""Chapter 10: train a tiny model for a few steps with one parallel scheme, and check it against one process.

Run it with any launcher; every rank prints its own lines::

    torchrun --nproc_per_node 2 -m llmcourse.parallel.demo --scheme dp
    accelerate launch --cpu --num_processes 2 -m llmcourse.parallel.demo --scheme pp
    python -m llmcourse.parallel.demo --scheme tp --nproc 2      # starts the processes itself

Schemes: ``dp`` (data parallel, gradients all-reduced by hand), ``pp`` (pipeline, 1F1B
schedule), ``tp`` (tensor-parallel MLP), ``zero`` (ZeRO-1 sharded AdamW). Each rank
also trains the same model in the ordinary single-process way and prints how far
its parameters are from that reference (zero up to rounding).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.feedforward import FeedForward
from llmcourse.parallel.data_parallel import allreduce_gradients, shard_batch
from llmcourse.parallel.launch import exit_launched_process, init_from_env, rank_device, run_parallel
from llmcourse.parallel.pipeline import pipeline_step, split_into_stages
from llmcourse.parallel.tensor_parallel import ParallelMLP
from llmcourse.parallel.zero import ZeroOptimizer, optimizer_state_bytes

SCHEMES = ("dp", "pp", "tp", "zero")
WIDTH = 16


def _batch(step: int, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)  # the same batch on every rank
    x = torch.randn(size, WIDTH, generator=generator)
    return x.to(device), torch.sin(2 * x).to(device)


def _layers(n_layers: int, device: torch.device) -> nn.Sequential:
    torch.manual_seed(0)  # the same starting weights on every rank
    return nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU()) for _ in range(n_layers)]).to(device)


def _reference_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    optimizer.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _max_diff(got: list[Tensor], expected: list[Tensor]) -> float:
    return max(float((g.detach() - e.detach()).abs().max()) for g, e in zip(got, expected))


def run_scheme(scheme: str, steps: int = 3, verbose: bool = True) -> dict:
    """Train for ``steps`` steps with ``scheme`` on this rank; return its losses and distance from one process."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = rank_device()
    batch_size = 8 * world
    losses, extra = [], {}
    if scheme in ("dp", "zero"):
        model = _layers(4, device)
        reference = copy.deepcopy(model)
        if scheme == "dp":
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
        else:
            optimizer = ZeroOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-2, weight_decay=0.1)
            ref_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
        for step in range(steps):
            x, y = _batch(step, batch_size, device)
            x_mine, y_mine = shard_batch((x, y))
            optimizer.zero_grad()
            loss = F.mse_loss(model(x_mine), y_mine)
            loss.backward()
            if scheme == "dp":
                allreduce_gradients(model)
            optimizer.step()
            losses.append(_reference_step(reference, ref_optimizer, x, y))
        diff = _max_diff(list(model.parameters()), list(reference.parameters()))
        if scheme == "zero":
            extra = {"state_bytes": optimizer.state_bytes(),
                     "unsharded_state_bytes": optimizer_state_bytes(ref_optimizer)}
    elif scheme == "pp":
        model = _layers(2 * world, device)
        reference = copy.deepcopy(model)
        stage = split_into_stages(list(model), world)[rank]
        optimizer = torch.optim.SGD(stage.parameters(), lr=0.1)
        ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
        for step in range(steps):
            x, y = _batch(step, batch_size, device)
            optimizer.zero_grad()
            result = pipeline_step(stage, x, y, F.mse_loss, n_microbatches=4, schedule="1f1b")
            optimizer.step()
            losses.append(result.loss.item())
            _reference_step(reference, ref_optimizer, x, y)
        mine = split_into_stages(list(reference), world)[rank]
        diff = _max_diff(list(stage.parameters()), list(mine.parameters()))
    else:  # tp
        torch.manual_seed(0)
        dense = FeedForward(WIDTH, 4 * WIDTH).to(device)
        model = ParallelMLP.from_dense(dense, rank, world)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        ref_optimizer = torch.optim.SGD(dense.parameters(), lr=0.1)
        for step in range(steps):
            x, y = _batch(step, batch_size, device)
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            _reference_step(dense, ref_optimizer, x, y)
        diff = _max_diff(list(model.parameters()), list(ParallelMLP.from_dense(dense, rank, world).parameters()))
    if verbose:
        text = ", ".join(f"{loss:.4f}" for loss in losses)
        line = f"[rank {rank}/{world}] {scheme}: losses {text}; max |parameter - one process| = {diff:.1e}"
        if extra:
            line += f"; optimizer state {extra['state_bytes']} bytes (unsharded {extra['unsharded_state_bytes']})"
        sys.stdout.write(line + "\n")  # one write, so the ranks' lines do not interleave mid-line
        sys.stdout.flush()
    return {"rank": rank, "losses": losses, "max_diff": diff, **extra}


def main(argv: list[str] | None = None) -> list[dict] | dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheme", choices=SCHEMES, default="dp")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2, help="processes to start when no launcher started us")
    args = parser.parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun / accelerate launch
        init_from_env()
        try:
            return run_scheme(args.scheme, args.steps)
        finally:
            dist.destroy_process_group()
    return run_parallel(run_scheme, world_size=args.nproc, args=(args.scheme, args.steps))


if __name__ == "__main__":
    main()
    if "RANK" in os.environ:  # started by a launcher: leave without gloo's shutdown race
        exit_launched_process(0)
