"""The llmcourse command: doctor and start (grade and build are tested elsewhere)."""
import subprocess
import sys

import pytest

from llmcourse.cli import course_root, main as cli

from conftest import ROOT


def test_doctor_reports_what_a_bug_report_needs():
    out = subprocess.run([sys.executable, "-m", "llmcourse.cli", "doctor"], capture_output=True, text=True,
                         check=True).stdout
    for key in ("python", "torch", "accelerate", "device", "jupyter kernel", "fast mode"):
        assert key in out
    assert "on (LLMCOURSE_FAST=1)" in out  # tests run in fast mode
    assert "lessons can run  yes" in out


def test_course_root_is_found_from_a_subfolder(monkeypatch):
    monkeypatch.delenv("LLMCOURSE_ROOT", raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    assert course_root() == ROOT


def test_start_copies_once_and_never_overwrites(tmp_path, capsys):
    assert cli(["start", "1", "--dest", str(tmp_path)]) == 0
    [copy] = list(tmp_path.glob("01_*.ipynb"))
    assert copy.read_bytes() == (ROOT / "exercises" / copy.name).read_bytes()
    copy.write_text("my work")
    assert cli(["start", "01", "--dest", str(tmp_path)]) == 1
    assert copy.read_text() == "my work"
    assert "already exists" in capsys.readouterr().err


def test_start_unknown_chapter(tmp_path, capsys):
    assert cli(["start", "42", "--dest", str(tmp_path)]) == 2
    assert "no exercise for chapter" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_grade_unknown_chapter_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "notes.ipynb"
    path.write_text("{}")
    assert cli(["grade", str(path)]) == 2
    assert "Cannot tell which chapter" in capsys.readouterr().err


def _course_copy(tmp_path):
    """A small git clone of the course's lessons and exercises, so reset can run without touching this checkout."""
    root = tmp_path / "course"
    (root / "solutions").mkdir(parents=True)
    (root / "exercises").mkdir()
    (root / "notebooks").mkdir()
    lesson = root / "notebooks" / "05_attention.ipynb"
    lesson.write_bytes((ROOT / "notebooks" / "05_attention.ipynb").read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    subprocess.run(git[:-2] + ["init", "-q", str(root)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "course"], check=True)
    return root, lesson


def test_reset_keeps_the_learners_run_and_restores_the_lesson(tmp_path, monkeypatch, capsys):
    root, lesson = _course_copy(tmp_path)
    monkeypatch.setenv("LLMCOURSE_ROOT", str(root))
    committed = lesson.read_bytes()
    assert cli(["reset", "05"]) == 0 and "already as committed" in capsys.readouterr().out
    lesson.write_text("my run")
    assert cli(["reset", "5"]) == 0
    assert lesson.read_bytes() == committed
    assert (root / "workspace" / "05_attention.my-run.ipynb").read_text() == "my run"
    lesson.write_text("my second run")  # a second reset never overwrites the first backup
    assert cli(["reset", "05"]) == 0
    assert (root / "workspace" / "05_attention.my-run.ipynb").read_text() == "my run"
    assert (root / "workspace" / "05_attention.my-run-2.ipynb").read_text() == "my second run"
    assert "back as committed" in capsys.readouterr().out


def test_reset_unknown_lesson(tmp_path, monkeypatch, capsys):
    root, _ = _course_copy(tmp_path)
    monkeypatch.setenv("LLMCOURSE_ROOT", str(root))
    assert cli(["reset", "42"]) == 2
    assert "no lesson for chapter" in capsys.readouterr().err


def test_the_lab_serves_the_course_folder_and_opens_on_the_lessons():
    sys.path.insert(0, str(ROOT))
    import course
    command = course.lab_command([])
    assert f"--ServerApp.root_dir={ROOT}" in command and "--ContentsManager.preferred_dir=notebooks" in command
