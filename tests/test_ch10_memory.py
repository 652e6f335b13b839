"""Chapter 10: memory per device (vs the ZeRO paper and real optimizer tensors) and communication volume
(vs a step-by-step ring all-reduce)."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.parallel import plots
from llmcourse.parallel.communication import (
    average_gradients,
    communication_table,
    parameter_server_volume,
    ring_all_reduce_volume,
    simulate_ring_all_reduce,
)
from llmcourse.parallel.memory import (
    GB,
    MODEL_SIZES,
    gpus_needed,
    model_memory,
    resolve_size,
    zero_memory_breakdown,
    zero_memory_per_device,
)

# --------------------------------------------------------------------------- memory


def test_zero_paper_worked_example():
    """Rajbhandari et al. 2020, section 5 / figure 1: 7.5B parameters, N_d = 64, K = 12."""
    got = [zero_memory_per_device(7.5e9, 64, stage) / GB for stage in range(4)]
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_formulas(stage):
    psi, n, k = 3e9, 16, 12
    expected = {0: (2 + 2 + k) * psi, 1: 4 * psi + k * psi / n, 2: 2 * psi + (2 + k) * psi / n,
                3: (2 + 2 + k) * psi / n}[stage]
    assert zero_memory_per_device(psi, n, stage) == pytest.approx(expected)
    assert zero_memory_per_device(psi, 1, stage) == pytest.approx(16 * psi)  # one device: nothing to split
    assert sum(zero_memory_breakdown(psi, n, stage).values()) == pytest.approx(expected)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _adamw_state_tensors(optimizer):
    return [v for state in optimizer.state.values() for key, v in state.items() if key != "step"]


def test_model_memory_counts_real_fp32_adamw_tensors():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 8))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 32)).sum().backward()
    optimizer.step()
    n = sum(p.numel() for p in model.parameters())
    expected = {"parameters": _bytes(model.parameters()), "gradients": _bytes(p.grad for p in model.parameters()),
                "optimizer_states": _bytes(_adamw_state_tensors(optimizer))}
    assert model_memory(n, "fp32", "adamw") == expected


def test_model_memory_counts_real_mixed_precision_tensors():
    """fp16 weights and gradients; AdamW steps an fp32 master copy (which counts as optimizer state)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(48, 24).half()
    master = [p.detach().float().requires_grad_() for p in model.parameters()]
    optimizer = torch.optim.AdamW(master)
    model(torch.randn(4, 48).half()).float().sum().backward()
    for m, p in zip(master, model.parameters()):
        m.grad = p.grad.float()
    optimizer.step()
    n = sum(p.numel() for p in model.parameters())
    expected = {"parameters": _bytes(model.parameters()), "gradients": _bytes(p.grad for p in model.parameters()),
                "optimizer_states": _bytes(master) + _bytes(_adamw_state_tensors(optimizer))}
    assert model_memory(n, "mixed", "adamw") == expected
    momentum = torch.optim.SGD([torch.zeros(10, requires_grad=True)], momentum=0.9)
    momentum.param_groups[0]["params"][0].grad = torch.ones(10)
    momentum.step()
    assert model_memory(10, "fp32", "sgd_momentum")["optimizer_states"] == _bytes(_adamw_state_tensors(momentum))


def test_mixed_precision_alone_saves_no_model_state_memory():
    assert sum(model_memory("7B", "fp32").values()) == sum(model_memory("7B", "mixed").values()) == 16 * 7e9


