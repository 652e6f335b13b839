"""The sandbox the grader runs a learner's kernel in (chapter: the course's grading tools).

Every graded kernel gets:

* a fresh temporary folder as its working directory, holding only a copy of the notebook under a neutral
  name (``submission.ipynb``), with a private HOME and TMPDIR inside it;
* a small environment of its own (fast mode, seeds, the thread settings and PYTHONPATH) instead of the grader's;
* limits set with ``resource.setrlimit`` before the kernel starts: writable memory, CPU seconds,
  the size of any file it writes, the number of processes, no core files;
* its own session and process group; when grading ends, that group is killed, and so is every process
  whose environment carries this kernel's grading token (children that started a session of their own or
  double-forked).

Where bubblewrap (``bwrap``) is installed and works, the kernel also runs inside it: the system and the
Python environment are mounted read-only, the only writable place is the temporary folder, there is no
network, the process table is private (no ``/proc/<ppid>`` of the grader), and the course's ``solutions/``
and the submitted file are not mounted at all. Elsewhere the rlimits, the private folder and the process
sweep still apply, but the kernel can see the files its user can see.

:func:`sandbox_kind` says which one is in use (``llmcourse doctor`` prints it). The command that launches
a kernel is :func:`kernel_command`; ``python -m llmcourse.grading.sandbox LIMITS_JSON -- CMD...`` is the
small launcher that applies the limits and then replaces itself with ``CMD``.
"""
from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

TOKEN_VARIABLE = "LLMCOURSE_GRADING_TOKEN"
SUBMISSION_NAME = "submission.ipynb"
# Variables the kernel may inherit from the grader; everything else is set by the sandbox itself.
INHERITED = ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "CUDA_VISIBLE_DEVICES",
             "LLMCOURSE_CACHE")


@dataclass(frozen=True)
class Limits:
    """What one graded kernel may use."""

    memory_mb: int = 8192  # writable private memory (RLIMIT_DATA) of each process
    cpu_seconds: int = 3600  # CPU time of each process (all its threads together)
    file_mb: int = 256  # largest file it may write
    processes: int = 512  # tasks (processes and threads) of its user

    def validate(self) -> None:
        for name, value, low in (("memory_mb", self.memory_mb, 512), ("cpu_seconds", self.cpu_seconds, 1),
                                 ("file_mb", self.file_mb, 1), ("processes", self.processes, 16)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"the sandbox limit {name} must be a whole number of at least {low}, got {value!r}")


def apply_limits(limits: Limits) -> None:
    """Set the rlimits of the current process (inherited by everything it starts)."""
    mb = 1024 * 1024
    # RLIMIT_DATA rather than RLIMIT_AS: it counts the memory a process writes (every malloc, every tensor)
    # but not address space reserved and never written, which CUDA reserves by the hundreds of gigabytes.
    wanted = {resource.RLIMIT_DATA: limits.memory_mb * mb, resource.RLIMIT_CPU: limits.cpu_seconds,
              resource.RLIMIT_FSIZE: limits.file_mb * mb, resource.RLIMIT_CORE: 0,
              resource.RLIMIT_NPROC: _tasks_of_user() + limits.processes}
    for which, value in wanted.items():
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def _tasks_of_user() -> int:
    """How many tasks this user runs now (RLIMIT_NPROC counts them all, not only the kernel's)."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


# --------------------------------------------------------------------------- bubblewrap


@lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """True when ``bwrap`` is installed and can start a process here (user namespaces may be off)."""
    exe = shutil.which("bwrap")
    if exe is None or os.environ.get("LLMCOURSE_SANDBOX") == "rlimits":
        return False
    try:
        done = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def sandbox_kind(requested: str = "auto") -> str:
    """``"bwrap"`` or ``"rlimits"``: the sandbox a graded kernel gets (``requested`` may force one)."""
    if requested not in ("auto", "bwrap", "rlimits"):
        raise ValueError(f"unknown sandbox {requested!r}: use auto, bwrap or rlimits")
    if requested == "rlimits":
        return "rlimits"
    if bwrap_works():
        return "bwrap"
    if requested == "bwrap":
        raise ValueError("bubblewrap (bwrap) is not installed or cannot start here; use --sandbox rlimits")
    return "rlimits"


def describe_sandbox() -> str:
    """One line for ``llmcourse doctor``."""
    if sandbox_kind() == "bwrap":
        return (f"bubblewrap ({shutil.which('bwrap')}): read-only system, no network, private /proc, "
                f"plus rlimits and a private folder")
    return ("rlimits and a private folder only (install bubblewrap, Debian package `bubblewrap`, for a "
            "read-only system without network)")


def _course_folders() -> list[Path]:
    """Folders the kernel must never see: the course's solutions/ (next to the installed package)."""
    root = Path(__file__).resolve().parents[2]
    return [p for p in (root / "solutions",) if p.is_dir()]


