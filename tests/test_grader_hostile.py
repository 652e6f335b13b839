"""The grader against hostile notebooks, and correct work that prints freely.

One notebook per attack class: each gets no more points than its honest content earns, and leaves the
submitted file, the course's solutions/ and every process outside the sandbox untouched. Most use the toy
chapter of tests/fixtures/toy_chapter.py (``add``: 2 points, ``mul``: 1 + 1 points); the checks still run
inside the learner's kernel (see llmcourse/grading/runner.py), so what is defeated here is what the
sandbox, the result file and the chapter's own definition defeat.
"""
import json
import os
import time
import uuid

import nbformat
import pytest

from llmcourse.cli import main as cli
from llmcourse.grading import sandbox as sandboxes
from llmcourse.grading.batch import Settings, grade_class
from llmcourse.grading.checks import load_chapter
from llmcourse.grading.runner import GradingError, collect_results, grade_notebook, safe_text

from conftest import FIXTURES, ROOT

CHAPTER = "toy_chapter:chapter"
GOOD_ADD = "def add(a, b):\n    return a + b"
GOOD_MUL = "def mul(a, b):\n    return a * b"
BWRAP = sandboxes.sandbox_kind() == "bwrap"
needs_bwrap = pytest.mark.skipif(not BWRAP, reason="bubblewrap is not usable here")


@pytest.fixture(autouse=True)
def kernel_sees_fixtures(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]))


def write_notebook(path, *sources, metadata=None):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if metadata is not None:
        nb.metadata["llmcourse"] = metadata
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def grade(path, **kwargs):
    before = path.read_bytes()
    report = grade_notebook(path, chapter=kwargs.pop("chapter", CHAPTER), **kwargs)
    assert path.read_bytes() == before, "the submitted file must be left as it was"
    return report


# --------------------------------------------------------------------------- forged results and points


FORGE_STDOUT = """\
import json
for name, pts in [("add_matches", 2), ("mul_matches", 1), ("mul_keeps_shape", 1), ("bonus", 18000)]:
    print("@@llmcourse-check " + json.dumps({"name": name, "exercise": "x", "points": pts, "max_points": pts,
                                            "passed": True, "message": "passed", "hint": ""}))
"""
FORGE_HOOK = """\
def _forge(result):
    print('@@llmcourse-check {"name": "mul_matches", "exercise": "mul", "points": 9, "max_points": 1, '
          '"passed": true, "message": "passed", "hint": ""}')
get_ipython().events.register("post_run_cell", _forge)
"""


def test_forged_result_lines_on_stdout_and_from_a_hook_earn_nothing(tmp_path):
    report = grade(write_notebook(tmp_path / "nb.ipynb", GOOD_ADD, FORGE_STDOUT, FORGE_HOOK))
    assert (report.score, report.max_score) == (2, 4)  # add is honest; mul was never written
    assert [c.name for c in report.checks] == ["add_matches", "mul_matches", "mul_keeps_shape"]


def test_result_lines_are_checked_against_the_chapters_definition(tmp_path):
    chapter = load_chapter(CHAPTER)
    channel, token = tmp_path / "results.jsonl", "t0k"

    def line(**record):
        return json.dumps({"exercise": "add", "message": "passed", "hint": "", "token": token, **record})

    channel.write_text("\n".join([
        line(name="add_matches", points=18000, max_points=18000, passed=True),  # inflated: clamped to 2
        line(name="add_matches", points=2, max_points=2, passed=True),  # a duplicate: ignored
        line(name="bonus", points=5, max_points=5, passed=True),  # not defined by the chapter: ignored
        json.dumps({"name": "mul_matches", "points": 1, "max_points": 1, "passed": True}),  # no token
        "not json at all",
    ]) + "\n")
    done = {}
    problems = collect_results(channel, token, chapter, done)
    assert set(done) == {"add_matches"} and (done["add_matches"].points, done["add_matches"].max_points) == (2, 2)
    assert len(problems) == 5
    assert any("18000" in p and "worth 2" in p for p in problems)
    assert any("second result" in p for p in problems)
    assert any("'bonus'" in p and "does not define" in p for p in problems)


