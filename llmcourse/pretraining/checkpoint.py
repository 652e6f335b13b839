"""Saving and loading training checkpoints safely (chapter 08).

A checkpoint is one file holding everything needed to continue a run or to use
the model: weights, optimizer and schedule state, the step, the random number
generators, the model's shape and a description of its tokenizer.

Two things can go wrong with checkpoint files, and this module guards against both:

1. **A crash while writing** (Ctrl-C, a full disk, a preempted machine) must not
   destroy the previous good checkpoint. :func:`save_checkpoint` writes to a
   temporary file in the same folder, flushes it to disk (``fsync``) and only
   then renames it over the old file with ``os.replace``, which is atomic: a
   reader sees either the old file or the new one, never half of one.
2. **A bad file** (missing, cut short, not a checkpoint, or from another
   program) should give a message that says what is wrong, not a pickle
   traceback. :func:`load_checkpoint` raises :class:`CheckpointError` for each case.

Files are loaded with ``torch.load(weights_only=True)``, which refuses to run
arbitrary code from the file; so checkpoints store only tensors and plain
Python values (dicts, lists, tuples, numbers, strings), with random number
generator states converted to tensors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from llmcourse.files import atomic_write

FORMAT = "llmcourse-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "model_config", "step")


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, damaged or not an llmcourse checkpoint."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus a format tag and version) to ``path`` atomically; returns the path.

    ``state`` must hold at least ``model`` (a state_dict), ``model_config`` (a
    dict) and ``step`` (an int). The parent folder is created if needed.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    missing = [k for k in REQUIRED_KEYS[2:] if k not in state]
    if missing:
        raise ValueError(f"a checkpoint needs the keys {list(REQUIRED_KEYS[2:])}; missing {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, or raise :class:`CheckpointError` saying why not."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: check the path (train first, or pass the file that "
                              f"training printed)")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (look for a .pt file inside it)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} could not be read as a checkpoint: the file is damaged or cut short "
                              f"(was training stopped while it was being written by another program?) or it is "
                              f"not a PyTorch file at all. Details: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not an llmcourse checkpoint (no "
                              f"format={FORMAT!r} tag); it may be a bare state_dict: load it with torch.load")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} is an llmcourse checkpoint of version {state.get('version')!r}, but this "
                              f"version of llmcourse reads version {VERSION}; update llmcourse or retrain")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {missing}")
    return state


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "FORMAT", "VERSION"]
