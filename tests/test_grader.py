"""The grader on bad notebooks: every problem becomes a failed check with a clear
message, the other checks still run, and the learner's file is never changed.

These tests use a two-exercise toy chapter (tests/fixtures/toy_chapter.py):
``add`` (one check, 2 points) and ``mul`` (two checks, 1 point each).
"""
import json
import os

import nbformat
import pytest

from llmcourse.cli import main as cli
from llmcourse.grading.runner import GradingError, grade_notebook

from conftest import FIXTURES

CHAPTER = "toy_chapter:chapter"
GOOD_ADD = "def add(a, b):\n    return a + b"
GOOD_MUL = "def mul(a, b):\n    return a * b"


@pytest.fixture(autouse=True)
def kernel_sees_fixtures(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]))


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def grade(path, **kwargs):
    before = path.read_bytes()
    report = grade_notebook(path, chapter=CHAPTER, **kwargs)
    assert path.read_bytes() == before, "the grader must never change the learner's file"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "nothing written next to it"
    return report


def by_name(report):
    return {c.name: c for c in report.checks}


def test_correct_notebook_gets_full_marks(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", "import torch", GOOD_ADD, GOOD_MUL, "grader.check('add')"))
    assert (report.score, report.max_score) == (4, 4)
    assert all(c.passed and c.message == "passed" for c in report.checks)
    assert report.problems == []


def test_syntax_error_fails_only_its_exercise(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, "def mul(a, b)\n    return a * b"))
    checks = by_name(report)
    assert checks["add_matches"].passed
    assert not checks["mul_matches"].passed and "`mul` is not defined" in checks["mul_matches"].message
    assert checks["mul_matches"].hint
    assert any("Cell 2 raised SyntaxError" in p for p in report.problems)


def test_exception_in_a_cell_does_not_stop_later_cells(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", "raise ValueError('oops')", GOOD_ADD, GOOD_MUL))
    assert report.score == 4
    assert report.problems == ["Cell 1 raised ValueError: oops"]


def test_exception_inside_the_learners_function(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, "def mul(a, b):\n    return a @ b.T.T.T[0]"))
    failed = [c for c in report.checks if not c.passed]
    assert {c.exercise for c in failed} == {"mul"}
    assert any("`mul` raised" in c.message and "line 2" in c.message for c in failed)


def test_infinite_loop_in_a_cell_is_skipped_after_the_time_limit(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, "while True:\n    pass", GOOD_MUL),
                   cell_timeout=3)
    assert report.score == 4
    assert any("Cell 2 ran longer than its time limit" in p for p in report.problems)


def test_infinite_loop_inside_a_function_fails_that_check_only(tmp_path):
    looping = "def mul(a, b):\n    while True:\n        pass"
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, looping))
    checks = by_name(report)
    assert checks["add_matches"].passed
    assert "Gave up after" in checks["mul_keeps_shape"].message


def test_a_cell_that_kills_the_kernel(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, "import os\nos._exit(1)", GOOD_MUL))
    assert report.score == 4
    assert any("Cell 2 made the kernel die" in p for p in report.problems)


def test_a_function_that_kills_the_kernel_fails_alone(tmp_path):
    killer = "def mul(a, b):\n    import os\n    if a.shape == (4, 1):\n        os._exit(1)\n    return a * b"
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, killer))
    checks = by_name(report)
    assert checks["add_matches"].passed and checks["mul_matches"].passed
    assert not checks["mul_keeps_shape"].passed and "stopped the kernel" in checks["mul_keeps_shape"].message


def test_missing_or_renamed_function(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, "def multiply(a, b):\n    return a * b"))
    for name in ("mul_matches", "mul_keeps_shape"):
        assert "`mul` is not defined" in by_name(report)[name].message


def test_wrong_return_type_and_shape(tmp_path):
    report = grade(write_notebook(
        tmp_path / "nb.ipynb", "def add(a, b):\n    return str(a + b)",
        "def mul(a, b):\n    return (a * b).sum()"))
    checks = by_name(report)
    assert "should return a torch.Tensor, but it returned str" in checks["add_matches"].message
    assert "has shape ()" in checks["mul_matches"].message and "expected (2, 2)" in checks["mul_matches"].message
    assert report.score == 0


