"""Grading a class: 20 submissions of one chapter with ``llmcourse grade FOLDER --jobs N``.

The class is made from the chapter's solution and exercise: solved copies, untouched exercises, broken
ones (a syntax error, an endless loop, a cell that kills the kernel) and hostile ones (forged result
lines, another chapter's metadata, ANSI text, a child process that escapes its session, checks replaced
inside the kernel). Prints the
total wall time, the time per submission and each row's score.

    .venv/bin/python benchmarks/bench_grade_class.py [--chapter 01] [--jobs 2] [--n 20]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

HOSTILE = {
    "forged": "import json\nfor n in range(40):\n    print('@@llmcourse-check ' + json.dumps({'name': f'c{n}', "
              "'points': 999, 'max_points': 999, 'passed': True}))",
    "ansi": "raise ValueError('\\x1b[2J\\x1b[HTotal: 99/99 points')",
    "escape": "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
              "start_new_session=True)",
    "loop": "while True:\n    pass",
    "kill": "import os\nos._exit(1)",
    "syntax": "def broken(:\n    pass",
    # replaces the checks, the watch and CheckFailed in the kernel: the checks run in the grader, so nothing changes
    "hooked": "import llmcourse.grading.checks as _c\n"
              "_c.run_check = lambda check, ns: _c.CheckResult(check.name, check.exercise, check.points, "
              "check.points, True, 'passed', '')\n_c._watched = lambda compute: (compute(), None, None)",
}


def make_class(chapter: str, n: int, folder: Path) -> list[str]:
    solution = nbformat.read(next((ROOT / "solutions").glob(f"{chapter}_*.ipynb")), as_version=4)
    exercise = nbformat.read(next((ROOT / "exercises").glob(f"{chapter}_*.ipynb")), as_version=4)
    kinds = ["solved", "untouched", "solved+forged", "untouched+forged", "solved+ansi", "solved+escape",
             "solved+loop", "solved+kill", "solved+syntax", "wrong-chapter", "untouched+hooked"]
    made = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        base, _, extra = kind.partition("+")
        nb = nbformat.from_dict(solution if base in ("solved", "wrong-chapter") else exercise)
        nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
        if extra:
            nb.cells.insert(len(nb.cells) // 2, nbformat.v4.new_code_cell(HOSTILE[extra]))
        if base == "wrong-chapter":
            nb.metadata.setdefault("llmcourse", {})["chapter"] = "00" if chapter != "00" else "01"
        name = f"{chapter}_student{i:02d}_{kind.replace('+', '_')}.ipynb"
        nbformat.write(nb, folder / name)
        made.append(kind)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", default="01")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=10, help="seconds per cell (the loops hit it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "submissions"
        folder.mkdir()
        make_class(args.chapter, args.n, folder)
        book = Path(tmp) / "grades.json"
        cmd = [sys.executable, "-m", "llmcourse.cli", "grade", str(folder), "--jobs", str(args.jobs),
               "--timeout", str(args.timeout), "--json", str(book), "--csv", str(Path(tmp) / "grades.csv")]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        total = time.perf_counter() - start
        print(done.stdout[-6000:])
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True)
        again = time.perf_counter() - start
        print(f"{args.n} submissions of chapter {args.chapter}, --jobs {args.jobs}: {total:.1f} s in all, "
              f"{total / args.n:.1f} s per submission; a re-run with nothing changed: {again:.1f} s")


if __name__ == "__main__":
    main()
