"""Writing files so that nothing is lost (used by chapters 03, 08 and the exercise builder).

:func:`atomic_write` writes into a temporary file in the same folder, flushes it
to disk (``fsync``) and only then renames it over the target with
``os.replace``, which is atomic: a reader (or a crash, or Ctrl-C) sees either the
old file or the complete new one, never half of it. The new file gets the
permissions an ordinary ``open(path, "w")`` would give (0666 minus the umask),
not the private 0600 of a temporary file.

:func:`remove_stale_temporaries` deletes what a killed writer (``kill -9`` in
the middle of a save) left behind, and :func:`check_writable` tells before any
work starts whether a file can be written at a path.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """``with atomic_write(path) as f: ...``: ``path`` gets everything written to ``f``, or stays as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.chmod(f.fileno(), 0o666 & ~_umask())  # the permissions of a normal write, not mkstemp's 0600
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:  # including KeyboardInterrupt: never leave the temporary file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` of ``path`` left (a writer killed with
    ``kill -9`` cannot clean up); returns what was removed. Call it only where no other writer of ``path`` runs."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(f"{_temporary_prefix(path)}*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_writable(path: str | os.PathLike, what: str = "the file") -> Path:
    """Raise ``ValueError`` (naming ``what``) unless a file can be written at ``path``: it is not a folder, and
    its nearest existing parent is a folder this process may write into. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give the path of a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {str(path)!r} exists and cannot be written (permissions)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r} cannot be created: the folder {str(parent)!r} is not writable")
    return path


def check_writable_folder(path: str | os.PathLike, what: str = "the folder") -> Path:
    """Raise ``ValueError`` (naming ``what``) unless ``path`` is, or can be created as, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file, not a folder; choose another folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{what} {str(path)!r} is not writable")
        return path
    return check_writable(path, what)


__all__ = ["atomic_write", "remove_stale_temporaries", "check_writable", "check_writable_folder"]
