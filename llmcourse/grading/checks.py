"""Graded checks: how an exercise is tested.

Each chapter module in ``llmcourse.grading.chapters`` creates a :class:`Chapter` and
registers checks on it::

    chapter = Chapter("01", "Neural networks are numbers")

    @chapter.check("softmax", points=2, hint="Subtract the row maximum before exp.")
    def softmax_matches_reference(ns):
        got = call(ns, "softmax", torch.tensor([[1000.0, 1001.0]]))
        expect_close(got, torch.softmax(torch.tensor([[1000.0, 1001.0]]), -1), "softmax([[1000, 1001]])")

A check receives the learner's namespace (a dict of the names their notebook
defined) and raises :class:`CheckFailed` with a learner-friendly message when
something is wrong. :func:`run_checks` turns every outcome — a wrong value, an
exception, a missing function, an endless loop — into a :class:`CheckResult`.

An exercise that needs more time than a quick function (a training run, two
processes) declares its budget before its checks::

    chapter.time_budget("TrainingLoop", seconds=90)

Each of its checks may then run that long, and so may the notebook cell that
defines it (the cell just above its ``grader.check(...)`` call); every other
check keeps the default limit, so a runaway cell elsewhere still stops early.
"""
from __future__ import annotations

import importlib
import json
import math
import signal
import threading
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from unittest import mock

import torch
import torch.autograd.forward_ad
import torch.autograd.functional
import torch.func

CheckFunction = Callable[[Mapping[str, Any]], None]

DEFAULT_CHECK_TIMEOUT = 10.0  # seconds one check may run, unless its exercise declares a time budget
RESULT_PREFIX = "@@llmcourse-check "  # how report_checks marks its output lines


class CheckFailed(AssertionError):
    """Raised by a check when the learner's code gives a wrong answer."""


@dataclass
class Check:
    """One graded check of one exercise."""

    name: str
    exercise: str
    points: int
    func: CheckFunction
    hint: str = ""
    timeout: float = DEFAULT_CHECK_TIMEOUT


@dataclass
class CheckResult:
    """The outcome of a check, as the grader reports it."""

    name: str
    exercise: str
    points: int
    max_points: int
    passed: bool
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Chapter:
    """The graded exercises of one chapter and their checks."""

    number: str
    title: str
    checks: list[Check] = field(default_factory=list)
    budgets: dict[str, float] = field(default_factory=dict)

    def time_budget(self, exercise: str, seconds: float) -> None:
        """Give ``exercise`` ``seconds`` per check and for the notebook cell that defines it.

        Declare it before the exercise's checks: they take it as their time limit.
        """
        if seconds <= 0:
            raise ValueError(f"a time budget must be positive, got {seconds}")
        if any(c.exercise == exercise for c in self.checks):
            raise ValueError(f"declare the time budget of {exercise!r} before its checks")
        self.budgets[exercise] = float(seconds)

    def check(self, exercise: str, points: int = 1, hint: str = "", timeout: float | None = None,
              name: str | None = None) -> Callable[[CheckFunction], CheckFunction]:
        """Decorator: register ``func`` as a check of ``exercise`` worth ``points``.

        ``timeout`` defaults to the exercise's time budget, else :data:`DEFAULT_CHECK_TIMEOUT`.
        """
        if points <= 0:
            raise ValueError("a check must be worth at least one point")
        if timeout is None:
            timeout = self.budgets.get(exercise, DEFAULT_CHECK_TIMEOUT)

        def register(func: CheckFunction) -> CheckFunction:
            check_name = name or func.__name__
            if any(c.name == check_name for c in self.checks):
                raise ValueError(f"chapter {self.number} already has a check named {check_name!r}")
            self.checks.append(Check(check_name, exercise, points, func, hint, timeout))
            return func

        return register

    @property
    def exercises(self) -> list[str]:
        """Exercise names in the order their first check was registered."""
        return list(dict.fromkeys(c.exercise for c in self.checks))

    @property
    def max_score(self) -> int:
        return sum(c.points for c in self.checks)