def test_untouched_stub_fails_with_a_hint(tmp_path):
    stub = "def add(a, b):\n    raise NotImplementedError('Exercise')"
    report = grade(write_notebook(tmp_path / "nb.ipynb", stub, GOOD_MUL))
    check = by_name(report)["add_matches"]
    assert not check.passed and "not written yet" in check.message
    assert check.hint == "Return the sum of the two tensors."


@pytest.mark.parametrize("content,expected", [
    (b"{not json", "is not a valid notebook"),
    (b"\xff\xfe\x00garbage", "is not UTF-8"),
])
def test_a_file_that_is_not_a_notebook(tmp_path, content, expected):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    report = grade(path)
    assert report.score == 0 and len(report.checks) == 3
    assert expected in report.problems[0]


def test_unknown_chapter_is_a_clear_error(tmp_path):
    path = write_notebook(tmp_path / "notes.ipynb", GOOD_ADD)
    with pytest.raises(GradingError, match="Cannot tell which chapter"):
        grade_notebook(path)
    with pytest.raises(GradingError, match="no graded exercises"):
        grade_notebook(path, chapter="98")


def test_cli_json_output(tmp_path, capsys):
    path = write_notebook(tmp_path / "nb.ipynb", GOOD_ADD)
    status = cli(["grade", str(path), "--chapter", CHAPTER, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 1
    assert (data["score"], data["max_score"]) == (2, 4)
    assert {"name", "points", "max_points", "passed", "message"} <= set(data["checks"][0])


def test_cli_table_output(tmp_path, capsys):
    path = write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, GOOD_MUL)
    assert cli(["grade", str(path), "--chapter", CHAPTER]) == 0
    out = capsys.readouterr().out
    assert "add_matches" in out and "Total: 4/4 points" in out


def test_an_error_inside_a_library_points_at_the_learners_line():
    from llmcourse.grading.checks import CheckFailed, call

    def mul(a, b):
        import json
        return json.loads("{")  # the learner's line; the error is raised inside the json module

    with pytest.raises(CheckFailed) as info:
        call({"mul": mul}, "mul", 1, 2)
    assert "raised JSONDecodeError" in str(info.value)
    assert 'json.loads("{")' in str(info.value)


def test_as_number_accepts_numbers_and_one_element_tensors_only():
    import torch

    from llmcourse.grading.checks import CheckFailed, as_number

    assert as_number(torch.tensor(2.5), "x") == 2.5 and as_number(torch.tensor([3]), "x") == 3.0
    assert as_number(4, "x") == 4.0 and as_number(0.5, "x") == 0.5
    for bad in (True, torch.zeros(2), "1.0", None):
        with pytest.raises(CheckFailed, match="x should be a single number"):
            as_number(bad, "x")


def test_a_time_budget_sets_the_checks_limit_and_must_come_first():
    from llmcourse.grading.checks import DEFAULT_CHECK_TIMEOUT, Chapter
    from toy_chapter import budget_chapter

    limits = {c.exercise: c.timeout for c in budget_chapter.checks}
    assert limits == {"slow_add": 8.0, "quick": DEFAULT_CHECK_TIMEOUT}
    chapter = Chapter("97", "late budget")
    chapter.check("f", hint="h")(lambda ns: None)
    with pytest.raises(ValueError, match="before its checks"):
        chapter.time_budget("f", seconds=30)
    with pytest.raises(ValueError, match="positive"):
        chapter.time_budget("g", seconds=0)


def test_the_cell_of_an_exercise_with_a_time_budget_may_run_longer(tmp_path):
    slow = "import time\ndef slow_add(a, b):\n    return a + b\ntime.sleep(4)"
    quick = "def quick(x):\n    return x\ntime.sleep(4)"
    path = write_notebook(tmp_path / "nb.ipynb", slow, "grader.check('slow_add')", quick, "grader.check('quick')")
    report = grade_notebook(path, chapter="toy_chapter:budget_chapter", cell_timeout=2)
    checks = by_name(report)
    assert checks["slow_add_matches"].passed  # its cell had the exercise's 8 s
    assert not checks["quick_matches"].passed  # its cell had the default 2 s and was skipped
    assert report.problems == ["Cell 3 ran longer than its time limit (2 s for this cell); it was skipped. "
                               "Look for an endless loop or a crash in it."]