@pytest.mark.parametrize("model", ["7B", "13B", "70B"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_gpus_needed_is_the_fewest_that_fit(model, stage):
    gpu = 80 * GB
    n = gpus_needed(model, stage, gpu)
    if n is None:  # the unsplit part alone does not fit: even a huge N fails
        assert zero_memory_per_device(model, 10 ** 9, stage) > gpu
    else:
        assert zero_memory_per_device(model, n, stage) <= gpu
        assert n == 1 or zero_memory_per_device(model, n - 1, stage) > gpu


def test_gpus_needed_examples():
    assert gpus_needed("7B", 0) is None  # 112 GB of model states on every device
    assert gpus_needed("7B", 3) == 2
    assert gpus_needed("70B", 3) == 14
    assert gpus_needed(1e9, 0) == 1
    with_activations = gpus_needed("70B", 3, activations=20 * GB)
    assert with_activations > gpus_needed("70B", 3)


def test_memory_bad_input():
    with pytest.raises(ValueError, match="stage"):
        zero_memory_per_device(1e9, 8, 4)
    with pytest.raises(ValueError, match="world_size"):
        zero_memory_per_device(1e9, 0, 1)
    with pytest.raises(ValueError, match="precision"):
        model_memory(1e9, "fp8")
    with pytest.raises(ValueError, match="optimizer"):
        model_memory(1e9, "fp32", "lion")
    with pytest.raises(ValueError, match="model size"):
        resolve_size("8B")
    assert resolve_size("70B") == MODEL_SIZES["70B"] == 70e9


# --------------------------------------------------------------------------- communication


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), length=st.integers(1, 30), seed=st.integers(0, 10 ** 6))
def test_ring_all_reduce_sums_and_sends_what_the_formula_says(n, length, seed):
    rng = random.Random(seed)
    values = [[rng.randint(-50, 50) for _ in range(length)] for _ in range(n)]
    results, sent = simulate_ring_all_reduce(values)
    total = torch.tensor(values, dtype=torch.float64).sum(0).tolist()
    assert all(result == total for result in results)  # every worker ends with the full sum
    assert sum(sent) == pytest.approx(n * ring_all_reduce_volume(length, n, bytes_per_value=1))
    if length % n == 0:  # equal chunks: every worker sends exactly 2 (N - 1) / N of the values
        assert sent == [ring_all_reduce_volume(length, n, bytes_per_value=1)] * n
    assert max(sent) - min(sent) <= 2 * (n - 1)  # chunk sizes differ by at most one value


def test_ring_does_not_modify_its_input():
    values = [[1.0, 2.0], [3.0, 4.0]]
    simulate_ring_all_reduce(values)
    assert values == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="same number"):
        simulate_ring_all_reduce([[1.0], [1.0, 2.0]])


def test_parameter_server_and_ring_volumes():
    psi, n = 1e6, 8
    server = parameter_server_volume(psi, n, bytes_per_value=4)
    assert server["worker_sent"] == server["worker_received"] == 4 * psi
    assert server["server_sent"] == server["server_received"] == n * 4 * psi
    assert ring_all_reduce_volume(psi, n, 4) == 2 * (n - 1) / n * psi * 4
    assert ring_all_reduce_volume(psi, 1, 4) == 0  # one worker has nobody to talk to
    rows = communication_table(psi, [2, 64], bytes_per_value=1)
    assert [row["ps_server"] for row in rows] == [2 * 2 * psi, 2 * 64 * psi]
    assert all(row["ring_worker"] < 4 * psi for row in rows)
    assert rows[0]["ps_worker"] == 2 * psi


def test_average_gradients_is_the_mean_over_workers():
    torch.manual_seed(0)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    grads = [[torch.randn(shape) for shape in shapes] for _ in range(5)]
    averaged = average_gradients(grads)
    for i, got in enumerate(averaged):
        torch.testing.assert_close(got, torch.stack([worker[i] for worker in grads]).mean(0))
    with pytest.raises(ValueError, match="at least one worker"):
        average_gradients([])
    with pytest.raises(ValueError, match="one gradient per parameter"):
        average_gradients([[torch.ones(2)], [torch.ones(2), torch.ones(2)]])


def test_memory_and_communication_plots():
    import matplotlib.pyplot as plt

    fig = plots.plot_memory(("7B", "70B"), world_size=64)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].patches) == 5 * 4  # five set-ups x four parts
    configs = plots.memory_configurations("7B", 64, batch=1, seq=2048, recompute=True)
    assert configs["ZeRO-3"]["parameters"] == pytest.approx(2 * 7e9 / 64)
    assert configs["fp32"]["activations"] == 32 * 2 * 2048 * 4096  # layer inputs only, 2 bytes each
    comm = plots.plot_comm_volume(7e9, [2, 4, 8])
    assert len(comm.axes[0].get_lines()) == 3
    assert not plt.get_fignums()
