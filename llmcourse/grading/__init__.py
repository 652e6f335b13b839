"""Grading of the course's exercises.

* :mod:`llmcourse.grading.checks` — how a check is written and run.
* :mod:`llmcourse.grading.notebook` — the one-line feedback inside a notebook.
* :mod:`llmcourse.grading.runner` — grading a whole notebook safely, on a copy.
* :mod:`llmcourse.grading.channel` — the typed channel through which checks in the grader call the learner's code.
* :mod:`llmcourse.grading.sandbox` — the sandbox a graded kernel runs in (limits, bubblewrap, cleanup).
* :mod:`llmcourse.grading.batch` — grading a class: many notebooks, a gradebook.
* :mod:`llmcourse.grading.chapters` — each chapter's checks (``chapters.ch00`` ... ``chapters.ch11``).

Modules: ``checks``, ``notebook``, ``runner``, ``channel``, ``sandbox``, ``batch``, and the ``chapters`` folder.
"""
from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    CheckResult,
    call,
    expect,
    expect_close,
    expect_shape,
    get_function,
    load_chapter,
    run_checks,
)
from llmcourse.grading.notebook import Grader

__all__ = [
    "Chapter", "CheckFailed", "CheckResult", "Grader", "call", "expect", "expect_close", "expect_shape",
    "get_function", "load_chapter", "run_checks",
]