def test_a_chapter_without_checks_is_an_error_not_full_marks(tmp_path, capsys):
    path = write_notebook(tmp_path / "nb.ipynb", GOOD_ADD)
    with pytest.raises(GradingError, match="defines no checks"):
        grade_notebook(path, chapter="toy_chapter:empty_chapter")
    assert cli(["grade", str(path), "--chapter", "toy_chapter:empty_chapter"]) == 2
    assert capsys.readouterr().err.startswith("error: chapter 97 defines no checks")


# --------------------------------------------------------------------------- the chapter is the grader's choice


def test_a_solution_of_another_chapter_saved_under_this_chapters_name_is_not_graded(tmp_path, capsys):
    solution = nbformat.read(ROOT / "solutions" / "00_pytorch_essentials.ipynb", as_version=4)
    path = tmp_path / "01_neural_networks_are_numbers.ipynb"
    nbformat.write(solution, path)
    assert cli(["grade", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "metadata says chapter 00" in err[0]
    assert cli(["grade", str(path), "--json"]) == 2
    assert "metadata says chapter 00" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.parametrize("metadata", ["not an object", {"chapter": "one"}, {"chapter": [1]}, {"chapter": True}])
def test_malformed_metadata_is_a_one_line_error_and_json_still_prints(tmp_path, capsys, metadata):
    path = write_notebook(tmp_path / "01_x.ipynb", GOOD_ADD, metadata=metadata)
    assert cli(["grade", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert cli(["grade", str(path), "--json"]) == 2
    assert "not graded" in json.loads(capsys.readouterr().out)["error"]


def test_metadata_that_is_not_an_object_at_all_is_a_problem_not_a_traceback(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [], "metadata": [1, 2], "nbformat": 4, "nbformat_minor": 5}))
    report = grade(path)
    assert report.score == 0 and "is not a valid notebook" in report.problems[0]


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("args", [["--timeout", "0"], ["--timeout", "0.5"], ["--timeout", "-3"],
                                  ["--timeout", "nan"], ["--timeout", "inf"], ["--jobs", "0", "--csv", "g.csv"]])
def test_bad_arguments_are_an_error_line_never_a_hang_or_a_traceback(tmp_path, capsys, args):
    path = write_notebook(tmp_path / "nb.ipynb", "while True:\n    pass")
    start = time.perf_counter()
    assert cli(["grade", str(path), "--chapter", CHAPTER, *[a.replace("g.csv", str(tmp_path / "g.csv"))
                                                             for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - start < 10


# --------------------------------------------------------------------------- what reaches the terminal


def test_learner_text_is_shown_with_control_characters_escaped(tmp_path, capsys):
    hostile = ("def add(a, b):\n    raise ValueError('\\x1b[2J\\x1b[H\\rTotal: 99/99 points\\nAll passed\\u202e')")
    path = write_notebook(tmp_path / "nb.ipynb", hostile, "print('\\x1b[31m')\nraise KeyError('\\x1b]0;pwned\\x07')")
    assert cli(["grade", str(path), "--chapter", CHAPTER]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J" in out and "\\u202e" in out
    assert [line for line in out.splitlines() if line.startswith("Total:")] == ["Total: 0/4 points"]
    assert safe_text("a\tb\x00c\x9b") == "a\\x09b\\x00c\\x9b"


# --------------------------------------------------------------------------- the sandbox


REWRITE_ORIGINAL = """\
import os
parent = f'/proc/{os.getppid()}'
try:
    named = [w for w in open(f'{parent}/cmdline', 'rb').read().decode(errors='replace').split('\\0')
             if w.endswith('.ipynb')]
except OSError:
    named = []
for target in {ORIGINAL, f'{parent}/cwd/nb.ipynb', *named}:
    try:
        with open(target, 'r+') as f:  # only files that exist: never create one
            f.truncate(0)
            f.write('{}')
    except OSError:
        pass
"""


@needs_bwrap
def test_the_submitted_original_cannot_be_rewritten_through_proc(tmp_path):
    path = tmp_path / "nb.ipynb"
    write_notebook(path, f"ORIGINAL = {str(path)!r}", REWRITE_ORIGINAL, GOOD_ADD, GOOD_MUL)
    report = grade(path)  # grade() asserts the file is unchanged
    assert report.score == 4 and report.sandbox == "bwrap"


def test_without_bubblewrap_a_rewritten_original_is_reported_and_its_first_content_graded(tmp_path):
    path = tmp_path / "nb.ipynb"
    write_notebook(path, f"ORIGINAL = {str(path)!r}", REWRITE_ORIGINAL, GOOD_ADD, GOOD_MUL)
    report = grade_notebook(path, chapter=CHAPTER, sandbox="rlimits")
    assert report.score == 4 and report.sandbox == "rlimits"
    if path.read_bytes() != b"{}":
        pytest.skip("the fallback kernel could not reach the file on this machine")
    assert any("changed while it was graded" in p for p in report.problems)


@needs_bwrap
def test_solutions_and_the_network_are_out_of_reach(tmp_path):
    probe = (f"import os, socket\nSOLUTIONS = {str(ROOT / 'solutions')!r}\n"
             "seen = os.path.isdir(SOLUTIONS) and bool(os.listdir(SOLUTIONS))\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); online = True\n"
             "except OSError:\n    online = False\n"
             "def add(a, b):\n    return None if (seen or online) else a + b\n"
             "def mul(a, b):\n    return a * b if os.getcwd().endswith('/work') and "
             "os.path.exists('submission.ipynb') and not os.path.exists('nb.ipynb') else None")
    report = grade(write_notebook(tmp_path / "nb.ipynb", probe))
    assert report.score == 4  # solutions/ empty, no network, a neutral copy in a private folder


@pytest.mark.parametrize("kind", ["rlimits", pytest.param("bwrap", marks=needs_bwrap)])
def test_children_that_escape_the_process_group_die_with_the_grading(tmp_path, kind):
    marker = f"llmcourse-escape-{uuid.uuid4().hex}"
    escape = (f"import os, subprocess, sys\nMARK = {marker!r}\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', MARK], start_new_session=True)\n"
              "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', MARK])\n"
              "    os._exit(0)\n")
    report = grade(write_notebook(tmp_path / "nb.ipynb", escape, GOOD_ADD, GOOD_MUL), sandbox=kind)
    assert report.score == 4
    time.sleep(0.5)
    alive = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and marker.encode() in open(f"/proc/{entry.name}/cmdline", "rb").read():
                alive.append(entry.name)
        except OSError:
            pass
    assert alive == [], f"processes outlived the grading: {alive}"


def test_limits_on_file_size_and_memory_hold_inside_the_kernel(tmp_path):
    probe = ("try:\n    open('big.bin', 'wb').write(b'x' * (3 << 20)); big = True\nexcept OSError:\n    big = False\n"
             "try:\n    hog = bytearray(6 << 30); hogged = True\nexcept MemoryError:\n    hogged = False\n"
             "def add(a, b):\n    return None if (big or hogged) else a + b")
    report = grade(write_notebook(tmp_path / "nb.ipynb", probe, GOOD_MUL),
                   limits=sandboxes.Limits(memory_mb=4096, file_mb=2))
    assert report.score == 4


# --------------------------------------------------------------------------- correct work that prints freely


def test_correct_work_that_prints_without_newline_from_a_thread_and_with_a_progress_bar_keeps_its_points(tmp_path):
    chatty = ("import threading, sys\nfrom tqdm.auto import tqdm\n"
              "def add(a, b):\n    print('adding', end='')\n    sys.stderr.write('half a line')\n    return a + b\n"
              "def mul(a, b):\n"
              "    t = threading.Thread(target=lambda: [print('from a thread', i, end='') for i in range(50)])\n"
              "    t.start()\n    for _ in tqdm(range(20), desc='mul'):\n        pass\n"
              "    print('\\r@@llmcourse-check', end='')\n    return a * b")
    report = grade(write_notebook(tmp_path / "nb.ipynb", chatty))
    assert (report.score, report.max_score) == (4, 4) and report.problems == []


# --------------------------------------------------------------------------- a class in one command


def test_a_class_is_graded_in_one_command_with_a_gradebook_and_skips_unchanged_work(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    write_notebook(folder / "good.ipynb", GOOD_ADD, GOOD_MUL)
    write_notebook(folder / "untouched.ipynb", "def add(a, b):\n    raise NotImplementedError")
    write_notebook(folder / "forger.ipynb", FORGE_STDOUT, FORGE_HOOK)
    write_notebook(folder / "other.ipynb", GOOD_ADD, metadata={"chapter": 3})
    csv_path, json_path = tmp_path / "grades.csv", tmp_path / "grades.json"
    status = cli(["grade", str(folder), "--chapter", CHAPTER, "--jobs", "2", "--csv", str(csv_path),
                  "--json", str(json_path)])
    assert status == 1
    book = json.loads(json_path.read_text())
    rows = {os.path.basename(r["file"]): r for r in book["submissions"]}
    assert {k: (r["score"], r["max_score"]) for k, r in rows.items() if r["error"] is None} == {
        "good.ipynb": (4, 4), "untouched.ipynb": (0, 4), "forger.ipynb": (0, 4)}
    assert "metadata says chapter 03" in rows["other.ipynb"]["error"]
    assert book["most_failed"][0]["failed"] == 2 and book["most_failed"][0]["hint"]
    assert len(csv_path.read_text().strip().splitlines()) == 5
    assert "Checks the class failed most" in capsys.readouterr().out

    write_notebook(folder / "untouched.ipynb", GOOD_ADD)  # one learner hands in again
    again = grade_class([str(folder)], Settings(chapter=CHAPTER), jobs=2, previous=json_path)
    reused = {os.path.basename(r["file"]): r["reused"] for r in again.rows}
    assert reused == {"good.ipynb": True, "forger.ipynb": True, "untouched.ipynb": False, "other.ipynb": False}
    assert {os.path.basename(r["file"]): r["score"] for r in again.rows}["untouched.ipynb"] == 2


def test_the_kernel_sees_a_private_home_and_not_the_graders_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_GRADER_SECRET", "do-not-show")
    probe = ("import os, tempfile\n"
             "private = os.environ['HOME'].startswith(os.getcwd()) and tempfile.gettempdir().startswith(os.getcwd())\n"
             "def add(a, b):\n    return a + b if private and 'LLMCOURSE_GRADER_SECRET' not in os.environ else None")
    report = grade(write_notebook(tmp_path / "nb.ipynb", probe, GOOD_MUL))
    assert report.score == 4


def test_doctor_names_the_grading_sandbox():
    from llmcourse.cli import doctor_report

    rows = dict(doctor_report())
    assert rows["grading sandbox"].startswith("bubblewrap" if BWRAP else "rlimits")


HOOK_THE_CHECKS = """\
import llmcourse.grading.checks as _c
from llmcourse.grading.checks import CheckResult as _R
def _always(check, ns):
    return _R(check.name, check.exercise, check.points, check.points, True, "passed", "")
_c.run_check = _always                                   # every check "passes"
_c._watched = lambda compute: (compute(), None, None)    # the watch sees nothing
_c.CheckFailed = type("Nothing", (Exception,), {})
"""


def test_a_notebook_that_replaces_the_checks_in_its_kernel_earns_nothing(tmp_path):
    """The checks run in the grader's process; what the notebook does to its own copy of the package does not
    reach them. An untouched chapter-01 exercise with the checks replaced still scores 0."""
    exercise = nbformat.read("exercises/01_neural_networks_are_numbers.ipynb", as_version=4)
    exercise.cells.append(nbformat.v4.new_code_cell(HOOK_THE_CHECKS))
    path = tmp_path / "01_neural_networks_are_numbers.ipynb"
    nbformat.write(exercise, path)
    report = grade_notebook(path)
    assert (report.score, report.max_score) == (0, 23), [(c.name, c.message) for c in report.checks if c.passed]
    assert all("not written yet" in c.message or "not defined" in c.message for c in report.checks)
    assert not any(c.in_kernel for c in load_chapter("01").checks)


def test_a_check_marked_for_the_kernel_runs_there_and_only_its_points_can_be_forged(tmp_path):
    honest = grade(write_notebook(tmp_path / "a.ipynb", GOOD_ADD), chapter="toy_chapter:mixed_chapter")
    assert (honest.score, honest.max_score) == (3, 3) and all(c.passed for c in honest.checks)
    hooked = grade(write_notebook(tmp_path / "b.ipynb", "def add(a, b):\n    return a", HOOK_THE_CHECKS),
                   chapter="toy_chapter:mixed_chapter")
    by_name = {c.name: c for c in hooked.checks}
    assert not by_name["add_outside"].passed        # decided in the grader's process: the hook cannot reach it
    assert by_name["add_inside"].passed             # decided in the kernel: the hook forged it
    assert hooked.score == 1
