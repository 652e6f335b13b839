"""Grading a learner's notebook on a copy, in a sandboxed kernel (the spine of every chapter's exercises).

:func:`grade_notebook` never writes to the learner's file. It reads it once, copies it under a neutral
name into a fresh sandbox (:mod:`llmcourse.grading.sandbox`: a private folder, HOME and TMPDIR, limits on
memory, CPU time, file size and processes, bubblewrap where installed) and runs the copy in a fresh
Jupyter kernel there, one code cell at a time, with a time limit per cell (longer for the cell that
defines an exercise with a time budget, see :meth:`~llmcourse.grading.checks.Chapter.time_budget`).
Then it runs the chapter's checks here, in the grader's process, one at a time, each with its own time
limit, calling the learner's code in that kernel through a typed channel (see below). When grading ends,
every process the kernel started is killed.

What the grader decides itself, whatever the notebook says:

* the chapter, from the file name (``01_topic.ipynb``) or ``chapter=`` (``--chapter``); notebook
  metadata that names another chapter, or is malformed, stops grading with a :class:`GradingError`;
* the points: each check is worth what the chapter defines, no more; a result line for a check the
  chapter does not define, a second result for the same check, or other points than the definition are
  ignored and reported as problems; the maximum is always the chapter's total;
* the time limits: positive, finite and at least :data:`MIN_CELL_TIMEOUT`;
* the text it shows: learner-controlled text (messages, exception text, file names) has its control
  characters escaped, so it cannot move the cursor, clear the screen or fake a line.

Whatever the notebook does, the rest of the grading goes on:

* a cell that raises (a syntax error, a bug) is noted, and the cells after it still run;
* a cell that runs past its time limit, or kills the kernel, is noted and skipped:
  the kernel is restarted and the notebook replayed without that cell;
* a check that loops forever or kills the kernel fails alone; the others still run.

What the checks give against the learner's call itself (:mod:`llmcourse.grading.checks`): the learner's
code gets clones of the tensors a check passes, and an input changed in place fails the check; an
exercise that forbids built-ins runs the learner's call under a ``TorchFunctionMode``, a
``TorchDispatchMode`` and a profiler, so the built-in is seen however it is reached (a captured reference,
``torch.ops.aten``, a private alias, a method) and so is the course's own version of the exercise.

Where the checks run: in this process, the grader's, not in the learner's kernel. After the notebook's
cells, the kernel runs one fixed cell that serves requests over a Unix socket in the sandbox's folder
(:mod:`llmcourse.grading.channel`); each check calls the learner's functions and classes through that typed
channel (values by copy, the learner's objects by handle, no pickle), computes its expected values itself
and decides its points here. So a notebook that hooks its kernel or its copy of the package (wrapping
``run_check``, replacing ``CheckFailed``, printing result lines) cannot change those grades; at worst it changes
what its own functions return. A check that hangs or kills the kernel fails alone: the kernel is restarted,
the notebook replayed, and the other checks go on.

Observing the learner's call from close by (the watch for forbidden built-ins, FLOPs, memory, the shapes of
products, the rows each of its modules sees) happens in the kernel, beside the learner's code
(:func:`~llmcourse.grading.checks.beside_the_learner`); only the observations come back.

What this does not give:

* a notebook that deliberately disables those observers inside its kernel can hide a built-in or a second pass
  from them (it still has to return right answers, which are computed and compared here);
* work the learner's call hands to another thread or process is not watched;
* a check that cannot go through the channel can still be marked :meth:`Chapter.run_in_kernel` and then runs
  inside the kernel, where it could be forged; none of the course's 332 checks is.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from llmcourse.grading import channel as grading_channel
from llmcourse.grading import checks as checks_module
from llmcourse.grading import sandbox as sandboxes
from llmcourse.grading.checks import Chapter, CheckResult, load_chapter

DEFAULT_CELL_TIMEOUT = 60
MIN_CELL_TIMEOUT = 1.0  # below this nbclient's whole-second limits would mean "no limit"
MAX_CELL_TIMEOUT = 24 * 3600.0
MAX_RESTARTS = 8
MAX_MESSAGE = 1000  # characters of one learner-controlled message that are shown
_CHECK_CALL = re.compile(r"^\s*grader\.check(_all)?\(.*\)\s*;?\s*$")
_CHECKED_EXERCISE = re.compile(r"^\s*grader\.check\(\s*['\"]([^'\"]+)['\"]")


class GradingError(Exception):
    """The notebook cannot be graded at all (its chapter is unknown or disputed, a bad argument)."""


def safe_text(text: Any, limit: int = MAX_MESSAGE) -> str:
    """``text`` with every control or format character escaped (ANSI escapes, carriage returns, newlines,
    bidirectional overrides), cut to ``limit`` characters: safe to print on a terminal, one line."""
    text = str(text)
    shown = []
    for ch in text[:limit]:
        if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            shown.append(ch)
        elif ord(ch) < 0x100:
            shown.append(f"\\x{ord(ch):02x}")
        else:
            shown.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(shown) + (f"... ({len(text) - limit} more characters)" if len(text) > limit else "")


def check_timeout(value: Any) -> float:
    """A cell time limit in seconds: a finite number from :data:`MIN_CELL_TIMEOUT` to a day."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise GradingError(f"the time limit must be a number of seconds, got {safe_text(repr(value), 60)}") from None
    if isinstance(value, bool) or not math.isfinite(seconds) or not MIN_CELL_TIMEOUT <= seconds <= MAX_CELL_TIMEOUT:
        raise GradingError(f"the time limit must be a finite number of seconds from {MIN_CELL_TIMEOUT:g} to "
                           f"{MAX_CELL_TIMEOUT:g}, got {safe_text(value, 60)}")
    return seconds


