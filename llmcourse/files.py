"""Writing files so that nothing is lost (used by chapters 03, 08 and the exercise builder).

:func:`atomic_write` writes into a temporary file in the same folder, flushes it
to disk (``fsync``) and only then renames it over the target with
``os.replace``, which is atomic: a reader (or a crash, or Ctrl-C) sees either the
old file or the complete new one, never half of it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """``with atomic_write(path) as f: ...``: ``path`` gets everything written to ``f``, or stays as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:  # including KeyboardInterrupt: never leave the temporary file behind
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["atomic_write"]
