#!/usr/bin/env python3
"""Set up and run the course with one command. Needs only Python 3.10+ (and git to get here).

    python3 course.py lab     install what the lessons need (once), then open JupyterLab on notebooks/
    python3 course.py test    add the test tools to that environment (once), then run every test

Everything goes into a virtual environment in .venv/ next to this file; nothing
is installed system-wide. Re-running is quick: the install is skipped while
pyproject.toml is unchanged.

PyTorch: by default ``torch==2.13.0`` is installed first (on Linux from PyPI
that is the CUDA build, which also runs on a CPU). To choose another build set
LLMCOURSE_TORCH, e.g. for a small CPU-only install on Linux:

    LLMCOURSE_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" python3 course.py lab
"""
from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
DEFAULT_TORCH = "torch==2.13.0"


def run(*cmd: str | os.PathLike[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def ensure_environment(extras: str) -> None:
    """Create .venv and install llmcourse (with ``extras``) unless that was already done."""
    if sys.version_info < (3, 10):
        sys.exit(f"llmcourse needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        print(f"Creating a virtual environment in {VENV} ...", flush=True)
        try:
            venv.create(VENV, with_pip=True)
        except Exception as exc:  # Debian/Ubuntu ship venv separately
            sys.exit(f"Could not create a virtual environment ({exc}). On Debian/Ubuntu install it with "
                     "`sudo apt install python3-venv`, then run this command again.")
    torch_spec = os.environ.get("LLMCOURSE_TORCH", DEFAULT_TORCH)
    stamp = VENV / f".llmcourse-installed-{extras or 'base'}"
    fingerprint = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + torch_spec.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == fingerprint:
        return
    has_torch = subprocess.run([str(PYTHON), "-c", "import torch"], capture_output=True).returncode == 0
    if not has_torch:
        run(PYTHON, "-m", "pip", "install", *shlex.split(torch_spec))
    target = f".[{extras}]" if extras else "."
    run(PYTHON, "-m", "pip", "install", "-e", target, cwd=ROOT)
    stamp.write_text(fingerprint)


def lab_command(extra_args: list[str] = (), root: Path = ROOT) -> list[str]:
    """The JupyterLab command line `course.py lab` runs (the browser test starts the lab with it too).

    The server's root is the course folder, so notebooks/, exercises/ and workspace/ are all in the file browser;
    it opens on notebooks/. Containers often run as root, which Jupyter refuses unless told it is intended.
    """
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [str(BIN / "jupyter"), "lab", f"--ServerApp.root_dir={root}",
            "--ContentsManager.preferred_dir=notebooks", *as_root, *extra_args]


def lab(extra_args: list[str]) -> int:
    ensure_environment("")
    process = subprocess.Popen(lab_command(extra_args), cwd=ROOT)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reaches Jupyter too (same terminal), which asks to confirm and then shuts down cleanly;
            # keep waiting for it instead of dying with a traceback.
            continue


def test(extra_args: list[str]) -> int:
    ensure_environment("test")  # the lab's environment plus the test tools, nothing else
    # Tests run in fast mode, one pytest worker per core; each worker (and the notebook
    # kernels it starts) uses one thread, so tiny tensor ops do not fight over the cores.
    env = dict(os.environ, LLMCOURSE_FAST="1", PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    return subprocess.call([str(PYTHON), "-m", "pytest", "-n", "auto", *extra_args], cwd=ROOT, env=env)


def main() -> int:
    commands = {"lab": lab, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