@dataclass
class GradeReport:
    """What the grader found: one result per check of the chapter, and notes about the notebook."""

    notebook: str
    chapter: str
    checks: list[CheckResult]
    problems: list[str] = field(default_factory=list)
    max_points: int | None = None  # the chapter's own total (default: the sum over ``checks``)
    sandbox: str = ""

    @property
    def score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> int:
        return self.max_points if self.max_points is not None else sum(c.max_points for c in self.checks)

    @property
    def full_marks(self) -> bool:
        """Every point of a chapter that has points: what exit status 0 means."""
        return self.max_score > 0 and self.score == self.max_score

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "chapter": self.chapter,
            "score": self.score,
            "max_score": self.max_score,
            "checks": [c.to_dict() for c in self.checks],
            "problems": list(self.problems),
            "sandbox": self.sandbox,
        }

    def to_table(self) -> str:
        """A plain-text table for people: each check, its points, and a hint where it failed."""
        rows = [("check", "exercise", "points", "result")]
        for c in self.checks:
            rows.append((c.name, c.exercise, f"{c.points}/{c.max_points}", "PASS" if c.passed else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"Chapter {self.chapter}: {safe_text(self.notebook)}", ""]
        for n, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        failed = [c for c in self.checks if not c.passed]
        if failed:
            lines += ["", "What went wrong:"]
            for c in failed:
                lines.append(f"- {c.name}: {safe_text(c.message)}")
                if c.hint:
                    lines.append(f"  hint: {safe_text(c.hint)}")
        if self.problems:
            lines += ["", "Problems while running your notebook:"]
            lines += [f"- {safe_text(p)}" for p in self.problems]
        lines += ["", f"Total: {self.score}/{self.max_score} points"]
        return "\n".join(lines)


def chapter_from_name(path: Path) -> str | None:
    """``"01"`` for ``01_topic.ipynb``; None for a name without a chapter number."""
    match = re.match(r"(\d{2})_", path.name)
    return match.group(1) if match else None


def _chapter_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def resolve_chapter(path: Path, nb: nbformat.NotebookNode | None, chapter: str | int | None) -> tuple[str, Chapter]:
    """The chapter to grade ``path`` against: ``chapter`` when given, else the file name's number.

    The notebook's own metadata may only agree: when it names another chapter, or is malformed, the
    file is not graded (:class:`GradingError`).
    """
    if chapter is not None:
        spec = str(chapter).strip()
    else:
        spec = chapter_from_name(path) or ""
        if not spec:
            raise GradingError(f"Cannot tell which chapter {safe_text(path.name)} belongs to: name it like "
                               f"'01_topic.ipynb' or pass --chapter.")
    if spec.isdigit():
        spec = f"{int(spec):02d}"
    try:
        chapter_obj = load_chapter(spec)
    except LookupError as exc:
        raise GradingError(safe_text(exc)) from None
    except Exception as exc:  # a "module:attribute" that does not import
        raise GradingError(f"cannot load the checks of chapter {safe_text(spec, 80)}: {type(exc).__name__}: "
                           f"{safe_text(exc, 200)}") from None
    if not isinstance(chapter_obj, Chapter):
        raise GradingError(f"{safe_text(spec, 80)} is not a chapter of checks")
    if not chapter_obj.checks or chapter_obj.max_score <= 0:
        raise GradingError(f"chapter {chapter_obj.number} defines no checks: there is nothing to grade")
    if nb is not None:
        meta = nb.metadata.get("llmcourse")
        if meta is not None and not isinstance(meta, dict):
            raise GradingError(f"{safe_text(path.name)}: its 'llmcourse' metadata is malformed (a "
                               f"{type(meta).__name__}, not an object); not graded")
        if meta and "chapter" in meta:
            claimed = _chapter_number(meta["chapter"])
            if claimed is None:
                raise GradingError(f"{safe_text(path.name)}: its metadata names chapter "
                                   f"{safe_text(repr(meta['chapter']), 60)}, which is not a chapter number; "
                                   f"not graded")
            own = _chapter_number(chapter_obj.number)
            if own is not None and claimed != own:
                raise GradingError(f"{safe_text(path.name)} is graded as chapter {chapter_obj.number}, but its "
                                   f"metadata says chapter {claimed:02d}; not graded (rename the file or pass "
                                   f"--chapter to match)")
    return spec, chapter_obj


def _structure_problem(nb: Any) -> str | None:
    """Why ``nb`` cannot be run as a notebook (its cells or metadata are malformed), or None."""
    if not isinstance(nb, dict) or not isinstance(nb.get("metadata"), dict):
        return "its metadata is not an object"
    cells = nb.get("cells")
    if not isinstance(cells, list):
        return "its cells are not a list"
    for n, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str) \
                or not isinstance(cell.get("source"), str):
            return f"cell {n + 1} is malformed"
    return None


