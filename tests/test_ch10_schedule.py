"""Chapter 10: the pipeline schedule simulator against closed forms, PyTorch's own 1F1B order and the source's example."""
from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.parallel import plots
from llmcourse.parallel.schedule import (
    bubble_share,
    gpipe_bubble,
    idle_time,
    makespan,
    order,
    peak_activations,
    run_orders,
    simulate,
)

sizes = st.integers(min_value=1, max_value=8)
times = st.integers(min_value=1, max_value=5)


def assert_dependencies_hold(ops, n_stages, n_microbatches):
    """Every rule of a pipeline, checked directly on the timed passes."""
    end = {(op.kind, op.stage, op.microbatch): op.end for op in ops}
    assert len(end) == len(ops) == 2 * n_stages * n_microbatches  # each pass exactly once
    for op in ops:
        if op.kind == "F" and op.stage > 0:
            assert op.start >= end[("F", op.stage - 1, op.microbatch)]
        if op.kind == "B":
            assert op.start >= end[("F", op.stage, op.microbatch)]
            if op.stage < n_stages - 1:
                assert op.start >= end[("B", op.stage + 1, op.microbatch)]
    for s in range(n_stages):  # one pass at a time per device
        mine = sorted((op for op in ops if op.stage == s), key=lambda op: op.start)
        assert all(a.end <= b.start for a, b in pairwise(mine))


@settings(max_examples=60, deadline=None)
@given(p=sizes, m=sizes, f=times, b=times, schedule=st.sampled_from(["naive", "gpipe", "1f1b"]))
def test_dependencies_hold(p, m, f, b, schedule):
    assert_dependencies_hold(simulate(schedule, p, m, f, b), p, m)


@settings(max_examples=80, deadline=None)
@given(p=sizes, m=sizes, f=times, b=times)
def test_gpipe_and_1f1b_bubbles_equal_the_closed_form_for_balanced_stages(p, m, f, b):
    """Condition: every stage takes the same forward time f and the same backward time b (any ratio b / f)."""
    expected = (p - 1) / (m + p - 1)
    assert bubble_share(simulate("gpipe", p, m, f, b)) == pytest.approx(expected, abs=1e-12)
    assert bubble_share(simulate("1f1b", p, m, f, b)) == pytest.approx(expected, abs=1e-12)
    assert gpipe_bubble(p, m) == pytest.approx(expected, abs=1e-15)
    assert makespan(simulate("gpipe", p, m, f, b)) == (m + p - 1) * (f + b)


@settings(max_examples=40, deadline=None)
@given(p=sizes, m=sizes, f=times, b=times)
def test_naive_model_parallelism_idles_all_but_one_device(p, m, f, b):
    ops = simulate("naive", p, m, f, b)
    assert bubble_share(ops) == pytest.approx((p - 1) / p, abs=1e-12)
    assert makespan(ops) == m * p * (f + b)


def test_gpipe_start_times_follow_the_staircase():
    p, m, f, b = 4, 5, 1, 2
    for op in simulate("gpipe", p, m, f, b):
        if op.kind == "F":
            assert op.start == (op.stage + op.microbatch) * f
        else:  # backwards run in reverse micro-batch order, from the last stage down
            assert op.start == (m + p - 1) * f + ((m - 1 - op.microbatch) + (p - 1 - op.stage)) * b


def test_unbalanced_stages_break_the_formula():
    ops = simulate("gpipe", 4, 4, forward_time=[1, 1, 3, 1], backward_time=[2, 2, 6, 2])
    assert_dependencies_hold(ops, 4, 4)
    assert bubble_share(ops) > gpipe_bubble(4, 4) + 0.05  # the slow stage sets the pace


def test_source_example_four_devices_four_microbatches():
    """The Datawhale article's pipeline picture: 4 devices, 4 micro-batches; it says each device waits 6 of 14 time steps, 42%."""
    ops = simulate("gpipe", 4, 4, forward_time=1, backward_time=1)  # the figure draws F and B equally wide
    assert makespan(ops) == 14
    assert idle_time(ops) == [6, 6, 6, 6]  # exactly 6 on every device, not "at least"
    assert bubble_share(ops) == pytest.approx(6 / 14)  # 42.86 %: the source truncates to 42 %
    ops = simulate("gpipe", 4, 4, forward_time=1, backward_time=2)  # the same share when B takes twice as long
    assert bubble_share(ops) == pytest.approx(3 / 7)
    assert bubble_share(simulate("naive", 4, 4, 1, 1)) == pytest.approx(0.75)  # figure 38: plain model parallelism


