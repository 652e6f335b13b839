"""Chapter 10: starting several processes that train together.

Every parallel scheme of this chapter runs as ``world_size`` processes, one per
device. Each process (a *rank*, numbered ``0 .. world_size - 1``) runs the same
function; they talk through ``torch.distributed`` collectives (``all_reduce``,
``broadcast``, ``send``/``recv``) over a *backend*: ``gloo`` between CPU
processes, ``nccl`` between GPUs. Nothing else changes between the two.

* :func:`run_parallel` starts the processes itself (``torch.multiprocessing``
  with the ``spawn`` start method), joins them into one process group and returns
  what each rank's function returned. If one rank raises or dies, the others are
  stopped at once and a :class:`ParallelError` names the rank and its error;
  nothing waits forever. The function must live in an importable ``.py`` file.
* :func:`notebook_launch` does the same through ``accelerate.notebook_launcher``,
  which *forks* the notebook's own process, so functions defined in a notebook
  cell work.
* :func:`init_from_env` joins a process group when a launcher (``torchrun``,
  ``accelerate launch``) has started us, as in :mod:`llmcourse.parallel.demo`.

Inside the function, ``dist.get_rank()`` and ``dist.get_world_size()`` say who
is who, and :func:`rank_device` says which device this rank should use.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import math
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class ParallelError(RuntimeError):
    """A rank of a parallel run raised an exception, died, or the run took too long."""

    def __init__(self, message: str, rank: int | None = None):
        super().__init__(message)
        self.rank = rank


# --------------------------------------------------------------------------- small helpers


def default_backend() -> str:
    """``"nccl"`` when CUDA GPUs are there, otherwise ``"gloo"`` (CPU processes)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def rank_device() -> torch.device:
    """The device this rank computes on: its own GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def free_port() -> int:
    """A TCP port nobody listens on right now (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def to_cpu(value: Any) -> Any:
    """Copy every tensor inside lists, tuples and dicts to the CPU (detached), so it can travel home."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_cpu(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def _check_world_size(world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a whole number >= 1 (how many processes to start), got {world_size!r}")


def _check_importable(fn: Callable) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    qualname = getattr(fn, "__qualname__", "")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(f"run_parallel starts fresh Python processes that import fn by name, so fn must be a "
                        f"top-level function of a module; {qualname!r} is not. Move it to the top of a .py file, "
                        f"or use notebook_launch, which forks the current process instead.")
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and getattr(main, "__file__", None) is None:
        raise TypeError(f"{qualname!r} was defined interactively (in a notebook or the REPL), where freshly "
                        f"started processes cannot import it. Use notebook_launch(fn, world_size) here, or put "
                        f"the function in a .py file and import it.")


def _limit_threads(world_size: int) -> None:
    # Several processes share the CPU: unless told otherwise, give each an even share of the cores.
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))


# --------------------------------------------------------------------------- run_parallel


def _worker(rank: int, fn: Callable, world_size: int, backend: str, port: int, timeout_s: float,
            args: Sequence[Any], results_dir: str) -> None:
    """What each spawned process runs: join the group, call ``fn(*args)``, write the result to a file.

    The rank first starts a session of its own, so that stopping it also stops every process it started."""
    if hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:  # already a group leader
            pass
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    try:
        _limit_threads(world_size)
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        result = to_cpu(fn(*args))
        torch.save(result, os.path.join(results_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - report everything, including KeyboardInterrupt
        _write_error(results_dir, rank, exc)
        sys.stdout.flush()
        os._exit(1)  # skip interpreter shutdown, which could wait on a peer that is still in a collective


def _write_error(results_dir: str, rank: int, exc: BaseException) -> None:
    """Save a rank's error, stamped with the time, so the parent can tell the first failure from its victims."""
    _write_report(results_dir, rank, f"raised {type(exc).__name__}: {exc}\n\n{traceback.format_exc()}", time.time())


def _write_report(results_dir: str, rank: int, report: str, stamp: float) -> None:
    path = os.path.join(results_dir, f"rank{rank}.error")
    with open(path + ".tmp", "w") as f:
        f.write(f"{stamp!r}\n{report}")
    os.replace(path + ".tmp", path)  # the parent never reads a half-written report


def _read_errors(results_dir: str) -> dict[int, tuple[float, str]]:
    """``{rank: (time, report)}`` for every rank that saved an error."""
    errors = {}
    for name in os.listdir(results_dir):
        if name.startswith("rank") and name.endswith(".error"):
            with open(os.path.join(results_dir, name)) as f:
                stamp, _, report = f.read().partition("\n")
            errors[int(name[4:-6])] = (float(stamp), report)
    return errors


def _signal_group(p: Any, sig: int) -> None:
    """Send ``sig`` to the process group a rank leads (the rank and every process it started)."""
    if p.pid is None or not hasattr(os, "killpg"):
        return
    try:  # a group with the rank's id exists only because the rank started it (os.setsid in _worker)
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(processes: Sequence[Any]) -> None:
    """Stop every rank and everything it started: SIGTERM to each rank's process group, then SIGKILL."""
    for p in processes:
        if p.is_alive():
            p.terminate()
        _signal_group(p, signal.SIGTERM)
    for p in processes:
        if p.pid is None:  # never started
            continue
        p.join(timeout=3)
        if p.is_alive():
            p.kill()
            p.join()
        _signal_group(p, signal.SIGKILL)  # children that outlived their rank


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return (f"exited with code {code} without reporting an error: it called os._exit, crashed in native code, "
            f"or failed while starting (its output above says which; a script that starts processes must guard "
            f"its top level with `if __name__ == '__main__':`)")


def run_parallel(fn: Callable, world_size: int = 2, backend: str | None = None, timeout_s: float = 60,
                 args: Sequence[Any] = ()) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` new processes joined in one process group; return each rank's result.

    ``backend`` defaults to :func:`default_backend`. ``timeout_s`` bounds the whole run and every collective:
    past it, all processes are stopped and :class:`ParallelError` is raised. Results come back in rank order,
    with tensors moved to the CPU.
    """
    _check_world_size(world_size)
    _check_importable(fn)
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    backend = backend or default_backend()
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"backend 'nccl' needs one GPU per process: world_size={world_size} but "
                         f"{torch.cuda.device_count()} GPU(s) are visible. Use backend='gloo' or fewer processes.")
    results_dir = tempfile.mkdtemp(prefix="llmcourse_parallel_")
    ctx = mp.get_context("spawn")
    port = free_port()
    processes = [ctx.Process(target=_worker, args=(rank, fn, world_size, backend, port, timeout_s, tuple(args),
                                                   results_dir))
                 for rank in range(world_size)]
    try:
        for p in processes:
            p.start()
        deadline = time.monotonic() + timeout_s
        while any(p.exitcode is None for p in processes):
            failed = [r for r, p in enumerate(processes) if p.exitcode not in (None, 0)]
            if failed:
                _stop(processes)
                raise _failure(failed, processes, results_dir)
            left = deadline - time.monotonic()
            if left <= 0:
                running = [r for r, p in enumerate(processes) if p.exitcode is None]
                _stop(processes)
                raise ParallelError(f"the parallel run did not finish within timeout_s={timeout_s} s; "
                                    f"rank(s) {running} were still running and have been stopped. "
                                    f"A rank waiting in a collective its peers never join looks like this.",
                                    rank=running[0])
            multiprocessing.connection.wait([p.sentinel for p in processes if p.exitcode is None],
                                            timeout=min(left, 0.5))
        failed = [r for r, p in enumerate(processes) if p.exitcode != 0]
        if failed:
            raise _failure(failed, processes, results_dir)
        silent = [r for r in range(world_size) if not os.path.exists(os.path.join(results_dir, f"rank{r}.pt"))]
        if silent:
            raise ParallelError(f"rank(s) {silent} exited with code 0 but returned no result: the function ended "
                                f"its process early (os._exit(0)?) instead of returning", rank=silent[0])
        return [torch.load(os.path.join(results_dir, f"rank{r}.pt"), weights_only=False)
                for r in range(world_size)]
    finally:
        _stop(processes)
        shutil.rmtree(results_dir, ignore_errors=True)


def _failure(failed: list[int], processes: Sequence[Any], results_dir: str) -> ParallelError:
    """One error for the first rank that failed (the others were usually its victims)."""
    errors = _read_errors(results_dir)
    reports = []
    for r in failed:
        if r in errors:
            reports.append((errors[r][0], r, f"rank {r} {errors[r][1]}"))
        else:  # died without a word: it did not get to report, so it probably failed first
            reports.append((-math.inf, r, f"rank {r} {_describe_exit(processes[r].exitcode)}"))
    _, rank, message = min(reports)
    return ParallelError(message + "\nThe other ranks were stopped.", rank=rank)


# --------------------------------------------------------------------------- launchers that set the environment


def init_from_env(backend: str | None = None, timeout_s: float = 60) -> tuple[int, int]:
    """Join the process group described by the launcher's environment (``RANK``, ``WORLD_SIZE``, ...).

    ``torchrun`` and ``accelerate launch`` set those variables. Returns ``(rank, world_size)``; does nothing
    more if the group already exists.
    """
    if not dist.is_initialized():
        for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise RuntimeError(f"environment variable {name} is missing: start this program with "
                                   f"`torchrun --nproc_per_node N ...` or `accelerate launch ...`, or call it "
                                   f"through run_parallel / notebook_launch.")
        backend = backend or default_backend()
        world_size = int(os.environ["WORLD_SIZE"])
        _limit_threads(world_size)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def exit_launched_process(code: int = 0) -> None:
    """End a process that ``torchrun`` started, skipping the interpreter's C++ shutdown.

    After all work is done, output written and the process group destroyed, gloo's threads can still abort a
    process while Python shuts down ("terminate called without an active exception", exit code -6; we saw it in
    about one run in twenty on a loaded 2-core machine), and torchrun then reports the whole run as failed.
    Call this last.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# Threads each forked rank computes with. Only 1 is safe; the tests set None to show what happens without it.
FORKED_RANK_THREADS: int | None = 1


def _watch_progress(rank: int, timeout_s: float, results_dir: str) -> None:
    """Start a thread that ends this rank when its main thread makes no progress for ``timeout_s`` seconds.

    Progress means the Python line being run changes. A rank stuck inside one call (a collective its peers never
    join, or a computation that cannot finish) is reported with the stack it was stuck in, stamped with the time
    the stall began, so the parent names the rank that stalled first. Should the thread itself be kept from
    running, ``faulthandler`` writes the stack and ends the process a little later.
    """
    import faulthandler
    import threading

    main = threading.main_thread().ident
    backstop = open(os.path.join(results_dir, f"rank{rank}.stall"), "w")
    grace = timeout_s + max(5.0, timeout_s / 2)
    tick = min(1.0, timeout_s / 10)

    def watch() -> None:
        last, since = None, time.monotonic()
        while True:
            faulthandler.dump_traceback_later(grace, exit=True, file=backstop)
            time.sleep(tick)
            frame = sys._current_frames().get(main)
            if frame is None:
                return
            here = (id(frame.f_code), frame.f_lineno, frame.f_lasti)
            now = time.monotonic()
            if here != last:
                last, since = here, now
            elif now - since >= timeout_s:
                entries = traceback.extract_stack(frame)
                ours = [i for i, e in enumerate(entries) if e.filename == __file__ and e.name == "worker"]
                stack = "".join(traceback.format_list(entries[ours[-1] + 1:] if ours else entries))
                _write_report(results_dir, rank,
                              f"made no progress for {timeout_s:g} s (timeout_s); it was stuck at "
                              f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}():\n\n"
                              f"{stack}", time.time() - (now - since))
                sys.stdout.flush()
                os._exit(1)

    threading.Thread(target=watch, name=f"llmcourse-watchdog-rank{rank}", daemon=True).start()


def _notebook_worker(fn: Callable, results_dir: str, timeout_s: float, stdout: Any) -> Callable:
    """What each forked process of :func:`notebook_launch` runs: join the group, run fn, save the result."""

    @functools.wraps(fn)  # the elastic launcher logs the function's name
    def worker(*args: Any) -> None:
        from accelerate import PartialState

        sys.stdout = stdout  # the notebook's output, so that prints inside fn show up there
        rank = int(os.environ.get("RANK", 0))
        # A forked child inherits none of its parent's OpenMP worker threads: asked to use several, its first
        # parallel operation would wait for them forever. One thread per rank is always safe after a fork.
        if FORKED_RANK_THREADS:
            torch.set_num_threads(FORKED_RANK_THREADS)
        _watch_progress(rank, timeout_s, results_dir)
        try:
            PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(seconds=timeout_s))
            if not dist.is_initialized():  # one process: accelerate makes no group, so make a group of one
                dist.init_process_group(default_backend(), init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                                        world_size=1, timeout=datetime.timedelta(seconds=timeout_s))
            result = to_cpu(fn(*args))
            torch.save(result, os.path.join(results_dir, f"rank{rank}.pt"))
            dist.barrier()
            dist.destroy_process_group()
        except BaseException as exc:  # noqa: BLE001
            _write_error(results_dir, rank, exc)
            sys.stdout.flush()
            os._exit(1)

    return worker


@contextlib.contextmanager
def _accelerate_state_set_aside():
    """Let notebook_launcher start even if this process already used accelerate (e.g. ``get_device()`` or a
    chapter 08 Trainer): its process-wide state is put aside while the workers are forked, then put back."""
    from accelerate.state import AcceleratorState, PartialState

    saved = [(cls, dict(cls._shared_state)) for cls in (AcceleratorState, PartialState)]
    for cls, _ in saved:
        cls._shared_state.clear()
    try:
        yield
    finally:
        for cls, state in saved:
            cls._shared_state.clear()
            cls._shared_state.update(state)


def _read_stall(results_dir: str, rank: int) -> str:
    """The stack ``faulthandler`` wrote when rank ``rank`` was ended for making no progress ('' if it was not)."""
    try:
        with open(os.path.join(results_dir, f"rank{rank}.stall")) as f:
            return f.read().strip()
    except OSError:
        return ""


def notebook_launch(fn: Callable, world_size: int = 2, args: Sequence[Any] = (), timeout_s: float = 60) -> list[Any]:
    """Run ``fn(*args)`` on ``world_size`` processes with ``accelerate.notebook_launcher``; return each result.

    The processes are forks of this one, so ``fn`` may be defined in a notebook cell. Each joins the process
    group (gloo on CPU, nccl on GPUs) before ``fn`` runs. Each rank computes with one CPU thread (a forked
    process cannot safely use the parent's thread pool). ``timeout_s`` bounds every wait: a rank whose Python
    line does not change for that long (stuck in a collective or a computation) is stopped. If a rank fails or
    stalls, the others are stopped and :class:`ParallelError` names the first rank that did, and where. Do not create
    an ``Accelerator`` in the notebook itself before calling this: accelerate refuses to fork after one exists.
    """
    import io
    import logging

    from accelerate import notebook_launcher
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    _check_world_size(world_size)
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    if torch.cuda.is_available() and torch.cuda.device_count() < world_size:
        raise ValueError(f"world_size={world_size} needs one GPU per process but {torch.cuda.device_count()} "
                         f"are visible.")
    results_dir = tempfile.mkdtemp(prefix="llmcourse_notebook_")
    saved_env = {name: os.environ.get(name) for name in ("ACCELERATE_USE_CPU", "OMP_NUM_THREADS")}
    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "yes"  # several CPU processes, joined with gloo
    os.environ["OMP_NUM_THREADS"] = "1"  # what the forked ranks use (and accelerate then leaves their threads alone)
    # we report failures ourselves, without pages of log lines or "Terminating process ..." warnings
    quiet_logs = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.multiprocessing")]
    saved_levels = [log.level for log in quiet_logs]
    for log in quiet_logs:
        log.setLevel(logging.CRITICAL)
    worker = _notebook_worker(fn, results_dir, timeout_s, sys.stdout)
    # A fork copies whatever the notebook has printed but not yet sent; each rank would send it again.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        with contextlib.redirect_stdout(io.StringIO()), _accelerate_state_set_aside():
            # (the redirect hides accelerate's banner, which says "CUDAs" on a CPU)
            notebook_launcher(worker, args=tuple(args), num_processes=world_size, use_port=str(free_port()))
        return [torch.load(os.path.join(results_dir, f"rank{r}.pt"), weights_only=False)
                for r in range(world_size)]
    except ChildFailedError as exc:
        errors = _read_errors(results_dir)
        if not errors:
            rank, failure = exc.get_first_failure()
            stall = _read_stall(results_dir, rank)
            if stall:
                raise ParallelError(f"rank {rank} made no progress for over timeout_s={timeout_s:g} s and was "
                                    f"stopped; its threads were at:\n{stall}\nThe other ranks were stopped.",
                                    rank=rank) from None
            raise ParallelError(f"rank {rank} died (exit code {failure.exitcode}) without reporting an error.",
                                rank=rank) from None
        rank = min(errors, key=lambda r: (errors[r][0], r))
        raise ParallelError(f"rank {rank} {errors[rank][1]}\nThe other ranks were stopped.",
                            rank=rank) from None
    finally:
        for log, level in zip(quiet_logs, saved_levels):
            log.setLevel(level)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(results_dir, ignore_errors=True)