def _readonly_roots() -> list[Path]:
    """What a kernel needs to import Python, torch and llmcourse."""
    import llmcourse

    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parents[1],
             Path(llmcourse.__file__).resolve().parent}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        roots.add(Path(sysconfig.get_paths()[key]).resolve())
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and Path(entry).is_dir():
            roots.add(Path(entry).resolve())
    cache = os.environ.get("LLMCOURSE_CACHE") or str(Path.home() / ".cache" / "llmcourse")
    if Path(cache).is_dir():
        roots.add(Path(cache).resolve())
    # The smallest set: a folder inside another bound folder is already there.
    kept = sorted(roots, key=lambda p: len(p.parts))
    return [p for i, p in enumerate(kept) if not any(p.is_relative_to(q) for q in kept[:i])]


def bwrap_prefix(root: Path) -> list[str]:
    """The ``bwrap`` arguments: read-only system and Python, ``root`` writable, nothing else."""
    # JPY_PARENT_PID: inside a private process table the kernel's parent is pid 1, which ipykernel would take
    # for "my parent has exited"; --die-with-parent ends it with the launcher instead.
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--unsetenv", "JPY_PARENT_PID"]
    for system in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt"):
        if os.path.islink(system):
            args += ["--symlink", os.readlink(system), system]
        elif os.path.isdir(system):
            args += ["--ro-bind", system, system]
    for folder in _readonly_roots():
        if not any(folder.is_relative_to(s) for s in ("/usr", "/etc", "/opt")):
            args += ["--ro-bind", str(folder), str(folder)]
    for hidden in _course_folders():  # mounted over with an empty folder when a bound folder holds it
        if any(hidden.is_relative_to(f) for f in _readonly_roots()):
            args += ["--tmpfs", str(hidden)]
    args += ["--bind", str(root), str(root), "--chdir", str(root / "work")]
    return args


# --------------------------------------------------------------------------- one kernel's sandbox


@dataclass
class Sandbox:
    """A private folder, an environment and a token for one graded kernel."""

    root: Path
    kind: str
    limits: Limits
    token: str

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def channel_dir(self) -> Path:
        """Where the checks write their results (a file per run, named by a fresh random token)."""
        return self.root / "results"

    def environment(self, fast: bool) -> dict[str, str]:
        home = self.workdir / "home"
        env = {k: os.environ[k] for k in INHERITED if os.environ.get(k)}
        env.setdefault("LLMCOURSE_CACHE", str(Path.home() / ".cache" / "llmcourse"))
        env.update({
            "HOME": str(home), "TMPDIR": str(self.workdir / "tmp"), "IPYTHONDIR": str(home / ".ipython"),
            "JUPYTER_RUNTIME_DIR": str(home / ".runtime"), "MPLCONFIGDIR": str(home / ".matplotlib"),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONNOUSERSITE": "1", "PYTHONHASHSEED": "0",
            "MPLBACKEND": "Agg", "LLMCOURSE_FAST": "1" if fast else "0", TOKEN_VARIABLE: self.token,
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        return env

    def kernel_command(self, kernel_cmd: list[str]) -> list[str]:
        """The launcher (limits), then bubblewrap where in use, then ``kernel_cmd``."""
        launcher = [sys.executable, "-m", "llmcourse.grading.sandbox", json.dumps(asdict(self.limits)), "--"]
        inner = bwrap_prefix(self.root) if self.kind == "bwrap" else []
        return launcher + inner + kernel_cmd

    def kill_all(self, group: int | None = None) -> int:
        """Kill the kernel's process group and every process carrying the token; how many were signalled."""
        killed = 0
        if group is not None and group > 1:
            try:
                os.killpg(group, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        for _ in range(3):  # a process may fork while we sweep: sweep until none is left
            found = tokened_processes(self.token)
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except (ProcessLookupError, PermissionError):
                    pass
            if not found:
                break
            time.sleep(0.05)
        return killed


def tokened_processes(token: str) -> list[int]:
    """PIDs of processes (not this one) whose environment holds ``TOKEN_VARIABLE=token``."""
    needle = f"{TOKEN_VARIABLE}={token}".encode() + b"\0"
    found = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle in f.read() + b"\0":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def new_sandbox(kind: str = "auto", limits: Limits | None = None, parent: str | None = None) -> Sandbox:
    """Make the folders of a fresh sandbox under ``parent`` (default: the system's temp folder)."""
    limits = limits or Limits()
    limits.validate()
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="llmcourse-grade-", dir=parent)).resolve()
    for sub in ("work", "work/home", "work/tmp", "results"):
        (root / sub).mkdir(exist_ok=True)
    return Sandbox(root, sandbox_kind(kind), limits, secrets.token_hex(16))


def main(argv: list[str]) -> None:
    """The launcher: ``LIMITS_JSON -- CMD...``; applies the limits, then becomes ``CMD``."""
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m llmcourse.grading.sandbox LIMITS_JSON -- CMD...")
    apply_limits(Limits(**json.loads(argv[0])))
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
