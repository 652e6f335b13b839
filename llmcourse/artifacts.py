"""What one chapter leaves for the next: cached, checksummed artifacts (chapters 03 onward).

The course builds one model as it goes: chapter 03 trains its tokenizer, later chapters train and fine-tune a GPT
that uses it. Each such artifact is one file in one folder, ``$LLMCOURSE_CACHE/artifacts`` (by default
``~/.cache/llmcourse/artifacts``), next to a small JSON record of

* the **recipe**: every setting that changes the result (sizes, seeds, a checksum of the training text...);
* the file's **SHA-256 checksum**;
* the chapter that built it, and how long that took.

:func:`obtain` is the one way a lesson gets an artifact. When the file is there, was made by the same recipe and
still has its checksum, it is loaded. Otherwise it is built, written atomically (a crash never leaves half a
file), recorded and then loaded. So a chapter opened on its own always works, and its output says which of the
two happened.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar

from llmcourse.files import atomic_write

T = TypeVar("T")

RECORD_VERSION = 1
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def artifact_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The artifact folder: ``cache_dir`` if given, else ``$LLMCOURSE_CACHE/artifacts`` or ``~/.cache/llmcourse/artifacts``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("LLMCOURSE_CACHE") or Path.home() / ".cache" / "llmcourse") / "artifacts"


def recipe_fingerprint(recipe: Mapping[str, Any]) -> str:
    """A short, stable checksum of a recipe (its JSON with sorted keys), e.g. ``"3f9c2a1b7d04"``."""
    try:
        text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"a recipe must hold only JSON values (numbers, strings, lists, dicts): {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 checksum of a file, as 64 hexadecimal digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Obtained(Generic[T]):
    """An artifact and where it came from: ``built`` is False when it was loaded from the cache."""

    name: str
    value: T
    path: Path
    built: bool
    chapter: str
    seconds: float
    sha256: str

    def __str__(self) -> str:
        if self.built:
            return (f"{self.name}: built here in {self.seconds:.1f} s and cached at {self.path} "
                    f"(sha256 {self.sha256[:12]}...)")
        return (f"{self.name}: loaded from the cache at {self.path} (built by chapter {self.chapter}, "
                f"sha256 {self.sha256[:12]}...)")


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".record.json")


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def cached(name: str, recipe: Mapping[str, Any], cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The path of artifact ``name`` if the cache holds it for this recipe with an intact checksum, else None."""
    path = _artifact_path(name, recipe, cache_dir)
    record = _read_record(path)
    if (record is None or not path.is_file() or record.get("version") != RECORD_VERSION
            or record.get("recipe") != json.loads(json.dumps(recipe)) or record.get("sha256") != file_sha256(path)):
        return None
    return path


def _artifact_path(name: str, recipe: Mapping[str, Any], cache_dir: str | os.PathLike | None) -> Path:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"an artifact name is lower-case letters, digits, '.', '_' and '-', e.g. "
                         f"'tokenizer.json'; got {name!r}")
    stem, dot, suffix = name.partition(".")
    return artifact_dir(cache_dir) / f"{stem}-{recipe_fingerprint(recipe)}{dot}{suffix}"


def obtain(name: str, recipe: Mapping[str, Any], build: Callable[[Path], None], load: Callable[[Path], T],
           chapter: str, cache_dir: str | os.PathLike | None = None, rebuild: bool = False) -> Obtained[T]:
    """Load artifact ``name`` made by ``recipe`` from the cache, or build it with ``build(path)`` first.

    ``build`` writes the artifact to the path it is given (a temporary file: it becomes the artifact only when
    ``build`` returns); ``load`` reads it back. ``chapter`` names the chapter whose recipe this is.
    ``rebuild=True`` builds it again even when the cache holds it.
    """
    path = _artifact_path(name, recipe, cache_dir)
    found = None if rebuild else cached(name, recipe, cache_dir)
    if found is not None:
        record = _read_record(found) or {}
        return Obtained(name, load(found), found, False, str(record.get("chapter", "?")),
                        float(record.get("seconds", 0.0)), str(record.get("sha256", "")))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    start = time.perf_counter()
    try:
        build(tmp)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError(f"building {name} wrote nothing to the path it was given")
        seconds = time.perf_counter() - start
        sha = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"version": RECORD_VERSION, "name": name, "recipe": recipe, "sha256": sha, "chapter": chapter,
              "seconds": round(seconds, 3)}
    with atomic_write(_record_path(path), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return Obtained(name, load(path), path, True, chapter, seconds, sha)


def text_sha256(text: str) -> str:
    """The SHA-256 checksum of a text's UTF-8 bytes (for recipes that depend on a training text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = ["Obtained", "artifact_dir", "cached", "file_sha256", "obtain", "recipe_fingerprint", "text_sha256"]
