"""Chapter 10: interleaved 1F1B against its closed form and PyTorch's own order; PipeDream's weight versions."""
from __future__ import annotations

from itertools import pairwise

import pytest

from llmcourse.parallel import interleaved, plots, weight_stashing
from llmcourse.parallel.schedule import bubble_share, gpipe_bubble, order, peak_activations, simulate


def _torch_interleaved_order(p, v, m):
    schedules = pytest.importorskip("torch.distributed.pipelining.schedules")
    reference = schedules.ScheduleInterleaved1F1B.__new__(schedules.ScheduleInterleaved1F1B)
    reference.pp_group_size, reference.n_local_stages, reference._n_microbatches = p, v, m
    reference._num_stages = p * v
    reference.number_of_rounds = max(1, m // p)
    reference.microbatches_per_round = m // reference.number_of_rounds
    out = []
    for rank in range(p):
        reference.rank = rank
        try:
            actions = reference._calculate_single_rank_operations(rank)
        except AttributeError:  # a private helper that other PyTorch releases may lack
            pytest.skip("this PyTorch has no ScheduleInterleaved1F1B._calculate_single_rank_operations")
        out.append([(str(a.computation_type.value), a.microbatch_index, a.stage_index // p)
                    for a in actions if a is not None])
    return out


@pytest.mark.parametrize("p,v,m", [(2, 2, 4), (4, 2, 8), (3, 3, 6), (4, 3, 12), (5, 1, 10)])
def test_order_is_pytorchs_interleaved_1f1b(p, v, m):
    assert [interleaved.order(p, v, m, d) for d in range(p)] == _torch_interleaved_order(p, v, m)
    for d in range(p):  # stage index k = chunk * p + device, so device d's chunks are d, d + p, ...
        assert {chunk for _, _, chunk in interleaved.order(p, v, m, d)} == set(range(v))


def test_measured_bubble_is_the_closed_form():
    for p in range(1, 7):
        for v in range(1, 5):
            for m in range(p, 4 * p + 1, p):
                for f, b in [(1, 2), (1, 1), (2, 3)]:
                    ops = interleaved.simulate(p, v, m, f, b)
                    assert bubble_share(ops) == pytest.approx((p - 1) / (v * m + p - 1), abs=1e-12)
                    assert interleaved.interleaved_bubble(p, m, v) == pytest.approx(bubble_share(ops), abs=1e-12)


def test_one_chunk_has_plain_1f1bs_step_length_and_bubble():
    # with v = 1 Megatron's order warms up with 2 (p - d - 1) forwards instead of p - d - 1: same step, same bubble
    for p, m in [(4, 8), (3, 6), (2, 2)]:
        ops, plain = interleaved.simulate(p, 1, m), simulate("1f1b", p, m)
        assert max(o.end for o in ops) == max(o.end for o in plain)
        assert bubble_share(ops) == pytest.approx(bubble_share(plain), abs=1e-12)
        assert interleaved.interleaved_bubble(p, m, 1) == gpipe_bubble(p, m)


def test_dependencies_hold_and_each_device_runs_one_pass_at_a_time():
    p, v, m = 4, 3, 8
    ops = interleaved.simulate(p, v, m)
    assert len(ops) == 2 * p * v * m
    end = {(o.kind, o.chunk * p + o.stage, o.microbatch): o.end for o in ops}
    assert len(end) == len(ops)
    for o in ops:
        k = o.chunk * p + o.stage
        if o.kind == "F" and k > 0:
            assert o.start >= end[("F", k - 1, o.microbatch)]
        if o.kind == "B":
            assert o.start >= end[("F", k, o.microbatch)]
            if k < p * v - 1:
                assert o.start >= end[("B", k + 1, o.microbatch)]
    for d in range(p):
        mine = sorted((o for o in ops if o.stage == d), key=lambda o: o.start)
        assert all(a.end <= b.start for a, b in pairwise(mine))
    assert interleaved.chunk_of(ops[:1]) == [ops[0].chunk] and interleaved.chunk_of(simulate("1f1b", 2, 2)) == [0] * 8


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of n_devices"):
        interleaved.order(4, 2, 6, 0)
    with pytest.raises(ValueError, match="device"):
        interleaved.order(4, 2, 8, 4)
    with pytest.raises(ValueError, match="deadlock"):
        interleaved.run_orders([[("B", 0, 0), ("F", 0, 0)]], 1)
    with pytest.raises(ValueError, match="equal chunks"):
        interleaved.layers_of_chunks(10, 4, 2)


def test_layers_of_chunks_cover_every_layer_once():
    layout = interleaved.layers_of_chunks(16, 4, 2)
    assert layout[0] == [[0, 1], [8, 9]] and layout[3] == [[6, 7], [14, 15]]
    assert sorted(layer for device in layout for chunk in device for layer in chunk) == list(range(16))


def test_plot_draws_chunks():
    fig = plots.plot_schedule(interleaved.simulate(4, 2, 8), title="interleaved")
    assert fig.axes[0].get_title().endswith(f"bubble {interleaved.interleaved_bubble(4, 8, 2):.1%} of device time")


def test_weight_versions_follow_the_1f1b_order():
    p, m = 4, 12
    table = weight_stashing.weight_versions(p, m)
    for s, rows in enumerate(table):
        for row in rows:
            # version = updates (backward passes) the stage ran before the pass, counted straight from the order
            steps = order("1f1b", p, m, s)
            assert row.forward == sum(kind == "B" for kind, _ in steps[:steps.index(("F", row.microbatch))])
            assert row.current_at_backward == row.microbatch
            assert row.forward == max(0, row.microbatch - (p - s - 1))
        assert max(r.staleness for r in rows) == p - s - 1
    assert all(r.staleness == 0 for r in table[-1])  # the last stage runs each backward right after its forward


def test_stash_sizes():
    for p, m in [(4, 8), (8, 32), (3, 6)]:
        assert weight_stashing.stash_sizes(p, m) == [p - s for s in range(p)]
        assert weight_stashing.stash_sizes(p, m) == peak_activations(simulate("1f1b", p, m))
    assert weight_stashing.stash_sizes(4, 2) == [2, 2, 2, 1]
