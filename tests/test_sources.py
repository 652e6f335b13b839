"""The course names its five source articles once, in README's "Sources and further reading", and nowhere else
speaks of "Source 00x" or of an article's section numbers."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TITLES = ["3万字长文！深度解析大语言模型LLM原理", "什么是LLM大模型训练，详解Transformer结构模型", "LLM模型训练计算过程",
          "用初中数学从零理解大型语言模型（LLM）", "Understanding LLMs from Scratch Using Middle School Math",
          "大语言模型原理基础与前沿 并行"]
CITATION = re.compile(r"[Ss]ource 00\d|§|[Ss]ources'|\bthe sources\b")


def test_readme_lists_the_five_articles():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Sources and further reading", 1)[1].split("\n## ", 1)[0]
    for title in TITLES:
        assert title in section, f"README's sources section does not name {title!r}"


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for folder in ("notebooks", "solutions", "exercises")
                                        for p in (ROOT / folder).glob("*.ipynb")))
def test_no_lesson_or_exercise_cites_a_source_by_number(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    found = [(i, m.group(0)) for i, cell in enumerate(nb.cells) for m in CITATION.finditer(cell.source)]
    assert not found, f"{path} cites the sources by number or section (cell, text): {found[:5]}"
