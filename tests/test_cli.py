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
