"""The course-wide fast-mode switch (chapter 00).

Set ``LLMCOURSE_FAST=1`` to shrink data sizes and training steps so that every
notebook and test runs in seconds. Notebooks read the switch only through
:func:`fast_mode` or :func:`scaled`, never through ``os.environ`` directly.
"""
from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def fast_mode() -> bool:
    """Return True when ``LLMCOURSE_FAST`` asks for small, quick runs."""
    value = os.environ.get("LLMCOURSE_FAST", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"LLMCOURSE_FAST={value!r} is not understood: use 1 (fast, small runs) or 0 (full runs)."
    )


def scaled(full: T, fast: T) -> T:
    """Pick ``fast`` in fast mode and ``full`` otherwise, e.g. ``steps = scaled(2000, 50)``."""
    return fast if fast_mode() else full
