"""Grading a learner's notebook safely (the spine of every chapter's exercises).

:func:`grade_notebook` never writes to the learner's file. It reads it once,
copies it into a temporary folder and runs the copy in a fresh Jupyter kernel
(a separate process), one code cell at a time, with a time limit per cell (longer
for the cell that defines an exercise with a time budget, see
:meth:`~llmcourse.grading.checks.Chapter.time_budget`).
Then it runs the chapter's checks inside that kernel, one at a time, each with
its own time limit, and collects the results as they are printed.

Whatever the notebook does, the rest of the grading goes on:

* a cell that raises (a syntax error, a bug) is noted, and the cells after it still run;
* a cell that runs past its time limit, or kills the kernel, is noted and skipped:
  the kernel is restarted and the notebook replayed without that cell;
* a check that loops forever or kills the kernel fails alone; the others still run.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from llmcourse.grading.checks import RESULT_PREFIX, Chapter, CheckResult, load_chapter

DEFAULT_CELL_TIMEOUT = 60
MAX_RESTARTS = 8
_CHECK_CALL = re.compile(r"^\s*grader\.check(_all)?\(.*\)\s*;?\s*$")
_CHECKED_EXERCISE = re.compile(r"^\s*grader\.check\(\s*['\"]([^'\"]+)['\"]")


class GradingError(Exception):
    """The notebook cannot be graded at all (e.g. its chapter is unknown)."""


@dataclass
class GradeReport:
    """What the grader found: one result per check, and notes about the notebook."""

    notebook: str
    chapter: str
    checks: list[CheckResult]
    problems: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> int:
        return sum(c.max_points for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "chapter": self.chapter,
            "score": self.score,
            "max_score": self.max_score,
            "checks": [c.to_dict() for c in self.checks],
            "problems": list(self.problems),
        }

    def to_table(self) -> str:
        """A plain-text table for people: each check, its points, and a hint where it failed."""
        rows = [("check", "exercise", "points", "result")]
        for c in self.checks:
            rows.append((c.name, c.exercise, f"{c.points}/{c.max_points}", "PASS" if c.passed else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"Chapter {self.chapter}: {self.notebook}", ""]
        for n, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        failed = [c for c in self.checks if not c.passed]
        if failed:
            lines += ["", "What went wrong:"]
            for c in failed:
                lines.append(f"- {c.name}: {c.message}")
                if c.hint:
                    lines.append(f"  hint: {c.hint}")
        if self.problems:
            lines += ["", "Problems while running your notebook:"]
            lines += [f"- {p}" for p in self.problems]
        lines += ["", f"Total: {self.score}/{self.max_score} points"]
        return "\n".join(lines)


def chapter_of(path: Path, nb: nbformat.NotebookNode | None) -> str:
    """The chapter number from the notebook's metadata, else from its file name (``01_...``)."""
    if nb is not None:
        number = nb.metadata.get("llmcourse", {}).get("chapter")
        if number is not None:
            return f"{int(number):02d}"
    match = re.match(r"(\d{2})_", path.name)
    if match:
        return match.group(1)
    raise GradingError(
        f"Cannot tell which chapter {path.name} belongs to: name it like '01_topic.ipynb' or pass --chapter."
    )


