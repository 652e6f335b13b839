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

3. **A file changed after it was written** (a flipped bit on a disk, a copy cut
   and pasted together): every checkpoint carries a SHA-256 ``checksum`` of its
   contents (every tensor's bytes, dtype and shape, every plain value), and
   :func:`load_checkpoint` refuses a file whose contents no longer match it.

Files are written with the permissions of an ordinary write (0666 minus the
umask), and a save first removes what an earlier save killed half-way
(``kill -9``) left behind: no temporary file outlives the next save.

Files are loaded with ``torch.load(weights_only=True)``, which refuses to run
arbitrary code from the file; so checkpoints store only tensors and plain
Python values (dicts, lists, tuples, numbers, strings), with random number
generator states converted to tensors.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from llmcourse.files import atomic_write, remove_stale_temporaries

FORMAT = "llmcourse-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "model_config", "step")


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, damaged or not an llmcourse checkpoint."""


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Hash ``value`` (tensors, dicts, lists, tuples and plain values) in a fixed order, with its structure."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for item in value:
            _feed(h, item)
    else:
        h.update(f"V{type(value).__name__}:{value!r}".encode())


def contents_checksum(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's contents (everything but its ``checksum`` entry), as hex."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


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
    model = state["model"]
    if isinstance(model, dict):
        bad = [k for k, v in model.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
               and not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(f"refusing to save a checkpoint whose weights are not finite (NaN or infinite in "
                             f"{bad[:3]}{' ...' if len(bad) > 3 else ''}): training diverged")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # what a save killed half-way left behind
    payload = {"format": FORMAT, "version": VERSION,
               **{k: v for k, v in state.items() if k not in ("format", "version", "checksum")}}
    payload["checksum"] = contents_checksum(payload)
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
    if "checksum" in state:  # files written before checksums existed have none
        expected = state.pop("checksum")
        if contents_checksum(state) != expected:
            raise CheckpointError(f"{path} is damaged: its contents no longer match the checksum written with "
                                  f"them (a changed byte on the disk or in a copy); use an earlier checkpoint "
                                  f"or retrain")
    return state


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "contents_checksum", "FORMAT", "VERSION"]
