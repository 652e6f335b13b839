"""The package reads as the course's table of contents: each part may import the parts before it, never a later one.

Order (the course's): shared helpers -> basics (ch00-02) -> tokenizers (03) -> transformer (04-06) -> models (07)
-> pretraining (08) -> finetuning (09) -> parallel (10) -> inference (11) -> grading -> authoring and the CLI on top.
"""
import ast
from pathlib import Path

import pytest

import llmcourse

PACKAGE = Path(llmcourse.__file__).parent
SHARED = {"__init__", "config", "device", "seed", "files", "explorer", "progress", "source_view", "artifacts"}
PARTS = ["shared", "basics", "tokenizers", "transformer", "models", "pretraining", "finetuning", "parallel",
         "inference", "grading", "authoring", "cli"]


def part_of(dotted: str) -> str:
    """The part of the course that ``llmcourse.<dotted>`` belongs to."""
    first = dotted.split(".")[0]
    return "shared" if first in SHARED or first == "" else first


def imported_parts(path: Path) -> list[tuple[int, str]]:
    """(line, part) for every import of llmcourse in a module, including imports inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                (node.module == "llmcourse" or node.module.startswith("llmcourse.")):
            if node.module == "llmcourse":  # from llmcourse import x: x is a part, or one of the shared helpers
                found += [(node.lineno, alias.name if alias.name in PARTS else "shared") for alias in node.names]
            else:
                found.append((node.lineno, part_of(node.module.removeprefix("llmcourse."))))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: use absolute imports (line {node.lineno})")
        elif isinstance(node, ast.Import):
            found += [(node.lineno, part_of(a.name.removeprefix("llmcourse.")))
                      for a in node.names if a.name.startswith("llmcourse.")]
    return found


def layering_violations(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).with_suffix("")
        own = part_of(".".join(relative.parts))
        assert own in PARTS, f"{path}: {own!r} is not a part of the course; add it to PARTS in the right place"
        for line, used in imported_parts(path):
            assert used in PARTS, f"{path}:{line} imports an unknown part {used!r}"
            if PARTS.index(used) > PARTS.index(own):
                problems.append(f"{relative}.py:{line}: {own} (earlier in the course) imports {used} (later)")
    return problems


def test_parts_only_import_earlier_parts():
    assert layering_violations() == []


def test_only_shared_helpers_authoring_and_cli_sit_at_the_top_level():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == SHARED | {"authoring", "cli"}, sorted(top - SHARED - {"authoring", "cli"})


@pytest.mark.parametrize("part", [p for p in PARTS if (PACKAGE / p).is_dir()])
def test_each_part_says_what_it_holds(part):
    """Each subpackage's docstring names its chapters and lists every module, so help(llmcourse.<part>) is a map."""
    module = __import__(f"llmcourse.{part}", fromlist=["_"])
    doc = module.__doc__ or ""
    for path in sorted((PACKAGE / part).glob("*.py")):
        if path.stem != "__init__":
            assert f"``{path.stem}``" in doc, f"llmcourse/{part}/__init__.py does not list {path.stem}"


def test_a_wrong_import_is_caught(tmp_path):
    """The check itself: a basics module that imports the Trainer (chapter 08) is reported."""
    (tmp_path / "basics").mkdir()
    (tmp_path / "basics" / "bad.py").write_text("def f():\n    from llmcourse.pretraining.trainer import Trainer\n")
    (tmp_path / "pretraining").mkdir()
    (tmp_path / "pretraining" / "fine.py").write_text("from llmcourse.basics import autograd\n")
    assert layering_violations(tmp_path) == ["basics/bad.py:2: basics (earlier in the course) imports pretraining (later)"]
