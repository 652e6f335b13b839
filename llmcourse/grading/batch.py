"""Grading a whole class in one command (chapter: the course's grading tools).

    llmcourse grade submissions/ --jobs 2 --csv grades.csv --json grades.json

:func:`grade_class` grades every notebook it is given (folders are searched for ``*.ipynb``), ``jobs`` at a
time. Each submission is graded by a grader process of its own (``python -m llmcourse.grading.batch``),
which runs the notebook in a sandbox of its own (:mod:`llmcourse.grading.sandbox`), with kernels that talk
over IPC sockets in that sandbox's folder, so kernels started side by side never race for a TCP port and
one hostile submission cannot reach another's kernel, grader or grade.

The gradebook has one row per submission (file, content hash, chapter, score, maximum, each check's
result, problems, seconds) and a summary of the checks the class failed most, with their hints. When the
JSON gradebook already exists, a submission whose content hash and grading settings are unchanged keeps
its row instead of being graded again.
"""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmcourse.grading.runner import GradingError, grade_notebook, safe_text

MAX_JOBS = 64
GRADEBOOK_VERSION = 1


def find_submissions(paths: list[str]) -> list[Path]:
    """The notebooks named by ``paths``: files as given, folders searched (sorted) for ``*.ipynb``."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb")
                            if p.is_file() and ".ipynb_checkpoints" not in p.parts)
        elif path.exists():
            found.append(path)
        else:
            raise GradingError(f"no such file or folder: {safe_text(name)}")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise GradingError("no notebooks to grade (a folder holds none?)")
    return unique


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Settings:
    """What a grade depends on besides the file: a gradebook row is reused only when these match."""

    chapter: str | None = None
    timeout: float = 60.0
    sandbox: str = "auto"
    fast: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"chapter": self.chapter, "timeout": self.timeout, "sandbox": self.sandbox, "fast": self.fast}


def grade_one(path: Path, settings: Settings) -> dict[str, Any]:
    """One gradebook row for ``path``, graded in this process (what each grader process runs)."""
    start = time.perf_counter()
    row: dict[str, Any] = {"file": str(path), "sha256": file_hash(path), "settings": settings.to_dict()}
    try:
        report = grade_notebook(path, chapter=settings.chapter, cell_timeout=settings.timeout,
                                fast=settings.fast, sandbox=settings.sandbox)
    except GradingError as exc:
        row.update(chapter=None, score=0, max_score=0, checks=[], problems=[], error=safe_text(exc))
    else:
        data = report.to_dict()
        row.update(chapter=data["chapter"], score=data["score"], max_score=data["max_score"],
                   checks=[{k: c[k] for k in ("name", "exercise", "points", "max_points", "passed", "message")}
                           for c in data["checks"]],
                   problems=data["problems"], error=None, sandbox=data["sandbox"])
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def _grade_in_own_process(path: Path, settings: Settings, deadline: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "llmcourse.grading.batch", str(path), json.dumps(settings.to_dict())]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=deadline, stdin=subprocess.DEVNULL)
        lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
        row = json.loads(lines[-1]) if lines else None
        if not isinstance(row, dict):
            raise ValueError(f"the grader process ended with status {done.returncode} and no result")
        return row
    except (subprocess.TimeoutExpired, ValueError) as exc:
        what = f"grading took longer than {deadline:g} s" if isinstance(exc, subprocess.TimeoutExpired) else str(exc)
        return {"file": str(path), "sha256": file_hash(path), "settings": settings.to_dict(), "chapter": None,
                "score": 0, "max_score": 0, "checks": [], "problems": [], "error": safe_text(what),
                "seconds": round(time.perf_counter() - start, 2)}


def load_gradebook(path: Path | None) -> list[dict[str, Any]]:
    """The rows of an earlier JSON gradebook (none when it is missing or unreadable)."""
    if path is None or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data.get("submissions", []) if isinstance(data, dict) else []
        return [r for r in rows if isinstance(r, dict) and isinstance(r.get("file"), str)]
    except (OSError, ValueError):
        return []


@dataclass
class Gradebook:
    """One row per submission, and the checks the class failed most."""

    rows: list[dict[str, Any]]
    seconds: float = 0.0
    jobs: int = 1
    hints: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def all_full_marks(self) -> bool:
        return all(r["error"] is None and r["max_score"] > 0 and r["score"] == r["max_score"] for r in self.rows)

    def most_failed(self) -> list[dict[str, Any]]:
        """Each (chapter, check) with how many graded submissions failed it, most failed first."""
        counts: dict[tuple[str, str], list[int]] = {}
        for r in self.rows:
            for c in r.get("checks", []):
                key = (r["chapter"], c["name"])
                seen = counts.setdefault(key, [0, 0])
                seen[1] += 1
                seen[0] += 0 if c["passed"] else 1
        out = [{"chapter": ch, "check": name, "failed": f, "graded": n, "hint": self.hints.get((ch, name), "")}
               for (ch, name), (f, n) in counts.items() if f]
        return sorted(out, key=lambda d: (-d["failed"], d["chapter"], d["check"]))

    def to_dict(self) -> dict[str, Any]:
        return {"version": GRADEBOOK_VERSION, "jobs": self.jobs, "seconds": round(self.seconds, 2),
                "submissions": self.rows, "most_failed": self.most_failed()}

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["file", "chapter", "score", "max_score", "checks", "problems", "error", "seconds",
                          "sha256", "reused"])
            for r in self.rows:
                checks = "; ".join(f"{c['name']}={c['points']}/{c['max_points']}" for c in r.get("checks", []))
                out.writerow([r["file"], r["chapter"] or "", r["score"], r["max_score"], checks,
                              " | ".join(r.get("problems", [])), r.get("error") or "", r.get("seconds", ""),
                              r.get("sha256", ""), "yes" if r.get("reused") else ""])

    def to_table(self) -> str:
        lines = [f"{'score':>9}  {'chapter':7}  {'seconds':>7}  file"]
        for r in self.rows:
            score = f"{r['score']}/{r['max_score']}" if r["error"] is None else "error"
            note = " (unchanged, not graded again)" if r.get("reused") else ""
            lines.append(f"{score:>9}  {(r['chapter'] or '-'):7}  {r.get('seconds', 0):7.1f}  "
                         f"{safe_text(r['file'])}{note}")
            if r["error"]:
                lines.append(f"{'':9}  error: {safe_text(r['error'])}")
        failed = self.most_failed()
        if failed:
            lines += ["", "Checks the class failed most:"]
            for d in failed[:10]:
                lines.append(f"- chapter {d['chapter']} {d['check']}: failed by {d['failed']} of {d['graded']}")
                if d["hint"]:
                    lines.append(f"  hint: {safe_text(d['hint'])}")
        graded = sum(1 for r in self.rows if not r.get("reused"))
        lines += ["", f"{len(self.rows)} submissions ({graded} graded now) in {self.seconds:.1f} s with "
                      f"{self.jobs} job(s)"]
        return "\n".join(lines)


def grade_class(paths: list[str], settings: Settings, jobs: int = 1, previous: Path | None = None,
                deadline: float = 3600.0, progress: Callable[[dict[str, Any]], None] | None = None) -> Gradebook:
    """Grade every notebook in ``paths``, ``jobs`` at a time, each in its own grader process and sandbox."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise GradingError(f"--jobs must be a whole number from 1 to {MAX_JOBS}, got {safe_text(jobs, 20)}")
    submissions = find_submissions(paths)
    earlier = {r["file"]: r for r in load_gradebook(previous)}
    start = time.perf_counter()

    def grade(path: Path) -> dict[str, Any]:
        old = earlier.get(str(path))
        if old and old.get("sha256") == file_hash(path) and old.get("settings") == settings.to_dict() \
                and old.get("error") is None:
            row = {**old, "reused": True}
        else:
            row = {**_grade_in_own_process(path, settings, deadline), "reused": False}
        if progress:
            progress(row)
        return row

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(grade, submissions))
    hints: dict[tuple[str, str], str] = {}
    from llmcourse.grading.checks import load_chapter

    for chapter in {r["chapter"] for r in rows if r["chapter"]}:
        try:
            spec = settings.chapter if settings.chapter and not str(settings.chapter).isdigit() else chapter
            hints.update({(chapter, c.name): c.hint for c in load_chapter(spec).checks})
        except Exception:
            pass
    return Gradebook(rows, time.perf_counter() - start, jobs, hints)


def main(argv: list[str]) -> None:
    """``python -m llmcourse.grading.batch PATH SETTINGS_JSON``: print one gradebook row as JSON."""
    path, raw = Path(argv[0]), json.loads(argv[1])
    row = grade_one(path, Settings(**raw))
    sys.stdout.write("\n" + json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