def grade_notebook(
    path: str | os.PathLike[str],
    chapter: str | int | None = None,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    fast: bool = True,
    sandbox: str = "auto",
    limits: sandboxes.Limits | None = None,
) -> GradeReport:
    """Grade the notebook at ``path`` against its chapter's checks. The file is only read."""
    path = Path(path)
    cell_timeout = check_timeout(cell_timeout)
    try:
        kind = sandboxes.sandbox_kind(sandbox)
        (limits or sandboxes.Limits()).validate()
    except ValueError as exc:
        raise GradingError(str(exc)) from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GradingError(f"Cannot read {safe_text(path)}: {exc.strerror or exc}") from None

    nb: nbformat.NotebookNode | None = None
    read_problem = None
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        why = _structure_problem(nb)
        if why:
            nb, read_problem = None, f"{path.name} is not a valid notebook ({why})."
    except UnicodeDecodeError:
        read_problem = f"{path.name} is not UTF-8 text, so it is not a notebook file."
    except Exception as exc:  # invalid JSON or not a notebook
        read_problem = f"{path.name} is not a valid notebook ({type(exc).__name__}: {str(exc)[:200]})."

    number, chapter_obj = resolve_chapter(path, nb, chapter)
    shown_name = safe_text(path.name)
    if nb is None:
        assert read_problem is not None
        read_problem = safe_text(read_problem)
        failed = [_not_run(c, "Not graded: " + read_problem) for c in chapter_obj.checks]
        return GradeReport(shown_name, chapter_obj.number, failed, [read_problem], chapter_obj.max_score, kind)

    box = sandboxes.new_sandbox(kind, limits)
    try:
        (box.workdir / sandboxes.SUBMISSION_NAME).write_bytes(data)  # the kernel sees a copy, by a neutral name
        results, problems = _run_in_kernel(nb, chapter_obj, number, box, cell_timeout, fast)
    finally:
        box.kill_all()
        shutil.rmtree(box.root, ignore_errors=True)
    try:
        changed = hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest()
    except OSError:
        changed = True
    if changed:
        problems.append("The submitted file changed while it was graded; the grade is for its content as read "
                        "before grading began.")
    return GradeReport(shown_name, chapter_obj.number, results, [safe_text(p) for p in problems],
                       chapter_obj.max_score, kind)


# --------------------------------------------------------------------------- running in a kernel


def _not_run(check: Any, message: str) -> CheckResult:
    return CheckResult(check.name, check.exercise, 0, check.points, False, message, check.hint)


