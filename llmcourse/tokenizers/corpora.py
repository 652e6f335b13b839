"""Offline corpora for training tokenizers (chapter 03).

No downloads: the texts come from the Python installation that runs the course.

* :func:`english_prose` -- Python's own documentation: the help topics shipped in
  ``pydoc_data.topics``, then the docstrings of the standard library's modules,
  classes and functions (read with :mod:`ast`).
* :func:`source_code` -- the standard library's ``.py`` files themselves.
* :func:`chinese_sentences` -- a dozen short sentences written for this course.

The files are read in sorted order, so a given Python version always gives the
same text. Both builders cut their text to ``n_bytes`` of UTF-8 (up to 3 bytes
fewer, so as not to split a character), and a shorter text is a prefix of a longer one.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import gc
import os
import sysconfig
import tokenize
from pathlib import Path
from typing import Iterator

# Folders of the standard library that hold tests, test data (some of it deliberately
# broken) or third-party packages that differ between installations.
_SKIPPED_FOLDERS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def _stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, sorted by their path inside the library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _SKIPPED_FOLDERS]
        files += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_source(path: Path) -> str | None:
    """A Python file's text (honouring its coding line), or None when it cannot be read."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _docstrings(node: ast.AST) -> Iterator[str]:
    """The docstrings of a module, class or function and of the classes and functions it defines."""
    doc = ast.get_docstring(node, clean=True)
    if doc:
        yield doc
    for child in node.body:
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _docstrings(child)


@contextlib.contextmanager
def _no_garbage_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector: parsing makes many objects and no cycles worth collecting."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _cut(parts: Iterator[str], n_bytes: int, sep: str) -> str:
    """Join ``parts`` with ``sep`` until there are ``n_bytes`` of UTF-8, then cut at a character."""
    chunks, size = [], 0
    for part in parts:
        chunks.append(part)
        size += len(part.encode("utf-8", errors="replace")) + len(sep.encode("utf-8"))
        if size >= n_bytes:
            break
    data = sep.join(chunks).encode("utf-8", errors="replace")[:n_bytes]   # a lone surrogate becomes '?'
    return data.decode("utf-8", errors="ignore")   # drops a character cut in half at the end


def _prose_parts() -> Iterator[str]:
    """The help topics in sorted order, then the docstrings of each stdlib file in sorted order."""
    import pydoc_data.topics   # the text of help('topics'), generated from the Python docs

    topics = pydoc_data.topics.topics
    for name in sorted(topics):
        yield topics[name].strip()
    for path in _stdlib_files():
        source = _read_source(path)
        try:
            with _no_garbage_collection():
                docs = list(_docstrings(ast.parse(source))) if source else []
        except (SyntaxError, ValueError):
            continue
        yield from docs


@functools.lru_cache(maxsize=8)
def english_prose(n_bytes: int = 1_000_000) -> str:
    """``n_bytes`` of English prose: Python's help topics, then stdlib docstrings (about 2.2 MB at most)."""
    return _cut(_prose_parts(), n_bytes, sep="\n\n")


@functools.lru_cache(maxsize=8)
def source_code(n_bytes: int = 1_000_000) -> str:
    """``n_bytes`` of Python source code: the standard library's files in sorted order."""
    sources = (_read_source(path) for path in _stdlib_files())
    return _cut((s for s in sources if s), n_bytes, sep="\n")


_CHINESE = """\
语言模型把文字变成数字，再从数字里猜出下一个词。
分词器先把一句话切成小块，每一块叫作一个词元。
一个汉字在 UTF-8 里通常占三个字节。
字节对编码会反复把最常见的相邻两块合成一块。
训练得越久，词表里出现的长词就越多。
同一句话，中文往往比英文需要更多的词元。
模型看不见字母，它只看见一串整数编号。
词表太小，句子会变得很长；词表太大，嵌入矩阵会变得很重。
好的分词器让常见的词只占一个位置。
我们用标准库里的文档和代码来训练自己的分词器。
注意力机制让每个词元都能回头看前面的词元。
先数一数，再合并，然后再数一数：这就是字节对编码。
"""


def chinese_sentences() -> str:
    """Twelve short Chinese sentences about language models, one per line (written for the course)."""
    return _CHINESE