def load_chapter(number: str | int) -> Chapter:
    """Import ``llmcourse.grading.chapters.chNN`` and return its ``chapter``.

    ``number`` may also name any module as ``"package.module:attribute"``, for
    chapters that live outside the course (and for the grader's own tests).
    """
    if isinstance(number, str) and ":" in number:
        module_name, _, attribute = number.partition(":")
        return getattr(importlib.import_module(module_name), attribute)
    try:
        number = f"{int(number):02d}"
    except ValueError:
        raise LookupError(f"{number!r} is not a chapter number such as '01'") from None
    try:
        module = importlib.import_module(f"llmcourse.grading.chapters.ch{number}")
    except ModuleNotFoundError as exc:
        if exc.name != f"llmcourse.grading.chapters.ch{number}":
            raise
        raise LookupError(f"chapter {number} has no graded exercises (no llmcourse.grading.chapters.ch{number})") from None
    return module.chapter


# --------------------------------------------------------------------------- helpers for writing checks


def get_function(ns: Mapping[str, Any], name: str) -> Callable[..., Any]:
    """Fetch the learner's function ``name`` or fail with a message that says what to do."""
    if name not in ns:
        raise CheckFailed(
            f"`{name}` is not defined. Did you run the cell that defines it, or rename it? "
            f"The checks look for a function called exactly `{name}`."
        )
    func = ns[name]
    if not callable(func):
        raise CheckFailed(f"`{name}` should be a function, but it is a {type(func).__name__}.")
    return func


def run_learner(what: str, compute: Callable[[], Any], unwritten: str | None = None) -> Any:
    """Run ``compute()``, which runs the learner's code; their exceptions become one readable line.

    ``what`` names the code in the message (`` "`GPT.forward`" ``); ``unwritten`` names what is not written yet
    when it raises ``NotImplementedError`` (default: ``what``).
    """
    try:
        return compute()
    except NotImplementedError:
        raise CheckFailed(f"{unwritten or what} is not written yet: replace `raise NotImplementedError` with your "
                          f"code.") from None
    except (CheckFailed, CheckTimeout):
        raise
    except Exception as exc:  # the learner's bug, reported in one line
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc}{_learner_frame(exc)}") from None