def _grading_source(chapter: str, skip: list[str], channel: str, token: str) -> str:
    return (
        "from llmcourse.grading.checks import report_checks as _llmcourse_report\n"
        f"_llmcourse_report({chapter!r}, globals(), skip={skip!r}, channel={channel!r}, token={token!r})\n"
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


def _manager_class(box: sandboxes.Sandbox, attempt: int) -> type[AsyncKernelManager]:
    """A kernel manager whose kernel runs in ``box``: its sockets are files there (IPC, so kernels graded
    side by side never race for TCP ports) and its command goes through the sandbox's launcher."""

    class SandboxedKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(box.root / f"ipc-{attempt}")
            self.connection_file = str(box.root / f"kernel-{attempt}.json")
            self.cache_ports = False

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file, *(extra_arguments or [])]
            return box.kernel_command(cmd)

    return SandboxedKernelManager


def _run_in_kernel(
    nb: nbformat.NotebookNode, chapter: Chapter, chapter_spec: str, box: sandboxes.Sandbox, cell_timeout: float,
    fast: bool,
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
        run_nb = copy.deepcopy(nb)  # a fresh copy per attempt; the grading cells go at its end
        remaining = [c for c in chapter.checks if c.name not in done]
        token = secrets.token_hex(16)
        channel = box.channel_dir / f"{token}.jsonl"
        # the few checks that still run inside the kernel: every other one is skipped there
        skip = sorted(set(done) | {c.name for c in chapter.checks if not c.in_kernel})
        grading = nbformat.v4.new_code_cell(_grading_source(chapter_spec, skip, str(channel), token))
        run_nb.cells.append(grading)
        address = box.channel_dir / f"s{restarts}.sock"
        serving = nbformat.v4.new_code_cell(
            "from llmcourse.grading.channel import serve as _llmcourse_serve\n"
            f"_llmcourse_serve({str(address)!r}, {token!r}, globals())\n")
        run_nb.cells.append(serving)
        client = NotebookClient(
            run_nb, timeout=math.ceil(cell_timeout), kernel_name="python3", allow_errors=True,
            record_timing=False, startup_timeout=120, resources={"metadata": {"path": str(box.workdir)}},
            kernel_manager_class=_manager_class(box, restarts),
        )
        current: int | None = None
        group: int | None = None
        try:
            with client.setup_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=box.environment(fast), cwd=str(box.workdir)):
                group = getattr(getattr(client.km, "provisioner", None), "pid", None)
                for index, _ in code_cells:
                    cell = run_nb.cells[index]
                    if index in skipped:
                        continue
                    current = index
                    client.timeout = math.ceil(limits[index])
                    client.execute_cell(cell, index)
                    error = _cell_error(cell)
                    if error:
                        errors[index] = f"Cell {index + 1} raised {error}"
                current = None
                if any(c.in_kernel for c in remaining):
                    client.timeout = math.ceil(sum(c.timeout for c in remaining if c.in_kernel) + 30)
                    try:
                        client.execute_cell(grading, len(run_nb.cells) - 2)
                    finally:
                        problems += collect_results(channel, token, chapter, done)
                    error = _cell_error(grading)
                    if error:
                        problems.append(f"The checks could not run: {error}")
                outside = [c for c in chapter.checks if not c.in_kernel and c.name not in done]
                if outside and not _grade_outside(client, serving, address, token, outside, done, problems):
                    raise _Restart()
            break
        except _Restart:
            restarts += 1
            if restarts > MAX_RESTARTS:
                problems.append("Gave up after restarting the kernel too many times.")
                break
        except (CellTimeoutError, DeadKernelError) as exc:
            what = "ran longer than its time limit" if isinstance(exc, CellTimeoutError) else "made the kernel die"
            if current is not None:
                skipped[current] = (
                    f"Cell {current + 1} {what} ({math.ceil(limits[current])} s for this cell); it was skipped. "
                    "Look for an endless loop or a crash in it."
                )
            restarts += 1
            if restarts > MAX_RESTARTS:
                problems.append("Gave up after restarting the kernel too many times.")
                break
        except Exception as exc:  # the kernel could not start, or something unforeseen
            problems.append(f"The notebook could not be run: {type(exc).__name__}: {exc}")
            break
        finally:
            box.kill_all(group)  # the kernel's process group and everything carrying its token

    problems = [{**errors, **skipped}[i] for i in sorted({**errors, **skipped})] + problems
    results = [done.get(c.name) or _not_run(c, "Not run: the grader could not reach this check.")
               for c in chapter.checks]
    return results, problems


