"""Seeding and determinism (chapter 00).

One call makes Python's, NumPy's and PyTorch's random numbers repeatable, so a
lesson prints the same numbers every time it runs.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed ``random``, NumPy and PyTorch (all devices) and return a seeded ``torch.Generator``.

    With ``deterministic=True`` PyTorch is also asked to pick deterministic
    kernels where it has them (``warn_only``: an operation without one still runs).
    The returned generator is handy for a ``DataLoader(generator=...)``.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
