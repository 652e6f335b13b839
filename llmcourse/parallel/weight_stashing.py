"""Chapter 10: PipeDream's asynchronous 1F1B and weight stashing.

PipeDream never flushes its pipeline: every stage runs the 1F1B order without end and updates its own
weights right after each backward pass. So the weights change while micro-batches are still in flight. If
stage ``s`` ran micro-batch ``i``'s backward pass with whatever weights it holds at that moment, the gradient
would mix two models: activations made by one version of the weights, differentiated through a later one.
*Weight stashing* keeps, on each stage, the version a micro-batch's forward pass used, until its backward pass
has run with it.

Versions are counted per stage: version 0 are the starting weights, version ``k`` the weights after the
stage's ``k``-th update (its ``k``-th backward pass). :func:`weight_versions` reads them off the 1F1B order of
:func:`llmcourse.parallel.schedule.order`; :func:`stash_sizes` counts how many versions a stage keeps at once
(``p - s`` in the steady state: stage 0 keeps the most, the last stage only its current weights).
"""
from __future__ import annotations

from dataclasses import dataclass

from llmcourse.parallel.schedule import order


@dataclass(frozen=True)
class Versions:
    """The weight versions one micro-batch meets on one stage."""

    stage: int
    microbatch: int
    forward: int  # the version its forward pass used (and, with stashing, its backward pass)
    current_at_backward: int  # the stage's newest version when its backward pass runs (used without stashing)

    @property
    def staleness(self) -> int:
        """How many updates the stage made between this micro-batch's forward and backward passes."""
        return self.current_at_backward - self.forward


def weight_versions(n_stages: int, n_microbatches: int) -> list[list[Versions]]:
    """Per stage, per micro-batch: the version its forward used and the newest one at its backward.

    A stage updates after every backward pass, so its version before a pass is the number of backward passes
    it has already run.
    """
    table = []
    for s in range(n_stages):
        seen_backwards, forward, backward = 0, {}, {}
        for kind, i in order("1f1b", n_stages, n_microbatches, s):
            (forward if kind == "F" else backward)[i] = seen_backwards
            seen_backwards += kind == "B"
        table.append([Versions(s, i, forward[i], backward[i]) for i in range(n_microbatches)])
    return table


def stash_sizes(n_stages: int, n_microbatches: int) -> list[int]:
    """Per stage, the most weight versions held at once: the current one plus those of micro-batches in flight."""
    sizes = []
    for s, rows in enumerate(weight_versions(n_stages, n_microbatches)):
        version_of = {row.microbatch: row.forward for row in rows}
        in_flight: set[int] = set()
        current = peak = 0
        for kind, i in order("1f1b", n_stages, n_microbatches, s):
            if kind == "F":
                in_flight.add(i)
            else:
                in_flight.discard(i)
                current += 1
            peak = max(peak, len({current} | {version_of[j] for j in in_flight}))
        sizes.append(peak)
    return sizes


def stashed_version(n_stages: int, stage: int, microbatch: int) -> int:
    """The weight version stage ``stage`` uses for micro-batch ``microbatch`` (forward, and backward when stashed)."""
    if isinstance(n_stages, bool) or not isinstance(n_stages, int) or n_stages < 1:
        raise ValueError(f"n_stages must be a whole number of at least 1, got {n_stages!r}.")
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < n_stages:
        raise ValueError(f"stage must be a whole number from 0 to {n_stages - 1}, got {stage!r}.")
    if isinstance(microbatch, bool) or not isinstance(microbatch, int) or microbatch < 0:
        raise ValueError(f"microbatch must be a whole number of at least 0, got {microbatch!r}.")
    return weight_versions(n_stages, microbatch + 1)[stage][microbatch].forward
