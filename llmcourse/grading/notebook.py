"""Instant feedback inside an exercise notebook.

At the top of an exercise notebook::

    from llmcourse.grading import Grader
    grader = Grader("01")

and after each exercise one line::

    grader.check("softmax")

It runs that exercise's checks on the functions the notebook has defined and
prints what passed, what failed and a hint. It never raises, so a notebook
with unfinished exercises still runs top to bottom.
"""
from __future__ import annotations

import sys
from typing import Any, Mapping

from llmcourse.grading.checks import CheckResult, load_chapter, run_checks


def format_results(results: list[CheckResult]) -> str:
    """Plain-text lines, one per check, then the points."""
    lines = []
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        lines.append(f"[{mark}] {r.name} ({r.points}/{r.max_points}): {r.message}")
        if not r.passed and r.hint:
            lines.append(f"       hint: {r.hint}")
    score = sum(r.points for r in results)
    total = sum(r.max_points for r in results)
    lines.append(f"{score}/{total} points")
    return "\n".join(lines)


class Grader:
    """The checks of one chapter, ready to run from inside its notebook."""

    def __init__(self, chapter: str | int):
        self.chapter = load_chapter(chapter)
        self.last: list[CheckResult] = []  # the results of the latest call, for code that wants them

    def check(self, exercise: str, namespace: Mapping[str, Any] | None = None) -> None:
        """Run the checks of ``exercise`` on the caller's functions and print the outcome."""
        ns = namespace if namespace is not None else sys._getframe(1).f_globals
        self.last = run_checks(self.chapter, ns, exercise, own_work=True)  # as the grader judges it
        print(format_results(self.last))

    def check_all(self, namespace: Mapping[str, Any] | None = None) -> None:
        """Run every check of the chapter and print the outcome."""
        ns = namespace if namespace is not None else sys._getframe(1).f_globals
        self.last = run_checks(self.chapter, ns, own_work=True)
        print(format_results(self.last))

    def __repr__(self) -> str:
        return f"Grader(chapter {self.chapter.number}: {len(self.chapter.checks)} checks, {self.chapter.max_score} points)"
