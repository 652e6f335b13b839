"""Pictures for chapter 11: the roofline, cache memory, batching timelines, attention tiles."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from llmcourse.inference.batching import Request
from llmcourse.inference.costs import Accelerator
from llmcourse.inference.paged_cache import contiguous_slots, paged_slots


def plot_roofline(chip: Accelerator, points: dict[str, float]) -> Figure:
    """Attainable FLOP/s against arithmetic intensity (log-log), with named workloads marked on the roof."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [2 ** (i / 4) for i in range(-8, 57)]
    ax.loglog(xs, [chip.attainable(x) / 1e12 for x in xs], color="black")
    ax.axvline(chip.balance, color="grey", linestyle=":")
    ax.text(chip.balance * 1.1, chip.peak_flops / 1e12 * 0.02, f"balance point\n{chip.balance:.0f} FLOP/byte",
            color="grey")
    for name, intensity in points.items():
        ax.plot(intensity, chip.attainable(intensity) / 1e12, "o")
        ax.annotate(name, (intensity, chip.attainable(intensity) / 1e12), textcoords="offset points",
                    xytext=(6, -12))
    ax.set_xlabel("arithmetic intensity (FLOP per byte)")
    ax.set_ylabel("attainable TFLOP/s")
    ax.set_title(f"roofline of the {chip.name}, from its specification")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_cache_memory(lengths: list[int], max_len: int, block_sizes: list[int]) -> Figure:
    """Token slots reserved for the same requests: contiguous (``max_len`` each) vs paged with each block size."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    used = sum(lengths)
    names = [f"contiguous\n(max {max_len})"] + [f"paged\nblock {b}" for b in block_sizes]
    reserved = [contiguous_slots(lengths, max_len)] + [paged_slots(lengths, b) for b in block_sizes]
    ax.bar(names, [r / 1e3 for r in reserved], color="tab:red", label="reserved, empty")
    ax.bar(names, [used / 1e3] * len(names), color="tab:blue", label="holding a token")
    for i, r in enumerate(reserved):
        ax.text(i, r / 1e3, f"{1 - used / r:.0%} empty", ha="center", va="bottom")
    ax.set_ylabel("thousand token slots")
    ax.set_title(f"KV-cache slots for {len(lengths)} requests")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_batching_timeline(requests: list[Request], results: dict[str, dict], max_batch: int) -> Figure:
    """Batch size at every decode step over time, one panel per policy (results from ``batching.simulate``)."""
    if not results:
        raise ValueError("results is empty: pass at least one policy's batching.simulate result")
    fig, axes = plt.subplots(len(results), 1, figsize=(8, 1.9 * len(results)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (name, result) in zip(axes, results.items()):
        starts = [t for t, _ in result["timeline"]]
        sizes = [b for _, b in result["timeline"]]
        ax.step(starts, sizes, where="post")
        ax.set_ylim(0, max_batch + 0.5)
        ax.set_ylabel("batch")
        ax.set_title(f"{name}: {result['throughput']:.0f} tokens/s, mean latency {result['mean_latency']:.2f} s",
                     fontsize=10)
        ax.plot([r.arrival for r in requests], [max_batch + 0.2] * len(requests), "|", color="grey")
    axes[-1].set_xlabel("seconds (grey ticks: arrivals)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_tiles(plans: dict[str, torch.Tensor], block: int) -> Figure:
    """Which (query tile, key tile) blocks tiled attention computes (plans from ``tiled_attention.tile_plan``):
    white skipped, light partly masked, dark fully computed; one panel per plan."""
    from matplotlib.colors import ListedColormap

    fig, axes = plt.subplots(1, len(plans), figsize=(3.2 * len(plans), 3.3))
    axes = [axes] if len(plans) == 1 else list(axes)
    cmap = ListedColormap(["white", "#9ecae1", "#08519c"])
    for ax, (name, plan) in zip(axes, plans.items()):
        ax.imshow(plan.numpy(), cmap=cmap, vmin=0, vmax=2)
        nq, nk = plan.shape
        ax.set_xticks([x - 0.5 for x in range(nk + 1)], minor=True)
        ax.set_yticks([y - 0.5 for y in range(nq + 1)], minor=True)
        ax.grid(which="minor", color="grey", linewidth=0.5)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        done = int((plan > 0).sum())
        ax.set_title(f"{name}\n{done} of {plan.numel()} tiles computed", fontsize=10)
        ax.set_xlabel(f"key tiles of {block}")
        ax.set_ylabel(f"query tiles of {block}")
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["plot_batching_timeline", "plot_cache_memory", "plot_roofline", "plot_tiles"]