def call(ns: Mapping[str, Any], name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the learner's ``name(*args, **kwargs)``; exceptions become readable failures."""
    func = get_function(ns, name)
    return run_learner(f"`{name}`", lambda: func(*args, **kwargs))


def call_method(obj: Any, owner: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``obj.name(*args, **kwargs)`` on an object of the learner's class ``owner``; errors as in :func:`call`."""
    method = getattr(obj, name, None)
    if not callable(method):
        raise CheckFailed(f"your `{owner}` has no method `{name}()`")
    return run_learner(f"`{owner}.{name}()`", lambda: method(*args, **kwargs),
                       unwritten=f"`{owner}.{name}` (or a function it calls)")


def as_number(value: Any, what: str) -> float:
    """Accept a Python number or a one-element tensor from the learner as a float, else fail clearly."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().reshape(()))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    shape = f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
    raise CheckFailed(f"{what} should be a single number (a float or a one-element tensor), got "
                      f"{type(value).__name__}{shape}.")


def _shown(arg: Any) -> str:
    if isinstance(arg, torch.Tensor):
        return f"tensor of shape {tuple(arg.shape)}"
    return repr(arg)


def expect_tensors(value: Any, shapes: list[tuple[int, ...]], names: list[str], what: str) -> tuple[torch.Tensor, ...]:
    """Accept a tuple (or list) of ``len(names)`` tensors with the given shapes, e.g. a derivation's gradients."""
    if not isinstance(value, (tuple, list)) or len(value) != len(names):
        got = type(value).__name__ + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
        raise CheckFailed(f"{what} should return {len(names)} tensors ({', '.join(names)}, in that order), got {got}.")
    return tuple(expect_shape(v, tuple(shape), f"{what}, {name},") for v, shape, name in zip(value, shapes, names))


def expect_raises_value_error(ns: Mapping[str, Any], name: str, *args: Any) -> None:
    """Pass when the learner's ``name(*args)`` raises a ValueError; fail when it returns or raises another error."""
    try:
        call(ns, name, *args)
    except CheckFailed as exc:
        if "raised ValueError" in str(exc):
            return
        raise
    shown = ", ".join(_shown(a) for a in args)
    raise CheckFailed(f"`{name}({shown})` returned a value; it should raise a ValueError that says why these "
                      f"arguments are not allowed.")


def _learner_frame(exc: BaseException) -> str:
    """Point at the last line of the learner's own code in a traceback (not ours, not a library's)."""
    import sysconfig

    library_dirs = {str(Path(__file__).resolve().parents[1])}
    library_dirs |= {str(Path(sysconfig.get_paths()[key]).resolve()) for key in ("stdlib", "purelib", "platlib")}
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = str(Path(frame.filename).resolve())
        if not any(path.startswith(d) for d in library_dirs):
            line = (frame.line or "").strip()
            return f" (at line {frame.lineno}: `{line}`)" if line else ""
    return ""


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """Accept a tensor (or a NumPy array / number) from the learner, else fail clearly."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        import numpy as np

        if isinstance(value, (np.ndarray, np.generic)):
            return torch.as_tensor(value)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    raise CheckFailed(f"{what} should return a torch.Tensor, but it returned {type(value).__name__} ({value!r:.60}).")


def expect_shape(value: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    tensor = as_tensor(value, what)
    if tuple(tensor.shape) != tuple(shape):
        raise CheckFailed(f"{what} has shape {tuple(tensor.shape)}, expected {tuple(shape)}.")
    return tensor


def expect_close(value: Any, expected: Any, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail unless ``value`` has ``expected``'s shape and values (to the tolerances)."""
    expected_t = torch.as_tensor(expected).detach()
    tensor = expect_shape(value, tuple(expected_t.shape), what)
    tensor = tensor.to(torch.float64)
    expected_t = expected_t.to(torch.float64)
    if not torch.isfinite(tensor).all() and torch.isfinite(expected_t).all():
        raise CheckFailed(f"{what} contains inf or nan, but every expected value is finite.")
    if not torch.allclose(tensor, expected_t, atol=atol, rtol=rtol, equal_nan=True):
        diff = (tensor - expected_t).abs()
        diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
        worst = int(diff.flatten().argmax())
        got = tensor.flatten()[worst].item()
        want = expected_t.flatten()[worst].item()
        raise CheckFailed(f"{what} is wrong: one entry is {got:.6g} where {want:.6g} was expected.")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed: check inputs never depend on global random state."""
    return torch.Generator().manual_seed(seed)


def seeded_randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.randn(*shape)`` drawn from its own seeded generator."""
    return torch.randn(*shape, generator=seeded_generator(seed), dtype=dtype)


class BuiltinNotAllowed(Exception):
    """Raised inside the learner's code when it calls a built-in the exercise asks them to write."""


@contextmanager
def forbid(exercise: str, builtins: list[tuple[Any, str, str]]) -> Iterator[None]:
    """Switch built-ins off while the learner's code runs, e.g. ``[(torch, "softmax", "torch.softmax")]``.

    Each entry is (owner, attribute, how to show it); calling one raises
    :class:`BuiltinNotAllowed`, which the check reports as the learner's error.
    """
    def refuse(shown: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise BuiltinNotAllowed(f"it calls {shown}, but this exercise asks you to write `{exercise}` yourself")
        return refused

    with ExitStack() as stack:
        for owner, attribute, shown in builtins:
            if hasattr(owner, attribute):  # older PyTorch releases lack some (e.g. F.rms_norm)
                stack.enter_context(mock.patch.object(owner, attribute, refuse(shown)))
        yield


# Every way to let autograd do the calculus. Derivation exercises run the learner's formulas with all of them
# switched off (the checks compute their reference with autograd, outside that block).
AUTOGRAD = [(torch.autograd, "grad", "torch.autograd.grad"), (torch.autograd, "backward", "torch.autograd.backward"),
            (torch.Tensor, "backward", "tensor.backward()"),
            (torch.autograd.functional, "jacobian", "torch.autograd.functional.jacobian"),
            (torch.autograd.functional, "jvp", "torch.autograd.functional.jvp"),
            (torch.autograd.functional, "vjp", "torch.autograd.functional.vjp"),
            (torch.autograd.forward_ad, "make_dual", "torch.autograd.forward_ad"),
            (torch.func, "grad", "torch.func.grad"), (torch.func, "grad_and_value", "torch.func.grad_and_value"),
            (torch.func, "jvp", "torch.func.jvp"), (torch.func, "vjp", "torch.func.vjp"),
            (torch.func, "jacrev", "torch.func.jacrev"), (torch.func, "jacfwd", "torch.func.jacfwd")]


def forbid_autograd(exercise: str) -> ExitStack:
    """:func:`forbid` every entry of :data:`AUTOGRAD`: the learner derives the gradient by hand."""
    return forbid(exercise, AUTOGRAD)


# --------------------------------------------------------------------------- running checks


class CheckTimeout(Exception):
    """A check ran longer than its time limit (an endless loop, most likely)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` after ``seconds`` (Unix main thread only; elsewhere no limit)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CheckTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_check(check: Check, ns: Mapping[str, Any]) -> CheckResult:
    """Run one check; never raises."""
    def result(passed: bool, message: str) -> CheckResult:
        return CheckResult(check.name, check.exercise, check.points if passed else 0, check.points, passed,
                           message, "" if passed else check.hint)

    try:
        with time_limit(check.timeout):
            torch.manual_seed(1234)
            check.func(ns)
    except CheckTimeout:
        return result(False, f"Gave up after {check.timeout:g} s: does `{check.exercise}` loop forever?")
    except CheckFailed as exc:
        return result(False, str(exc))
    except NotImplementedError:
        return result(False, f"`{check.exercise}` is not written yet: replace `raise NotImplementedError` with your code.")
    except Exception as exc:
        return result(False, f"The check could not use your code: {type(exc).__name__}: {exc}")
    return result(True, "passed")


def run_checks(chapter: Chapter | str | int, ns: Mapping[str, Any], exercise: str | None = None) -> list[CheckResult]:
    """Run every check of ``chapter`` (or only those of ``exercise``) against namespace ``ns``."""
    if not isinstance(chapter, Chapter):
        chapter = load_chapter(chapter)
    checks = [c for c in chapter.checks if exercise is None or c.exercise == exercise]
    if exercise is not None and not checks:
        known = ", ".join(chapter.exercises)
        raise LookupError(f"chapter {chapter.number} has no exercise {exercise!r}; its exercises are: {known}")
    return [run_check(c, ns) for c in checks]


def report_checks(chapter: str, namespace: Mapping[str, Any], skip: list[str], channel: str | None = None,
                  token: str = "") -> None:
    """Run each check of ``chapter`` (but those in ``skip``) and report its result as a JSON line.

    The notebook grader calls this inside the learner's kernel, with ``channel`` the path of a file of its
    own and ``token`` a fresh random string: each result is one line written to that file in a single
    write (never to stdout, where the learner's own prints, threads and progress bars would mix with it),
    and carries the token. A line is written before each check starts too, so when a check crashes the
    kernel the grader knows which one did. Without ``channel`` the lines are printed, prefixed with
    :data:`RESULT_PREFIX`.
    """
    out = open(channel, "a", encoding="utf-8") if channel else None

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps({**record, "token": token}) if out else RESULT_PREFIX + json.dumps(record)
        if out is None:
            print(line, flush=True)
        else:
            out.write(line + "\n")
            out.flush()

    try:
        for check in load_chapter(chapter).checks:
            if check.name in skip:
                continue
            emit({"started": check.name})
            result = run_check(check, namespace)
            emit(result.to_dict())
    finally:
        if out is not None:
            out.close()
