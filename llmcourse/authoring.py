"""Authoring the course: exercises generated from solutions, notebooks executed in place.

``solutions/NN_topic.ipynb`` is the single source of an exercise notebook. The
learner's part of each exercise sits between two marker lines::

    def relu(x):
        \"\"\"Element-wise max(x, 0).\"\"\"
        ### BEGIN SOLUTION
        return torch.where(x > 0, x, torch.zeros_like(x))
        ### END SOLUTION

:func:`make_exercise` replaces every marked block with a stub that raises
``NotImplementedError`` and clears all outputs; everything else is kept. The
result is byte-for-byte stable, so ``llmcourse build --check`` can tell when
``exercises/`` is out of date. Each generated notebook records a digest of its
cells. Any difference from what the builder writes counts as a person's edit
(:func:`is_hand_edited`): a source, an output or execution count, a cell's tags
or metadata, the notebook's metadata, even the formatting. :func:`write_exercise`
refuses to overwrite an edited file; with ``force`` it first keeps the file as
``*.ipynb.edited`` (then ``.edited-2``, ``.edited-3``, ...: no copy is ever
overwritten).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient

from llmcourse.config import fast_mode
from llmcourse.files import atomic_write

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB_MESSAGE = "Exercise: replace this line with your code, then run the check below."
_MARKER = re.compile(r"^([ \t]*)### (BEGIN|END) SOLUTION\s*$")


class AuthoringError(Exception):
    """A solutions notebook is malformed (e.g. unbalanced markers)."""


# --------------------------------------------------------------------------- solutions -> exercises


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block by a stub."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        match = _MARKER.match(line)
        if match and match.group(2) == "BEGIN":
            if inside:
                raise AuthoringError(f"{where}, line {number}: BEGIN SOLUTION inside another solution block")
            inside = True
            indent = match.group(1)
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}raise NotImplementedError({STUB_MESSAGE!r})")
        elif match:
            if not inside:
                raise AuthoringError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise AuthoringError(f"{where}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "\n".join(out)


def cells_digest(nb: nbformat.NotebookNode) -> str:
    """A digest of the cells' types and sources: what a person edits."""
    payload = json.dumps([[c.cell_type, c.source] for c in nb.cells], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def make_exercise(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The exercise notebook for a solutions notebook: stubs instead of solutions, no outputs."""
    nb = copy.deepcopy(solution)
    for index, cell in enumerate(nb.cells):
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, f"{name}, cell {index + 1}")
            cell.outputs = []
            cell.execution_count = None
    meta = nb.metadata.setdefault("llmcourse", {})
    meta["kind"] = "exercise"
    meta["generated_from"] = f"solutions/{name}"
    meta["cells_digest"] = cells_digest(nb)
    nb.metadata.pop("widgets", None)
    meta.pop("metadata_digest", None)
    meta["metadata_digest"] = metadata_digest(nb)
    return nb


def metadata_digest(nb: nbformat.NotebookNode) -> str:
    """A digest of the notebook's and every cell's metadata (tags included), as the builder wrote them."""
    payload = json.dumps(_metadata_view(nb), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """Stable JSON text for a notebook (what is written to disk)."""
    return nbformat.writes(nb) + "\n"


def _metadata_view(nb: nbformat.NotebookNode) -> list:
    """The notebook's and every cell's metadata (tags included), without the builder's own digest entries."""
    meta = copy.deepcopy(dict(nb.metadata))
    meta.get("llmcourse", {}).pop("cells_digest", None)
    meta.get("llmcourse", {}).pop("metadata_digest", None)
    return [meta, [[c.cell_type, dict(c.metadata)] for c in nb.cells]]


def is_hand_edited(path: Path, expected: nbformat.NotebookNode | None = None) -> bool:
    """True when ``path`` differs in any way from a notebook the builder wrote.

    The builder's output is a fixed point of :func:`make_exercise` (stubs, no outputs, digests of the
    cells and of the metadata), so a source, an output, an execution count, a tag, any metadata or a
    reformatted file shows up as a difference from ``make_exercise`` of the file itself. A changed
    solution (new exercises, other tags) is therefore not an edit: the exercise is compared with what the
    builder wrote then, not with what it would write now. Files written before the metadata digest
    existed have their tags and metadata compared with ``expected`` (the exercise the builder would write now).
    """
    try:
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        meta = nb.metadata.get("llmcourse", {})
        if meta.get("kind") != "exercise" or meta.get("cells_digest") != cells_digest(nb):
            return True
        regenerated = make_exercise(nb, meta.get("generated_from", "").removeprefix("solutions/"))
        legacy = "metadata_digest" not in meta
        if legacy:
            regenerated.metadata["llmcourse"].pop("metadata_digest")
        if notebook_text(regenerated) != text:
            return True
    except Exception:
        return True  # unreadable: treat as a person's work and leave it alone
    return legacy and expected is not None and _metadata_view(nb) != _metadata_view(expected)


def numbered_backup(path: Path) -> Path:
    """A free name for a kept copy of ``path``: ``NAME.edited``, else ``NAME.edited-2``, ``-3``, ..."""
    backup = path.with_name(path.name + ".edited")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.edited-{n}")
    return backup


def write_exercise(solution_path: Path, exercise_path: Path, force: bool = False) -> str:
    """Write the exercise for ``solution_path``. Returns 'created', 'updated' or 'unchanged'.

    An existing exercise that differs in any way from what the builder wrote is never overwritten unless
    ``force``; then it is first kept next to itself as ``*.ipynb.edited`` (or ``.edited-2``, ... when that
    name is taken: every kept copy stays).
    """
    exercise = make_exercise(nbformat.read(solution_path, as_version=4), solution_path.name)
    text = notebook_text(exercise)
    if exercise_path.exists():
        if exercise_path.read_text(encoding="utf-8") == text:
            return "unchanged"
        if is_hand_edited(exercise_path, exercise):
            backup = numbered_backup(exercise_path)
            if not force:
                raise AuthoringError(
                    f"{exercise_path} has been edited by hand (its sources, outputs, tags or metadata differ "
                    f"from what the builder wrote), so it was not overwritten. Move your copy away (e.g. "
                    f"`llmcourse start` works in workspace/), or rebuild with --force to keep it as "
                    f"{backup.name} and regenerate."
                )
            with atomic_write(backup) as f:
                f.write(exercise_path.read_bytes())
        _atomic_write(exercise_path, text)
        return "updated"
    exercise_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(exercise_path, text)
    return "created"


def _atomic_write(path: Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def stale_exercises(root: Path) -> list[str]:
    """What ``build`` would change in ``exercises/``: missing, outdated or orphaned files."""
    problems = []
    solutions = sorted((root / "solutions").glob("[0-9][0-9]_*.ipynb"))
    expected = {p.name for p in solutions}
    for sol in solutions:
        target = root / "exercises" / sol.name
        text = notebook_text(make_exercise(nbformat.read(sol, as_version=4), sol.name))
        if not target.exists():
            problems.append(f"exercises/{sol.name} is missing")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"exercises/{sol.name} is out of date with solutions/{sol.name}")
    for ex in sorted((root / "exercises").glob("[0-9][0-9]_*.ipynb")):
        if ex.name not in expected:
            problems.append(f"exercises/{ex.name} has no solutions/{ex.name}")
    return problems


# --------------------------------------------------------------------------- executing notebooks


def execute_notebook(path: Path, fast: bool | None = None, timeout: int = 600) -> bool:
    """Run a notebook top to bottom in a fresh kernel and store its outputs in place.

    ``fast`` sets ``LLMCOURSE_FAST`` for the kernel (None: inherit). Errors, and a
    cell that runs longer than ``timeout`` seconds, stop the run and raise
    (nothing is written). Returns True when the file changed.
    """
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("LLMCOURSE_FAST")
    hash_before = os.environ.get("PYTHONHASHSEED")
    if fast is not None:
        os.environ["LLMCOURSE_FAST"] = "1" if fast else "0"
    os.environ["PYTHONHASHSEED"] = "0"
    try:
        was_fast = fast_mode()
        with tempfile.TemporaryDirectory(prefix="llmcourse_kernel_") as sockets:
            # IPC sockets in a folder of our own: kernels started at the same moment cannot collide on TCP ports
            km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
            client = NotebookClient(
                nb, km=km, timeout=timeout, kernel_name="python3", record_timing=False,
                resources={"metadata": {"path": str(path.parent.resolve())}},
            )
            client.execute(stderr=subprocess.DEVNULL, cleanup_kc=True)  # we made the kernel manager: shut it down
            display_name = km.kernel_spec.display_name
    finally:
        _restore("LLMCOURSE_FAST", env_before)
        _restore("PYTHONHASHSEED", hash_before)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    nb.metadata.setdefault("llmcourse", {})["fast"] = was_fast  # how these outputs were made
    # what JupyterLab writes when it opens the notebook, so that opening it changes nothing
    nb.metadata["kernelspec"] = {"display_name": display_name, "language": "python", "name": "python3"}
    text = notebook_text(nb)
    if path.read_text(encoding="utf-8") == text:
        return False
    _atomic_write(path, text)
    return True


def coalesce_streams(outputs: list) -> list:
    """Join every print to the same stream (stdout, stderr) into one output at the place of its first piece,
    however the kernel happened to chunk or interleave them, so the same run always gives the same file
    (nbval compares streams the same way)."""
    joined: list = []
    first: dict[str, dict] = {}
    for out in outputs:
        if out.get("output_type") == "stream":
            name = out.get("name")
            if name in first:
                first[name]["text"] = first[name]["text"] + out["text"]
                continue
            first[name] = out
        joined.append(out)
    return joined


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# --------------------------------------------------------------------------- the whole build


@dataclass
class SelfCheck:
    """The grader self-check of one chapter."""

    chapter: str
    solution_score: int
    exercise_score: int
    max_score: int
    exercise_passing: list[str]

    @property
    def ok(self) -> bool:
        return self.solution_score == self.max_score and not self.exercise_passing


def self_check(root: Path, name: str) -> SelfCheck:
    """Grade ``solutions/name`` (must get full marks) and ``exercises/name`` (every check must fail)."""
    from llmcourse.grading.runner import grade_notebook

    solution = grade_notebook(root / "solutions" / name)
    exercise = grade_notebook(root / "exercises" / name)
    return SelfCheck(
        solution.chapter, solution.score, exercise.score, solution.max_score,
        [c.name for c in exercise.checks if c.passed],
    )
