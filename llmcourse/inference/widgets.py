"""Interactive explorer for chapter 11: static against continuous batching on a stream of requests.

:func:`batching_timeline` is the plain function (a Figure, runs headless) over
:func:`llmcourse.inference.batching.simulate`; :func:`batching_explorer` wraps it in sliders for the arrival
rate, the largest batch, the answer lengths and the policy.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from llmcourse.inference.batching import request_stream, simulate

N_REQUESTS = 200
STEP_TIME = (0.02, 0.002)   # seconds per decode step: fixed + per sequence in the batch (the lesson's cost model)
CHOICES = ("both", "static", "continuous")


def timeline_results(rate: float, max_batch: int, shortest: int, longest: int, policy: str = "both",
                     seed: int = 0) -> dict[str, dict]:
    """:func:`simulate` of :data:`N_REQUESTS` seeded requests (``rate`` per second, answers of ``shortest`` to
    ``longest`` tokens) under ``policy`` ("static", "continuous" or "both"), keyed by policy."""
    if policy not in CHOICES:
        raise ValueError(f"policy must be one of {', '.join(map(repr, CHOICES))}; got {policy!r}")
    if not 1 <= shortest <= longest:
        raise ValueError(f"answer lengths need 1 <= shortest <= longest, got shortest={shortest}, longest={longest}")
    if rate <= 0 or max_batch < 1:
        raise ValueError(f"rate must be > 0 and max_batch >= 1, got rate={rate}, max_batch={max_batch}")
    stream = request_stream(N_REQUESTS, rate, shortest, longest, seed)
    policies = ["static", "continuous"] if policy == "both" else [policy]
    return {p: simulate(stream, max_batch, p, STEP_TIME) for p in policies}


def batching_timeline(rate: float = 40.0, max_batch: int = 16, shortest: int = 4, longest: int = 64,
                      policy: str = "both", seed: int = 0) -> Figure:
    """One row per policy: the batch size at every step over time (left) and each request's latency against
    its arrival (right), with the throughput and the mean latency in the titles."""
    results = timeline_results(rate, max_batch, shortest, longest, policy, seed)
    stream = request_stream(N_REQUESTS, rate, shortest, longest, seed)
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 2.3 * len(results)), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1]})
    end = max(max(r["finish"]) for r in results.values())
    top = max(max(r["latency"]) for r in results.values())
    for (left, right), (name, result) in zip(axes, results.items()):
        left.step([t for t, _ in result["timeline"]], [b for _, b in result["timeline"]], where="post")
        left.plot([r.arrival for r in stream], [max_batch + 0.3] * len(stream), "|", color="grey")
        left.set_xlim(0, end)
        left.set_ylim(0, max_batch + 0.8)
        left.set_ylabel("batch")
        left.set_title(f"{name}: {result['throughput']:.0f} tokens/s, {result['steps']} steps", fontsize=10)
        right.plot([r.arrival for r in stream], result["latency"], ".", markersize=3)
        right.set_ylim(0, top * 1.05)
        right.set_ylabel("latency (s)")
        right.set_title(f"mean latency {result['mean_latency']:.2f} s", fontsize=10)
    axes[-1][0].set_xlabel("seconds (grey ticks: arrivals)")
    axes[-1][1].set_xlabel("arrival (s)")
    fig.suptitle(f"{N_REQUESTS} requests, {rate:g} per second, answers of {shortest}-{longest} tokens, "
                 f"up to {max_batch} at a time", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def batching_explorer():
    """Sliders for the arrival rate, the largest batch, the answer lengths, the policy and the seed over
    :func:`batching_timeline`."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    def show(rate: float, max_batch: int, answers: tuple[int, int], policy: str, seed: int) -> Figure:
        return batching_timeline(rate, max_batch, answers[0], answers[1], policy, seed)

    return explorer(
        show,
        rate=widgets.FloatLogSlider(value=40.0, base=10, min=0.5, max=2.5, step=0.05, description="per second",
                                    continuous_update=False),
        max_batch=widgets.IntSlider(value=16, min=1, max=64, description="max batch", continuous_update=False),
        answers=widgets.IntRangeSlider(value=(4, 64), min=1, max=256, description="answer len",
                                       continuous_update=False),
        policy=widgets.Dropdown(options=list(CHOICES), value="both", description="policy"),
        seed=widgets.IntSlider(value=0, min=0, max=9, description="seed", continuous_update=False),
    )


__all__ = ["CHOICES", "N_REQUESTS", "STEP_TIME", "batching_explorer", "batching_timeline", "timeline_results"]
