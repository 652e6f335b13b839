"""Exercise generation from solutions (llmcourse.authoring)."""
import nbformat
import pytest

from llmcourse.authoring import (
    STUB_MESSAGE,
    AuthoringError,
    is_hand_edited,
    make_exercise,
    notebook_text,
    stale_exercises,
    strip_solutions,
    write_exercise,
)

SOLVED = '''def relu(x):
    """Keep the positive part."""
    ### BEGIN SOLUTION
    y = x.clone()
    y[y < 0] = 0
    return y
    ### END SOLUTION


answer = 42'''


def test_strip_replaces_only_the_marked_block_and_keeps_indentation():
    stripped = strip_solutions(SOLVED)
    assert "y[y < 0]" not in stripped and "clone" not in stripped
    assert '    """Keep the positive part."""' in stripped
    assert f"    raise NotImplementedError({STUB_MESSAGE!r})" in stripped
    assert stripped.endswith("answer = 42")
    namespace = {}
    exec(stripped, namespace)  # the stub is valid Python
    with pytest.raises(NotImplementedError):
        namespace["relu"](1)


@pytest.mark.parametrize("source", [
    "### BEGIN SOLUTION\nx = 1",
    "x = 1\n### END SOLUTION",
    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
])
def test_unbalanced_markers_are_reported(source):
    with pytest.raises(AuthoringError, match="SOLUTION"):
        strip_solutions(source, "demo.ipynb, cell 2")


def solution_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["llmcourse"] = {"chapter": "99"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Demo\nWrite `relu`."),
                nbformat.v4.new_code_cell(SOLVED, execution_count=3,
                                          outputs=[nbformat.v4.new_output("stream", text="hello\n")])]
    return nb


def test_make_exercise_clears_outputs_and_is_deterministic():
    solution = solution_notebook()
    exercise = make_exercise(solution, "99_demo.ipynb")
    code = exercise.cells[1]
    assert code.outputs == [] and code.execution_count is None
    assert exercise.cells[0].source == "# Demo\nWrite `relu`."
    assert exercise.metadata["llmcourse"]["kind"] == "exercise"
    assert notebook_text(exercise) == notebook_text(make_exercise(solution, "99_demo.ipynb"))
    assert solution.cells[1].outputs, "the solution itself is not modified"


def test_write_exercise_never_overwrites_a_learners_edit(tmp_path):
    sol = tmp_path / "solutions" / "99_demo.ipynb"
    ex = tmp_path / "exercises" / "99_demo.ipynb"
    sol.parent.mkdir()
    nbformat.write(solution_notebook(), sol)
    assert write_exercise(sol, ex) == "created"
    assert write_exercise(sol, ex) == "unchanged"
    first = ex.read_bytes()
    assert not is_hand_edited(ex)

    edited = nbformat.read(ex, as_version=4)
    edited.cells[1].source = "def relu(x):\n    return x.clamp(min=0)  # my answer"
    nbformat.write(edited, ex)
    learner_bytes = ex.read_bytes()
    assert is_hand_edited(ex)

    changed = solution_notebook()
    changed.cells[0].source = "# Demo, reworded"
    nbformat.write(changed, sol)
    with pytest.raises(AuthoringError, match="edited by hand"):
        write_exercise(sol, ex)
    assert ex.read_bytes() == learner_bytes  # untouched

    assert write_exercise(sol, ex, force=True) == "updated"
    assert (ex.parent / "99_demo.ipynb.edited").read_bytes() == learner_bytes  # kept
    assert ex.read_bytes() != first and not is_hand_edited(ex)


def test_stale_exercises_reports_missing_outdated_and_orphans(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    nbformat.write(solution_notebook(), tmp_path / "solutions" / "99_demo.ipynb")
    assert stale_exercises(tmp_path) == ["exercises/99_demo.ipynb is missing"]
    write_exercise(tmp_path / "solutions" / "99_demo.ipynb", tmp_path / "exercises" / "99_demo.ipynb")
    assert stale_exercises(tmp_path) == []
    nbformat.write(solution_notebook(), tmp_path / "exercises" / "98_other.ipynb")
    assert stale_exercises(tmp_path) == ["exercises/98_other.ipynb has no solutions/98_other.ipynb"]


def test_build_twice_gives_byte_identical_exercises(tmp_path, monkeypatch, capsys):
    from llmcourse.cli import main as cli

    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    nbformat.write(solution_notebook(), tmp_path / "solutions" / "99_demo.ipynb")
    monkeypatch.setenv("LLMCOURSE_ROOT", str(tmp_path))
    assert cli(["build", "--check"]) == 1
    assert cli(["build", "--no-execute", "--no-self-check"]) == 0
    first = (tmp_path / "exercises" / "99_demo.ipynb").read_bytes()
    assert cli(["build", "--no-execute", "--no-self-check"]) == 0
    assert (tmp_path / "exercises" / "99_demo.ipynb").read_bytes() == first
    assert cli(["build", "--check"]) == 0
    assert "exercises/99_demo.ipynb: unchanged" in capsys.readouterr().out