class _Restart(Exception):
    """A check outside the kernel found it hung or dead: restart it, replay the notebook, go on with the rest."""


def _grade_outside(client: NotebookClient, serving: nbformat.NotebookNode, address: Path, token: str,
                   checks_left: list[Any], done: dict[str, CheckResult], problems: list[str]) -> bool:
    """Run ``checks_left`` in this process against the learner's kernel, through the channel.

    The kernel runs the serving cell (started without waiting for it); the checks call the learner's code
    through :class:`~llmcourse.grading.channel.RemoteNamespace`. Returns False when the kernel hung or died
    during a check (that check is failed; the caller restarts the kernel for the others)."""
    listener = grading_channel.listen(address)
    peer = None
    try:
        client.kc.execute(serving.source, store_history=False, allow_stdin=False)
        try:
            peer = grading_channel.accept(listener, token, timeout=60)
        except (OSError, grading_channel.ChannelError) as exc:
            problems.append(f"The checks could not reach the notebook's kernel: {type(exc).__name__}: {exc}")
            for check in checks_left:
                done[check.name] = _not_run(check, "Not run: the grader could not reach the notebook's kernel.")
            return True
        namespace = grading_channel.RemoteNamespace(peer)
        before = checks_module.REMOTE.on
        checks_module.REMOTE.on = True
        try:
            with checks_module.course_code_refused():
                for check in checks_left:
                    peer.sock.settimeout(check.timeout + 10)  # a backstop; the check's own alarm comes first
                    result = checks_module.run_check(check, namespace)
                    if peer.broken:
                        message = result.message if result.message.startswith("Gave up after") else (
                            f"Your code for `{check.exercise}` stopped the kernel or never returned while this "
                            "check ran (an endless loop or a crash?).")
                        done[check.name] = _not_run(check, message)
                        return False
                    done[check.name] = CheckResult(check.name, check.exercise, result.points, check.points,
                                                   result.passed, safe_text(result.message), result.hint)
        finally:
            checks_module.REMOTE.on = before
        try:
            peer.send({"op": "bye"})
        except grading_channel.ChannelError:
            pass
        return True
    finally:
        if peer is not None:
            peer.sock.close()
        listener.close()


def collect_results(channel: Path, token: str, chapter: Chapter, done: dict[str, CheckResult]) -> list[str]:
    """Read the results :func:`~llmcourse.grading.checks.report_checks` wrote to ``channel`` into ``done``.

    Only lines carrying ``token`` count. Points and maxima come from the chapter's definition: a result
    for a check the chapter does not define, a second result for one check, or other points than its
    definition are ignored and returned as problems. A check that started but never finished killed or
    hung the kernel and is failed here.
    """
    problems: list[str] = []
    by_name = {c.name: c for c in chapter.checks}
    try:
        with open(channel, "rb") as f:
            raw = f.read(16 * 1024 * 1024)
    except OSError:
        return problems
    started = None
    seen_here: set[str] = set()
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"Ignored a result line that is not JSON: {safe_text(line, 80)}")
            continue
        if not isinstance(record, dict) or record.get("token") != token:
            problems.append("Ignored a result line without this run's token.")
            continue
        if "started" in record:
            started = record["started"]
            continue
        name = record.get("name")
        check = by_name.get(name) if isinstance(name, str) else None
        if check is None:
            problems.append(f"Ignored a result for {safe_text(repr(name), 80)}, a check chapter {chapter.number} "
                            f"does not define.")
            continue
        if name in done or name in seen_here:
            problems.append(f"Ignored a second result for the check {name}.")
            continue
        passed = record.get("passed") is True
        earned = check.points if passed else 0
        if record.get("points") != earned or record.get("max_points") != check.points:
            problems.append(f"Ignored the points reported for {name} ({safe_text(record.get('points'), 20)}/"
                            f"{safe_text(record.get('max_points'), 20)}): the chapter defines it as worth "
                            f"{check.points}; counted {earned}/{check.points}.")
        message = safe_text(record.get("message", ""))
        done[name] = CheckResult(name, check.exercise, earned, check.points, passed, message,
                                 "" if passed else check.hint)
        seen_here.add(name)
        if started == name:
            started = None
    if started is not None and started in by_name and started not in done:
        done[started] = _not_run(
            by_name[started], f"Your code for `{by_name[started].exercise}` stopped the kernel or never returned "
                              "while this check ran (an endless loop or a crash?).")
    return problems
