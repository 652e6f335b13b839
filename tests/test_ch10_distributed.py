"""Chapter 10: the parallel schemes run for real, two CPU processes talking through torch.distributed (gloo).

Process start is slow (each process imports torch), so one process group runs every scheme and returns its
results; the parent process then compares them with ordinary single-process training computed here.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmcourse.transformer.attention import MultiHeadAttention
from llmcourse.transformer.feedforward import FeedForward
from llmcourse.parallel import schedule
from llmcourse.parallel.data_parallel import allreduce_gradients, broadcast_parameters, shard_batch
from llmcourse.parallel.launch import ParallelError, free_port, notebook_launch, run_parallel
from llmcourse.parallel.pipeline import pipeline_step, split_into_stages
from llmcourse.parallel.tensor_parallel import (
    ColumnParallelLinear,
    ParallelMLP,
    ParallelSelfAttention,
    RowParallelLinear,
)
from llmcourse.parallel.zero import ZeroOptimizer, optimizer_state_bytes

WORLD = 2
WIDTH = 8
BATCH = 8
ZERO_STEPS = 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- models and data, same in every process


def _mlp(n_layers: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU()) for _ in range(n_layers)])


def _data(seed: int = 1, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, WIDTH, generator=g)
    return x, torch.randn(batch, WIDTH, generator=g)


def _tp_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(2, 5, WIDTH, generator=g), torch.randn(2, 5, WIDTH, generator=g)


def _dense_ffn() -> FeedForward:
    torch.manual_seed(3)
    return FeedForward(WIDTH, 4 * WIDTH)


def _dense_attention(n_kv_heads: int) -> MultiHeadAttention:
    torch.manual_seed(4)
    return MultiHeadAttention(WIDTH, 4, n_kv_heads=n_kv_heads, bias=True)


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


# --------------------------------------------------------------------------- what each rank runs


def _every_scheme() -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    out: dict = {}
    x, y = _data()

    # data parallel by hand: my half of the batch, gradients averaged, one SGD step
    model = _mlp()
    broadcast_parameters(model)
    xm, ym = shard_batch((x, y))
    F.mse_loss(model(xm), ym).backward()
    allreduce_gradients(model)
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    out["dp_hand"] = [p.detach().clone() for p in model.parameters()]

    # the same with DistributedDataParallel
    ddp = nn.parallel.DistributedDataParallel(_mlp())
    F.mse_loss(ddp(xm), ym).backward()
    torch.optim.SGD(ddp.parameters(), lr=0.5).step()
    out["dp_ddp"] = [p.detach().clone() for p in ddp.module.parameters()]

    # pipeline: 4 layers, 2 stages, 4 micro-batches, every schedule
    stage = split_into_stages(list(_mlp()), world)[rank]
    for name in schedule.SCHEDULES:
        stage.zero_grad()
        step = pipeline_step(stage, x if rank == 0 else None, y if rank == world - 1 else None, F.mse_loss,
                             n_microbatches=4, schedule=name)
        out[f"pp_{name}"] = {"loss": step.loss, "grads": _grads(stage),
                             "order": [(op.kind, op.microbatch) for op in step.ops],
                             "times_ok": all(0 <= op.start <= op.end for op in step.ops)}

    # tensor parallel: MLP and attention (plain and grouped-query), forward and backward
    tx, tc = _tp_inputs()
    for name, layer, kwargs in [("mlp", ParallelMLP.from_dense(_dense_ffn(), rank, world), {}),
                                ("attn", ParallelSelfAttention.from_dense(_dense_attention(4), rank, world),
                                 {"is_causal": True}),
                                ("gqa", ParallelSelfAttention.from_dense(_dense_attention(2), rank, world),
                                 {"is_causal": True})]:
        xin = tx.clone().requires_grad_()
        result = layer(xin, **kwargs)
        (result * tc).sum().backward()
        out[f"tp_{name}"] = {"out": result, "x_grad": xin.grad,
                             "grads": {n: p.grad.clone() for n, p in layer.named_parameters()}}

    # ZeRO-1: our sharded AdamW, and torch's ZeroRedundancyOptimizer after gradients averaged by hand
    for name in ("zero_ours", "zero_torch"):
        model = _mlp()
        if name == "zero_ours":
            optimizer = ZeroOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-2, weight_decay=0.1)
        else:
            from torch.distributed.optim import ZeroRedundancyOptimizer
            optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=1e-2,
                                                weight_decay=0.1)
        for i in range(ZERO_STEPS):
            xs, ys = shard_batch(_data(seed=10 + i))
            optimizer.zero_grad()
            F.mse_loss(model(xs), ys).backward()
            if name == "zero_torch":
                allreduce_gradients(model)
            optimizer.step()
        state = optimizer.state_bytes() if name == "zero_ours" else optimizer_state_bytes(optimizer.optim)
        out[name] = {"params": [p.detach().clone() for p in model.parameters()], "state_bytes": state}
    return out


def _exit_mid_step() -> None:
    t = torch.ones(3)
    if dist.get_rank() == 1:
        os._exit(7)  # dies without a word while rank 0 waits in the all-reduce
    dist.all_reduce(t)


def _raise_mid_step() -> None:
    t = torch.ones(3)
    if dist.get_rank() == 1:
        raise ValueError("rank one fails on purpose")
    dist.all_reduce(t)


def _hang() -> None:
    if dist.get_rank() == 1:
        time.sleep(60)  # never joins the collective
    dist.all_reduce(torch.ones(1))


@pytest.fixture(scope="module")
def results() -> list[dict]:
    return run_parallel(_every_scheme, world_size=WORLD, backend="gloo", timeout_s=120)


# --------------------------------------------------------------------------- data parallel


def _sgd_reference(lr: float = 0.5) -> list[torch.Tensor]:
    model = _mlp()
    x, y = _data()
    F.mse_loss(model(x), y).backward()
    torch.optim.SGD(model.parameters(), lr=lr).step()
    return [p.detach() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["dp_hand", "dp_ddp"])
def test_data_parallel_equals_one_process_with_the_whole_batch(results, kind):
    expected = _sgd_reference()
    before = [p.detach() for p in _mlp().parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(expected, before))  # the step changed something
    for rank in range(WORLD):
        for got, want in zip(results[rank][kind], expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_shard_batch_slices_and_rejects_uneven_batches():
    x, y = _data(batch=6)
    pieces = [shard_batch((x, y), rank=r, world_size=3) for r in range(3)]
    torch.testing.assert_close(torch.cat([p[0] for p in pieces]), x, rtol=0, atol=0)
    assert isinstance(pieces[0], tuple) and pieces[1][1].shape == (2, WIDTH)
    with pytest.raises(ValueError, match="cannot be split evenly over 4"):
        shard_batch(x, rank=0, world_size=4)
    with pytest.raises(ValueError, match="same first dimension"):
        shard_batch((x, y[:4]), rank=0, world_size=2)


# --------------------------------------------------------------------------- pipeline


def test_split_into_stages_balances_and_checks():
    layers = [nn.Linear(2, 2) for _ in range(5)]
    stages = split_into_stages(layers, 3)
    assert [len(s) for s in stages] == [2, 2, 1]
    assert [m for s in stages for m in s] == layers  # same modules, same order, no copies
    with pytest.raises(ValueError, match="cannot cut 5 layers into 6 stages"):
        split_into_stages(layers, 6)
    with pytest.raises(ValueError):
        split_into_stages(layers, 0)


@pytest.mark.parametrize("name", schedule.SCHEDULES)
def test_pipeline_schedules_give_the_single_process_loss_and_gradients(results, name):
    model = _mlp()
    x, y = _data()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    layers = list(model)
    expected_grads = [_grads(nn.Sequential(*layers[:2])), _grads(nn.Sequential(*layers[2:]))]
    for rank in range(WORLD):
        got = results[rank][f"pp_{name}"]
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-7)
        for g, want in zip(got["grads"], expected_grads[rank]):
            torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-7)
        # the executed order is the simulator's order
        assert got["order"] == schedule.order(name, WORLD, 4, rank)
        assert got["times_ok"]


# --------------------------------------------------------------------------- tensor parallel


def _check_tp(results, key: str, dense: nn.Module, forward, expected_grads) -> None:
    """Each rank's output and input gradient equal the dense layer's; its weight gradients are the matching
    slices of the dense gradients (``expected_grads(rank)``, read after the dense backward)."""
    tx, tc = _tp_inputs()
    xin = tx.clone().requires_grad_()
    want = forward(dense, xin)
    (want * tc).sum().backward()
    for rank in range(WORLD):
        got = results[rank][key]
        torch.testing.assert_close(got["out"], want.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["x_grad"], xin.grad, rtol=1e-5, atol=1e-6)
        expected = expected_grads(rank)
        assert set(got["grads"]) == set(expected)
        for name, grad in expected.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {name}")


def _rows(t: torch.Tensor, rank: int, parts: int = WORLD) -> torch.Tensor:
    k = t.shape[0] // parts
    return t[rank * k:(rank + 1) * k]


def test_parallel_mlp_forward_and_backward_equal_the_dense_mlp(results):
    dense = _dense_ffn()
    _check_tp(results, "tp_mlp", dense, lambda m, x: m(x), lambda r: {
        "up.weight": _rows(dense.up.weight.grad, r),          # column parallel: rows of (out, in)
        "up.bias": _rows(dense.up.bias.grad, r),
        "down.weight": _rows(dense.down.weight.grad.T, r).T,  # row parallel: columns of (out, in)
        "down.bias": dense.down.bias.grad,                    # replicated: the full gradient on every rank
    })


@pytest.mark.parametrize("n_kv_heads,key", [(4, "tp_attn"), (2, "tp_gqa")])
def test_parallel_attention_forward_and_backward_equal_the_dense_layer(results, n_kv_heads, key):
    dense = _dense_attention(n_kv_heads)
    projections = (dense.q_proj, dense.k_proj, dense.v_proj)
    _check_tp(results, key, dense, lambda m, x: m(x, is_causal=True), lambda r: {
        # this rank's heads: its rows of W_q, W_k, W_v, stacked, and its columns of W_o
        "qkv.weight": torch.cat([_rows(p.weight.grad, r) for p in projections]),
        "qkv.bias": torch.cat([_rows(p.bias.grad, r) for p in projections]),
        "o_proj.weight": _rows(dense.o_proj.weight.grad.T, r).T,
        "o_proj.bias": dense.o_proj.bias.grad,
    })


def test_tensor_parallel_shards_add_up_in_one_process():
    torch.manual_seed(0)
    dense_a, dense_b = nn.Linear(6, 8), nn.Linear(8, 5)
    x = torch.randn(3, 6)
    columns = [ColumnParallelLinear.from_dense(dense_a, r, 2)(x) for r in range(2)]
    torch.testing.assert_close(torch.cat(columns, dim=-1), dense_a(x))
    # without a process group g does not add: each rank's output is its partial sum plus the bias
    rows = [RowParallelLinear.from_dense(dense_b, r, 2)(columns[r]) - dense_b.bias for r in range(2)]
    torch.testing.assert_close(rows[0] + rows[1] + dense_b.bias, dense_b(dense_a(x)))


def test_tensor_parallel_rejects_sizes_the_world_does_not_divide():
    with pytest.raises(ValueError, match="out_features = 10 cannot be split evenly over 4"):
        ColumnParallelLinear(8, 10, world=4)
    with pytest.raises(ValueError, match="in_features = 6 cannot be split evenly over 4"):
        RowParallelLinear(6, 8, world=4)
    with pytest.raises(ValueError, match="n_heads = 2 cannot be split evenly over 4"):
        ParallelSelfAttention(8, 2, world=4)
    with pytest.raises(ValueError, match="rank"):
        ParallelMLP.from_dense(_dense_ffn(), rank=2, world=2)


# --------------------------------------------------------------------------- ZeRO


@pytest.mark.parametrize("name", ["zero_ours", "zero_torch"])
def test_zero_equals_unsharded_adamw_and_halves_the_state(results, name):
    model = _mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for i in range(ZERO_STEPS):
        x, y = _data(seed=10 + i)
        optimizer.zero_grad()
        F.mse_loss(model(x), y).backward()
        optimizer.step()
    # unsharded AdamW state, counted directly: two fp32 moments per parameter plus a step counter per tensor
    params = list(model.parameters())
    full = sum(2 * 4 * p.numel() + optimizer.state[p]["step"].element_size() for p in params)
    for rank in range(WORLD):
        for got, want in zip(results[rank][name]["params"], params):
            torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    shares = [results[rank][name]["state_bytes"] for rank in range(WORLD)]
    assert sum(shares) == full
    assert max(shares) <= 0.6 * full


# --------------------------------------------------------------------------- launching and failing


def test_a_rank_that_dies_stops_the_run_with_a_clear_error():
    start = time.monotonic()
    with pytest.raises(ParallelError, match="rank 1 exited with code 7") as info:
        run_parallel(_exit_mid_step, world_size=2, backend="gloo", timeout_s=20)
    assert info.value.rank == 1
    assert time.monotonic() - start < 20


def test_a_rank_that_raises_is_named_with_its_error():
    with pytest.raises(ParallelError, match="rank 1 raised ValueError: rank one fails on purpose") as info:
        run_parallel(_raise_mid_step, world_size=2, backend="gloo", timeout_s=20)
    assert "Traceback" in str(info.value)


def test_a_run_that_hangs_is_stopped_after_the_timeout():
    start = time.monotonic()
    with pytest.raises(ParallelError, match="did not finish within timeout_s=4"):
        run_parallel(_hang, world_size=2, backend="gloo", timeout_s=4)
    assert time.monotonic() - start < 15


def test_run_parallel_needs_an_importable_function():
    with pytest.raises(TypeError, match="top-level function"):
        run_parallel(lambda: 0, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        run_parallel(_hang, world_size=0)


def _notebook_demo() -> list:
    from llmcourse.parallel.demo import run_scheme
    return [run_scheme(s, steps=2, verbose=False) for s in ("dp", "pp", "tp", "zero")]


def test_notebook_launch_forks_processes_that_train_like_one():
    per_rank = notebook_launch(_notebook_demo, world_size=2)
    assert len(per_rank) == 2
    for rank, runs in enumerate(per_rank):
        for run in runs:
            assert run["rank"] == rank
            assert run["max_diff"] < 1e-5
            assert len(run["losses"]) == 2
    zero = per_rank[0][3]
    assert zero["state_bytes"] < 0.6 * zero["unsharded_state_bytes"]


def test_notebook_launch_reports_the_failing_rank():
    with pytest.raises(ParallelError, match="rank 1 raised ValueError"):
        notebook_launch(_raise_mid_step, world_size=2, timeout_s=20)


def test_demo_runs_under_torchrun():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "llmcourse.parallel.demo", "--scheme", "dp", "--steps", "2"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:  # stop torchrun and the workers it started
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    lines = sorted(line for line in stdout.splitlines() if re.match(r"\[rank \d/2\] ", line))
    assert [line[:11] for line in lines] == ["[rank 0/2] ", "[rank 1/2] "], stdout[-2000:]
    for line in lines:
        assert float(line.rsplit("= ", 1)[1]) < 1e-5


def _rank_and_world() -> tuple[int, int]:
    return dist.get_rank(), dist.get_world_size()


def test_notebook_launch_works_after_this_process_used_accelerate():
    """A notebook that already asked accelerate for its device (or trained in chapter 08) can still launch."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    accelerator = Accelerator(cpu=True)
    assert notebook_launch(_rank_and_world, 2, timeout_s=60) == [(0, 2), (1, 2)]
    assert AcceleratorState._shared_state and accelerator.device.type == "cpu"  # put back afterwards
