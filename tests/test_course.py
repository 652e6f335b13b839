"""Course-wide guarantees for every chapter with exercises.

* grader self-check: each solution gets full marks, each untouched exercise fails every check;
* each hand-written wrong solution (tests/wrong_solutions/chNN.py) fails at least one check;
* exercises/ is up to date with solutions/ (``llmcourse build --check``);
* lessons and solutions are committed with outputs, without errors and without stderr.
"""
import importlib
import re

import nbformat
import pytest

from llmcourse.authoring import BEGIN, END, stale_exercises
from llmcourse.cli import main as cli
from llmcourse.grading import load_chapter, run_checks
from llmcourse.grading.runner import grade_notebook

from conftest import ROOT

SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHAPTERS = [p.name[:2] for p in SOLUTIONS]


def test_every_lesson_has_graded_exercises():
    assert LESSONS, "no lessons found"
    assert {p.name[:2] for p in LESSONS} <= set(CHAPTERS)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_solution_gets_full_marks(solution):
    report = grade_notebook(solution)
    failed = [f"{c.name}: {c.message}" for c in report.checks if not c.passed]
    assert report.score == report.max_score, failed
    assert report.problems == []


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_untouched_exercise_fails_every_check_with_a_hint(solution):
    report = grade_notebook(ROOT / "exercises" / solution.name)
    assert report.score == 0
    assert not [c.name for c in report.checks if c.passed]
    assert all(c.hint for c in report.checks), "every check needs a hint"
    assert report.problems == [], "an untouched exercise must run without errors"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_at_least_five_graded_exercises_matching_its_notebook(chapter):
    exercises = load_chapter(chapter).exercises
    assert len(exercises) >= 5
    nb = nbformat.read(next((ROOT / "solutions").glob(f"{chapter}_*.ipynb")), as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in exercises:
        assert re.search(rf"^(def|class) {name}\b", code, re.M), f"solutions notebook lacks `{name}`"
        assert f'grader.check("{name}")' in code, f'no grader.check("{name}") cell'
    assert code.count(BEGIN) == code.count(END) >= len(exercises)
    assert nb.metadata["llmcourse"]["chapter"] == chapter


def wrong_solutions():
    cases = []
    for chapter in CHAPTERS:
        module = importlib.import_module(f"wrong_solutions.ch{chapter}")
        for exercise, wrongs in module.WRONG.items():
            for wrong in wrongs:
                cases.append(pytest.param(chapter, exercise, wrong, id=f"ch{chapter}-{exercise}-{wrong.__name__}"))
    return cases


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_exercise_has_a_wrong_solution(chapter):
    module = importlib.import_module(f"wrong_solutions.ch{chapter}")
    assert set(module.WRONG) == set(load_chapter(chapter).exercises)


@pytest.mark.parametrize("chapter,exercise,wrong", wrong_solutions())
def test_wrong_solution_fails_a_check(chapter, exercise, wrong):
    results = run_checks(chapter, {exercise: wrong}, exercise)
    assert any(not r.passed for r in results), f"no check catches {wrong.__name__}"
    assert not any("could not use your code" in r.message for r in results), "a check itself crashed"


def _stub(*args, **kwargs):
    raise NotImplementedError("Exercise")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_check_fails_on_a_stub_and_on_a_missing_function(chapter):
    for exercise in load_chapter(chapter).exercises:
        stubbed = run_checks(chapter, {exercise: _stub}, exercise)
        assert stubbed and all("not written yet" in r.message and not r.passed for r in stubbed), exercise
        missing = run_checks(chapter, {}, exercise)
        assert all("is not defined" in r.message and not r.passed for r in missing), exercise


def test_exercises_are_up_to_date(capsys):
    assert stale_exercises(ROOT) == []
    assert cli(["build", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_is_committed_with_clean_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code if c.source.strip()), "run every cell before committing"
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"cell {index + 1} has an error output"
            assert not (out.output_type == "stream" and out.name == "stderr"), \
                f"cell {index + 1} writes to stderr: {out.text[:200]!r}"


def _shows_only_a_widget(cell) -> bool:
    """An explorer cell: its output is a live widget, whose plain functions are tested in tests/."""
    outputs = cell.get("outputs", [])
    return bool(outputs) and all("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in outputs)


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_outputs_nbval_does_not_compare_are_still_asserted(path):
    """A cell whose output may differ between machines or sizes is marked for nbval, and keeps its claim as an
    assertion, so that the test still checks the teaching."""
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and ("nbval-ignore-output" in tags or "NBVAL_IGNORE_OUTPUT" in cell.source):
            if _shows_only_a_widget(cell):
                continue
            assert re.search(r"\bassert\w*\b|\bexpect_\w+\(", cell.source), \
                f"cell {index + 1} is not compared by nbval and asserts nothing:\n{cell.source[:300]}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_committed_lesson_is_the_full_size_run(path):
    """Lessons are committed from full-size runs (``llmcourse execute`` records how a notebook was run); the tests
    run them in fast mode and compare every output that does not depend on the size."""
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("llmcourse", {}).get("fast") is False, (
        f"{path.name} was not executed at full size: run `LLMCOURSE_FAST=0 llmcourse execute notebooks/{path.name}`")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_committed_widgets_and_progress_bars_read_well_without_a_kernel(path):
    """GitHub, nbviewer and an untrusted lab cannot draw widgets: every explorer's saved output carries a picture
    (or its text), and a progress bar's saved text says how far it got, not "0%"."""
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = data.get("text/plain", "")
            if WIDGET_VIEW in data:
                assert "image/png" in data, \
                    f"cell {index + 1}: a widget output with nothing to show without a kernel: {text[:80]!r}"
            assert not re.search(r"\b0%\|", text), f"cell {index + 1}: a progress bar saved at 0%: {text[:80]!r}"


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS + sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_kernelspec_is_what_jupyterlab_writes(path):
    """Opening a notebook in the lab must not mark it modified: its kernelspec is the ipykernel one."""
    spec = nbformat.read(path, as_version=4).metadata["kernelspec"]
    assert spec == {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