def grade_notebook(
    path: str | os.PathLike[str],
    chapter: str | int | None = None,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    fast: bool = True,
) -> GradeReport:
    """Grade the notebook at ``path`` against its chapter's checks. The file is only read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GradingError(f"Cannot read {path}: {exc.strerror or exc}") from None

    nb: nbformat.NotebookNode | None = None
    read_problem = None
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except UnicodeDecodeError:
        read_problem = f"{path.name} is not UTF-8 text, so it is not a notebook file."
    except Exception as exc:  # invalid JSON or not a notebook
        read_problem = f"{path.name} is not a valid notebook ({type(exc).__name__}: {str(exc)[:200]})."

    number = str(chapter) if chapter is not None else chapter_of(path, nb)
    if number.isdigit():
        number = f"{int(number):02d}"
    try:
        chapter_obj = load_chapter(number)
    except LookupError as exc:
        raise GradingError(str(exc)) from None
    if nb is None:
        assert read_problem is not None
        failed = [_not_run(c, "Not graded: " + read_problem) for c in chapter_obj.checks]
        return GradeReport(path.name, number, failed, [read_problem])

    with tempfile.TemporaryDirectory(prefix="llmcourse-grade-") as workdir:
        copy = Path(workdir) / path.name
        copy.write_bytes(data)  # the kernel works next to a copy, never next to the original
        results, problems = _run_in_kernel(nb, chapter_obj, number, workdir, cell_timeout, fast)
    return GradeReport(path.name, number, results, problems)


# --------------------------------------------------------------------------- running in a kernel


def _not_run(check: Any, message: str) -> CheckResult:
    return CheckResult(check.name, check.exercise, 0, check.points, False, message, check.hint)


@contextmanager
def _environment(fast: bool) -> Iterator[None]:
    """Environment variables the kernel inherits while grading."""
    wanted = {"LLMCOURSE_FAST": "1" if fast else "0", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _grading_source(chapter: str, skip: list[str]) -> str:
    return (
        "from llmcourse.grading.checks import report_checks as _llmcourse_report\n"
        f"_llmcourse_report({chapter!r}, globals(), skip={skip!r})\n"
    )


def cell_timeouts(nb: nbformat.NotebookNode, chapter: Chapter, cell_timeout: float) -> dict[int, float]:
    """Each code cell's time limit: ``cell_timeout``, or the time budget of the exercise whose
    ``grader.check("name")`` call follows it, when that is longer."""
    limits: dict[int, float] = {}
    previous: int | None = None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        limits[i] = float(cell_timeout)
        match = _CHECKED_EXERCISE.match(cell.source)
        if match and previous is not None and not _CHECK_CALL.match(nb.cells[previous].source):
            budget = chapter.budgets.get(match.group(1), 0.0)
            limits[previous] = max(limits[previous], budget)
        previous = i
    return limits


def _cell_error(cell: nbformat.NotebookNode) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {out.get('evalue')}".strip()
    return None


def _run_in_kernel(
    nb: nbformat.NotebookNode, chapter: Chapter, chapter_spec: str, workdir: str, cell_timeout: float, fast: bool
) -> tuple[list[CheckResult], list[str]]:
    code_cells = [  # the learner's code cells, without the one-line grader.check calls
        (i, c) for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and c.source.strip() and not all(
            _CHECK_CALL.match(line) or not line.strip() for line in c.source.splitlines())
    ]
    limits = cell_timeouts(nb, chapter, cell_timeout)
    skipped: dict[int, str] = {}  # cells that hung or killed the kernel: left out of every replay
    errors: dict[int, str] = {}  # cells that raised: noted, still run on a replay
    done: dict[str, CheckResult] = {}
    problems: list[str] = []
    restarts = 0

    while True:
        run_nb = copy.deepcopy(nb)  # a fresh copy per attempt; the grading cell goes at its end
        remaining = [c for c in chapter.checks if c.name not in done]
        grading = nbformat.v4.new_code_cell(_grading_source(chapter_spec, sorted(done)))
        run_nb.cells.append(grading)
        client = NotebookClient(
            run_nb, timeout=int(cell_timeout), kernel_name="python3", allow_errors=True,
            record_timing=False, startup_timeout=120, resources={"metadata": {"path": workdir}},
        )
        current: int | None = None
        try:
            with _environment(fast), client.setup_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
                for index, _ in code_cells:
                    cell = run_nb.cells[index]
                    if index in skipped:
                        continue
                    current = index
                    client.timeout = int(limits[index])
                    client.execute_cell(cell, index)
                    error = _cell_error(cell)
                    if error:
                        errors[index] = f"Cell {index + 1} raised {error}"
                current = None
                client.timeout = int(sum(c.timeout for c in remaining) + 30)
                try:
                    client.execute_cell(grading, len(run_nb.cells) - 1)
                finally:
                    _collect(grading, chapter, done)
                error = _cell_error(grading)
                if error:
                    problems.append(f"The checks could not run: {error}")
            break
        except (CellTimeoutError, DeadKernelError) as exc:
            what = "ran longer than its time limit" if isinstance(exc, CellTimeoutError) else "made the kernel die"
            if current is not None:
                skipped[current] = (
                    f"Cell {current + 1} {what} ({int(limits[current])} s for this cell); it was skipped. "
                    "Look for an endless loop or a crash in it."
                )
            restarts += 1
            if restarts > MAX_RESTARTS:
                problems.append("Gave up after restarting the kernel too many times.")
                break
        except Exception as exc:  # the kernel could not start, or something unforeseen
            problems.append(f"The notebook could not be run: {type(exc).__name__}: {exc}")
            break

    problems = [{**errors, **skipped}[i] for i in sorted({**errors, **skipped})] + problems
    results = [done.get(c.name) or _not_run(c, "Not run: the grader could not reach this check.")
               for c in chapter.checks]
    return results, problems


def _collect(cell: nbformat.NotebookNode, chapter: Chapter, done: dict[str, CheckResult]) -> None:
    """Read the results printed by :func:`_report_checks`; a check that started but never
    finished killed or hung the kernel and is failed here."""
    text = "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    started = None
    by_name = {c.name: c for c in chapter.checks}
    for line in text.splitlines():
        if not line.startswith(RESULT_PREFIX):
            continue
        record = json.loads(line[len(RESULT_PREFIX):])
        if "started" in record:
            started = record["started"]
        else:
            done[record["name"]] = CheckResult(**record)
            started = None
    if started is not None and started in by_name and started not in done:
        done[started] = _not_run(
            by_name[started], f"Your code for `{by_name[started].exercise}` stopped the kernel or never returned "
                              "while this check ran (an endless loop or a crash?).")