@pytest.mark.parametrize("p,m", [(2, 2), (4, 4), (4, 6), (5, 12), (8, 8), (3, 17)])
def test_1f1b_order_matches_pytorch(p, m):
    schedules = pytest.importorskip("torch.distributed.pipelining.schedules")
    reference = schedules.Schedule1F1B.__new__(schedules.Schedule1F1B)
    reference._num_stages, reference._n_microbatches = p, m
    try:
        pipeline = reference._get_pipeline_order()
    except AttributeError:  # a private helper that other PyTorch releases may lack
        pytest.skip("this PyTorch has no Schedule1F1B._get_pipeline_order")
    for stage in range(p):
        theirs = [(str(a.computation_type.value), a.microbatch_index) for a in pipeline[stage]
                  if a is not None and a.computation_type.value in ("F", "B")]
        ours = order("1f1b", p, m, stage)
        if stage < p - 1:
            assert ours == theirs
        else:  # PyTorch 2.13's descriptive order numbers the last stage's forwards 1..m (a slip); compare kinds
            assert [kind for kind, _ in ours] == [kind for kind, _ in theirs] == ["F", "B"] * m


def test_gpipe_backward_order_does_not_change_the_timing():
    """PyTorch's ScheduleGPipe runs backwards in forward order; GPipe's paper (and the source) in reverse."""
    p, m = 4, 6
    forward_first = [[("F", i) for i in range(m)] + [("B", i) for i in range(m)] for _ in range(p)]
    assert makespan(run_orders(forward_first, 1, 2)) == makespan(simulate("gpipe", p, m, 1, 2))


def test_1f1b_holds_fewer_activations_than_gpipe():
    for p, m in [(4, 4), (4, 16), (8, 32), (3, 2)]:
        gpipe = peak_activations(simulate("gpipe", p, m))
        one_f_one_b = peak_activations(simulate("1f1b", p, m))
        assert gpipe == [m] * p
        assert one_f_one_b == [min(p - s, m) for s in range(p)]
        assert max(one_f_one_b) <= p
    assert peak_activations(simulate("naive", 4, 8)) == [1] * 4


def test_1f1b_phases():
    assert order("1f1b", 4, 6, 0) == [("F", 0), ("F", 1), ("F", 2), ("F", 3), ("B", 0), ("F", 4), ("B", 1),
                                      ("F", 5), ("B", 2), ("B", 3), ("B", 4), ("B", 5)]
    last = order("1f1b", 4, 3, 3)
    assert last == [("F", 0), ("B", 0), ("F", 1), ("B", 1), ("F", 2), ("B", 2)]
    assert order("gpipe", 3, 3, 1) == [("F", 0), ("F", 1), ("F", 2), ("B", 2), ("B", 1), ("B", 0)]


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="n_stages"):
        simulate("gpipe", 0, 4)
    with pytest.raises(ValueError, match="n_microbatches"):
        simulate("1f1b", 4, 0)
    with pytest.raises(ValueError, match="n_microbatches"):
        gpipe_bubble(4, -1)
    with pytest.raises(ValueError, match="schedule"):
        order("zigzag", 2, 2, 0)
    with pytest.raises(ValueError, match="stage"):
        order("gpipe", 2, 2, 2)
    with pytest.raises(ValueError, match="forward_time"):
        simulate("gpipe", 2, 2, forward_time=0)
    with pytest.raises(ValueError, match="deadlock"):  # stage 0 waits for B0 before running F0 itself
        run_orders([[("B", 0), ("F", 0)], [("F", 0), ("B", 0)]])
    with pytest.raises(ValueError, match="exactly once"):
        run_orders([[("F", 0), ("F", 0)]])
    with pytest.raises(TypeError):
        simulate("gpipe", 2.0, 2)


def test_plots_return_closed_figures():
    import matplotlib.pyplot as plt

    ops = simulate("gpipe", 4, 4, 1, 1)
    fig = plots.plot_schedule(ops, "GPipe")
    assert "42.9%" in fig.axes[0].get_title()
    assert len(fig.axes[0].texts) == len(ops)  # one label per pass
    bubble = plots.plot_bubble((2, 4), 8)
    assert len(bubble.axes[0].get_lines()) == 2
    assert not plt.get_fignums()
