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

The learner's call cannot change the check's own data: :func:`call`, :func:`call_method` and
:func:`call_object` give the learner clones of the tensors passed, compare tensors that require grad and
modules afterwards, and fail a call that changed an input in place (:func:`call_inplace` is for
exercises that are meant to). Inside :func:`forbid`, the call runs under a watch that sees a forbidden
built-in however it is reached, and, while a submission is graded, the course's own version too.

An exercise that needs more time than a quick function (a training run, two
processes) declares its budget before its checks::

    chapter.time_budget("TrainingLoop", seconds=90)

Each of its checks may then run that long, and so may the notebook cell that
defines it (the cell just above its ``grader.check(...)`` call); every other
check keeps the default limit, so a runaway cell elsewhere still stops early.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
import os
import signal
import sys
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
import torch.overrides
import torch.utils._python_dispatch

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
    in_kernel: bool = False  # runs inside the learner's kernel (see Chapter.run_in_kernel), not in the grader


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

    def run_in_kernel(self, *names: str) -> None:
        """Grade these checks inside the learner's kernel, as every check once was, for a check that cannot go
        through the channel (the course has none: :func:`beside_the_learner` covers checks that watch a call
        from close by). Their points could be forged by the notebook; every other check runs in the grader."""
        known = {c.name: c for c in self.checks}
        for name in names:
            if name not in known:
                raise ValueError(f"chapter {self.number} has no check named {name!r}")
            known[name].in_kernel = True

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
    when it raises ``NotImplementedError`` (default: ``what``). Inside a :func:`forbid` block it runs under the
    watch that sees forbidden built-ins however they are reached.
    """
    try:
        try:
            value, error, seen = _watched(compute)
        except (ForbiddenPath, ArgumentChanged) as exc:  # reported by the learner's kernel
            value, error, seen = None, exc, None
        if isinstance(error, ForbiddenPath):
            seen, error = (error.exercise, error.path), None
        if seen is not None:
            exercise, path = seen
            raise CheckFailed(f"{what} {path}, but this exercise asks you to write `{exercise}` yourself.")
        if isinstance(error, ArgumentChanged):
            raise CheckFailed(f"{what} {error} It must leave its inputs as they were: compute new tensors "
                              f"(`x = x - m`, not `x -= m` or `x.sub_(m)`).")
        if error is not None:
            raise error
        return value
    except NotImplementedError:
        raise CheckFailed(f"{unwritten or what} is not written yet: replace `raise NotImplementedError` with your "
                          f"code.") from None
    except (CheckFailed, CheckTimeout):
        raise
    except Exception as exc:  # the learner's bug, reported in one line
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc}{_learner_frame(exc)}") from None


def call(ns: Mapping[str, Any], name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the learner's ``name(*args, **kwargs)`` on copies of its tensors; exceptions become readable failures.

    The learner's code gets clones of the tensors it is given (also inside lists, tuples and dicts), so nothing it
    does to them can change the check's own tensors or the answer the check expects. Tensors that require grad and
    modules are passed as they are (their gradients and weights are the point), and their values are compared
    afterwards. An argument changed in place fails the check (:func:`call_inplace` is for exercises that are meant
    to change their arguments).
    """
    func = get_function(ns, name)
    return _call_protected(f"`{name}`", func, args, kwargs, inplace=False)


def call_inplace(ns: Mapping[str, Any], name: str, *args: Any, **kwargs: Any) -> Any:
    """:func:`call` for an exercise that changes its arguments on purpose (an optimizer step, a cache's append):
    the learner gets the check's own objects. Compute what you expect before the call, on copies of your own."""
    func = get_function(ns, name)
    return _call_protected(f"`{name}`", func, args, kwargs, inplace=True)


def beside_the_learner(ns: Mapping[str, Any], helper: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``helper(*args, **kwargs)`` where the learner's code runs: in their kernel when the checks run in the
    grader (the helper must be a module-level function of torch or the course, which the kernel imports by name),
    here otherwise. For a check that has to watch the learner's call from close by (the FLOPs or memory it uses,
    the shapes of its products, the rows each of its modules sees); what the helper returns comes back by value.
    Errors of the learner's code inside it reach the check as they would from :func:`call`; wrap it in
    :func:`run_learner` for a readable message."""
    from llmcourse.grading import channel

    if isinstance(ns, channel.RemoteNamespace):
        if not channel._import_path(helper):
            raise TypeError(f"{helper!r} cannot run in the kernel: it is not a module-level function of the course")
        return channel.remote_call(helper, args, kwargs, peer=ns.peer)
    return helper(*args, **kwargs)


def call_method(obj: Any, owner: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``obj.name(*args, **kwargs)`` on an object of the learner's class ``owner``; errors and the arguments'
    copies as in :func:`call` (the object itself may change: that is what methods do)."""
    return _call_method(obj, owner, name, args, kwargs, inplace=False)


def call_method_inplace(obj: Any, owner: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """:func:`call_method` for a method that changes its arguments on purpose (as :func:`call_inplace`)."""
    return _call_method(obj, owner, name, args, kwargs, inplace=True)


def call_object(what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call any of the learner's callables (a module built from their class: ``call_object("`GPT.forward`", model,
    ids)``), with the arguments' copies and errors as in :func:`call`; ``what`` names it in messages."""
    return _call_protected(what, func, args, kwargs, inplace=False)


def _call_method(obj: Any, owner: str, name: str, args: tuple, kwargs: dict, inplace: bool) -> Any:
    method = getattr(obj, name, None)
    if not callable(method):
        raise CheckFailed(f"your `{owner}` has no method `{name}()`")
    return _call_protected(f"`{owner}.{name}()`", method, args, kwargs, inplace,
                           unwritten=f"`{owner}.{name}` (or a function it calls)")


def _call_protected(what: str, func: Callable[..., Any], args: tuple, kwargs: dict, inplace: bool,
                    unwritten: str | None = None) -> Any:
    from llmcourse.grading import channel

    if isinstance(func, channel.Remote):  # the learner's code is in its kernel: it gets copies by construction
        return run_learner(what, lambda: channel.remote_call(func, args, kwargs, inplace), unwritten)
    if inplace:
        return run_learner(what, lambda: func(*args, **kwargs), unwritten)
    watched: list[tuple[str, Any, Any]] = []
    memo: dict[int, Any] = {}
    given_args = tuple(_learners_copy(a, f"argument {i + 1}", memo, watched) for i, a in enumerate(args))
    given_kwargs = {k: _learners_copy(v, f"argument `{k}`", memo, watched) for k, v in kwargs.items()}
    value = run_learner(what, lambda: func(*given_args, **given_kwargs), unwritten)
    for where, seen, before in watched:
        changed = _changed(seen, before)
        if changed:
            raise CheckFailed(f"{what} changed its {where} ({changed}) in place. It must leave its inputs as they "
                              f"were: compute new tensors (`x = x - m`, not `x -= m` or `x.sub_(m)`).")
    return value


def _learners_copy(value: Any, where: str, memo: dict[int, Any], watched: list[tuple[str, Any, Any]]) -> Any:
    """What the learner gets for ``value``: tensors cloned (those that require grad, and modules, watched instead)."""
    if id(value) in memo:
        return memo[id(value)]
    given = value
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            watched.append((where, value, value.detach().clone()))
        else:
            given = value.clone()
            watched.append((where, given, value))
    elif isinstance(value, torch.nn.Module):
        watched.append((where, value, {k: v.detach().clone() for k, v in value.state_dict(keep_vars=True).items()}))
    elif type(value) in (list, tuple) or (isinstance(value, tuple) and hasattr(value, "_fields")):
        items = [_learners_copy(v, f"{where} (item {i})", memo, watched) for i, v in enumerate(value)]
        if any(a is not b for a, b in zip(items, value)):  # only containers of tensors are rebuilt
            given = type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    elif type(value) is dict:
        items = {k: _learners_copy(v, f"{where} (entry {k!r:.40})", memo, watched) for k, v in value.items()}
        if any(items[k] is not value[k] for k in value):
            given = items
    memo[id(value)] = given
    return given


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach(), b.detach()
    if a.device.type == "meta" or b.device.type == "meta":  # no values to compare
        return a.device == b.device
    if a.layout != torch.strided or b.layout != torch.strided:
        a, b = a.to_dense(), b.to_dense()
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return torch.equal(a, b)


def _changed(seen: Any, before: Any) -> str:
    """How ``seen`` (what the learner had) differs from ``before``, or "" when it is unchanged."""
    if isinstance(seen, torch.nn.Module):
        now = seen.state_dict(keep_vars=True)
        for key, old in before.items():  # a module may be rebuilt around its weights; their values must stay
            if key in now and not _same_tensor(now[key], old):
                return f"the module's `{key}`"
        return ""
    if _same_tensor(seen, before):
        return ""
    return f"a tensor of shape {tuple(before.shape)}" + (
        f", now of shape {tuple(seen.shape)}" if seen.shape != before.shape else "")


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

    if hasattr(exc, "learner_frame"):  # raised in the learner's kernel, found there
        return str(exc.learner_frame)

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


# What a built-in is called once it runs, for the ones exercises ask learners to write: the names the torch function
# layer reports (``torch.softmax``, ``x.softmax``, ``torch.ops.aten.softmax`` ...) and the aten operators the
# dispatcher runs underneath. A captured reference, a private alias or a method all end up at one of these.
_OPERATORS: dict[str, tuple[str, ...]] = {
    "softmax": ("softmax", "_softmax", "special_softmax", "_safe_softmax"),
    "log_softmax": ("log_softmax", "_log_softmax", "special_log_softmax"),
    "logsumexp": ("logsumexp", "special_logsumexp"),
    "gelu": ("gelu",),
    "relu": ("relu", "relu_", "threshold", "threshold_", "_threshold"),
    "linear": ("linear", "_linear"),
    "cross_entropy": ("cross_entropy", "cross_entropy_loss", "nll_loss_forward", "nll_loss2d_forward", "nll_loss_nd"),
    "nll_loss": ("nll_loss", "nll_loss_forward", "nll_loss2d_forward", "nll_loss_nd"),
    "embedding": ("embedding", "embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"),
    "index_select": ("index_select",),
    "cosine_similarity": ("cosine_similarity",),
    "normalize": ("normalize",),
    "layer_norm": ("layer_norm", "native_layer_norm"),
    "rms_norm": ("rms_norm", "_fused_rms_norm"),
    "scaled_dot_product_attention": ("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
                                     "_scaled_dot_product_flash_attention_for_cpu",
                                     "_scaled_dot_product_flash_attention",
                                     "_scaled_dot_product_efficient_attention", "_safe_softmax"),
    "lstm_cell": ("lstm_cell", "_thnn_fused_lstm_cell"),
    "lstm": ("lstm", "lstm_cell", "_thnn_fused_lstm_cell"),
    "dropout": ("dropout", "dropout_", "native_dropout", "feature_dropout", "feature_dropout_", "dropout1d",
                "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"),
    "make_dual": ("_make_dual", "make_dual"),
}
_OPERATORS["dropout1d"] = _OPERATORS["dropout"]
# A module's forward, forbidden as (nn.X, "forward", ...), lowers to these.
_MODULE_OPERATORS = {"CrossEntropyLoss": "cross_entropy", "NLLLoss": "nll_loss", "Embedding": "embedding",
                     "LSTMCell": "lstm_cell", "LSTM": "lstm", "LayerNorm": "layer_norm", "RMSNorm": "rms_norm",
                     "ReLU": "relu", "GELU": "gelu", "Softmax": "softmax", "Linear": "linear", "Dropout": "dropout"}
# C functions that are the only way into a machine a forbidden entry stands for (autograd's engine).
_C_FUNCTIONS = {"grad": ("run_backward",), "backward": ("run_backward",)}

_GRADING_DIR = str(Path(__file__).resolve().parent)
_COURSE_DIR = str(Path(__file__).resolve().parents[1])


@dataclass
class _Forbidden:
    """One exercise's forbidden paths, resolved once: the names, code and files the watch looks for."""

    exercise: str
    operators: dict[str, str] = field(default_factory=dict)  # operator or torch function name -> how to show it
    codes: dict[Any, str] = field(default_factory=dict)  # Python code object -> how to show it
    files: dict[str, str] = field(default_factory=dict)  # a forbidden class's source file -> how to show it
    c_functions: dict[str, str] = field(default_factory=dict)  # part of a C function's profile name -> shown
    spec: tuple[str, list[tuple[str, str, str]]] | None = None  # (exercise, entries by name), for the kernel


def _resolve(exercise: str, builtins: list[tuple[Any, str, str]]) -> _Forbidden:
    import inspect

    found = _Forbidden(exercise)
    for owner, attribute, shown in builtins:
        original = inspect.getattr_static(owner, attribute, None) if isinstance(owner, type) else \
            getattr(owner, attribute, None)
        if isinstance(original, (staticmethod, classmethod)):
            original = original.__func__
        if original is None:
            continue
        key = _MODULE_OPERATORS.get(getattr(owner, "__name__", ""), attribute) if attribute == "forward" else attribute
        for name in _OPERATORS.get(key, ()):
            found.operators.setdefault(name, shown)
        for part in _C_FUNCTIONS.get(attribute, ()):
            found.c_functions.setdefault(part, shown)
        if isinstance(original, type):
            try:
                found.files.setdefault(str(Path(inspect.getfile(original)).resolve()), shown)
            except (TypeError, OSError):
                pass
            for klass in original.__mro__:  # its own methods, wherever they are inherited from
                if klass.__module__.split(".")[0] in ("builtins", "abc") or klass in (torch.nn.Module,
                                                                                       torch.optim.Optimizer):
                    continue
                for member in vars(klass).values():
                    code = getattr(inspect.unwrap(member) if callable(member) else member, "__code__", None)
                    if code is not None:
                        found.codes.setdefault(code, shown)
            continue
        function = inspect.unwrap(original) if callable(original) else original
        code = getattr(function, "__code__", None)
        if code is not None:
            found.codes.setdefault(code, shown)
        if not isinstance(original, type) and attribute != "forward" and code is None:
            found.operators.setdefault(getattr(original, "__name__", attribute), shown)
    return found


_FORBIDDEN: list[_Forbidden] = []  # the forbids in force, innermost last
_OWN_WORK = [False]  # True while grading a submission: the course's own functions count as forbidden paths too


@contextmanager
def course_code_refused(on: bool = True) -> Iterator[None]:
    """While on, a forbidden exercise's code may not run functions of the llmcourse package either (outside
    llmcourse.grading): the course's own version of the exercise is not the learner's work. The notebook grader
    turns it on; a plain :func:`run_checks` leaves it off, so the package's functions can prove the checks right."""
    before = _OWN_WORK[0]
    _OWN_WORK[0] = on
    try:
        yield
    finally:
        _OWN_WORK[0] = before


@contextmanager
def forbid(exercise: str, builtins: list[tuple[Any, str, str]]) -> Iterator[None]:
    """Forbid built-ins while the learner's code runs, e.g. ``[(torch, "softmax", "torch.softmax")]``.

    Each entry is (owner, attribute, how to show it). Two layers: the attribute is switched off (calling it
    raises :class:`BuiltinNotAllowed`, which the check reports as the learner's error), and every call of the
    learner's code inside the block (:func:`call`, :func:`call_method`, :func:`run_learner`) runs under a watch
    that sees the same built-in however it is reached: a reference captured before the check, a method
    (``x.softmax()``), a private alias (``torch._softmax``, ``torch.ops.aten._softmax``), its Python code (a
    class's methods, a function's code object) and, while :func:`course_code_refused` is on, the course's own
    version. The check then fails with the path it saw.
    """
    def refuse(shown: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise BuiltinNotAllowed(f"it calls {shown}, but this exercise asks you to write `{exercise}` yourself")
        return refused

    forbidden = _resolve(exercise, builtins)
    forbidden.spec = (exercise, [(_owner_path(owner), attribute, shown) for owner, attribute, shown in builtins])
    with ExitStack() as stack:
        for owner, attribute, shown in builtins:
            if hasattr(owner, attribute):  # older PyTorch releases lack some (e.g. F.rms_norm)
                stack.enter_context(mock.patch.object(owner, attribute, refuse(shown)))
        _FORBIDDEN.append(forbidden)
        try:
            yield
        finally:
            _FORBIDDEN.remove(forbidden)


def _owner_path(owner: Any) -> str:
    """``torch.nn.functional`` for a module, ``torch:Tensor`` for a class: how the kernel finds a forbidden entry."""
    if isinstance(owner, type):
        return f"{owner.__module__}:{owner.__qualname__}"
    return getattr(owner, "__name__", "")


def resolve_entries(entries: list[tuple[str, str, str]]) -> list[tuple[Any, str, str]]:
    """:func:`forbid`'s entries from their names (as the grader sends them to the learner's kernel)."""
    import importlib

    resolved = []
    for path, attribute, shown in entries:
        module_name, _, qualname = str(path).partition(":")
        if not module_name.split(".")[0] in ("torch", "llmcourse", "math", "numpy", "builtins"):
            continue
        try:
            owner: Any = importlib.import_module(module_name)
            for part in filter(None, qualname.split(".")):
                owner = getattr(owner, part)
        except (ImportError, AttributeError):
            continue
        resolved.append((owner, str(attribute), str(shown)))
    return resolved


class ForbiddenPath(CheckFailed):
    """The learner's code, run in the kernel, reached a forbidden path (``exercise``, what the watch saw)."""

    def __init__(self, exercise: str, path: str) -> None:
        super().__init__(f"your code {path}, but this exercise asks you to write `{exercise}` yourself.")
        self.exercise, self.path = exercise, path


class ArgumentChanged(CheckFailed):
    """The learner's code, run in the kernel, changed an argument it should have left alone."""


class _Remote(threading.local):
    """``REMOTE.on`` is True (in the grader's thread only) while the checks run in the grader's process and
    the learner's code in its kernel: the kernel watches the learner's calls, so this process does not."""

    on = False


REMOTE = _Remote()


class _FunctionWatch(torch.overrides.TorchFunctionMode):
    """Records the name of every torch function the learner's code calls (a method, a module function, an op)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "") or ""
        self.seen.add(name.split(".")[0])
        return func(*args, **(kwargs or {}))


class _DispatchWatch(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every aten operator that runs underneath (however the call got there)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # no torch.compile wrapper: it would import torch._dynamo (1.5 s)
        return False

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.seen.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@functools.lru_cache(maxsize=4096)
def _resolved(filename: str) -> str:
    return str(Path(filename).resolve())


def _course_name(code: Any) -> str:
    """``llmcourse.basics.activations.gelu`` for a code object of the course's own package."""
    relative = Path(code.co_filename).resolve().relative_to(Path(_COURSE_DIR).parent).with_suffix("")
    module = ".".join(relative.parts).removesuffix(".__init__")
    return f"{module}.{getattr(code, 'co_qualname', code.co_name)}"


class _Watch:
    """Everything the learner's code reaches while it runs under :func:`forbid`."""

    active = False

    def __init__(self) -> None:
        import cProfile

        self.functions, self.dispatch = _FunctionWatch(), _DispatchWatch()
        self.profile = cProfile.Profile()
        self.tampered = ""

    def __enter__(self) -> "_Watch":
        _Watch.active = True
        self.previous_profile = sys.getprofile()
        self.functions.__enter__()
        self.dispatch.__enter__()
        self.profile.enable()
        return self

    def __exit__(self, *exc: Any) -> None:
        profile_now = sys.getprofile()
        self.profile.disable()
        from torch.overrides import _get_current_function_mode_stack
        from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

        if profile_now is not self.profile:
            self.tampered = "switched off the profiler that watches it (sys.setprofile)"
        elif self.dispatch not in _get_current_dispatch_mode_stack():
            self.tampered = "removed the grader's TorchDispatchMode"
        elif self.functions not in _get_current_function_mode_stack():
            self.tampered = "removed the grader's TorchFunctionMode"
        try:
            if self.dispatch in _get_current_dispatch_mode_stack():
                self.dispatch.__exit__(None, None, None)
            if self.functions in _get_current_function_mode_stack():
                self.functions.__exit__(None, None, None)
        finally:
            if self.previous_profile is not None:
                sys.setprofile(self.previous_profile)
            _Watch.active = False

    def verdict(self) -> tuple[str, str] | None:
        """(the exercise, what it saw) for the first forbidden path the learner's code reached, else None."""
        if self.tampered:
            return _FORBIDDEN[-1].exercise, self.tampered
        codes, c_names = set(), []
        entries = self.profile.getstats()
        for entry in entries:
            if isinstance(entry.code, str):
                c_names.append(entry.code)
            else:
                codes.add(entry.code)
        for forbidden in reversed(_FORBIDDEN):
            for name, shown in forbidden.operators.items():
                if name in self.dispatch.seen:
                    return forbidden.exercise, f"reaches aten::{name} ({shown} or an alias)"
            for name, shown in forbidden.operators.items():
                if name in self.functions.seen:
                    return forbidden.exercise, f"calls torch's {name} ({shown} or an alias)"
            for code in sorted(codes, key=lambda c: (c.co_filename, c.co_firstlineno)):
                if code in forbidden.codes:
                    return forbidden.exercise, f"runs {forbidden.codes[code]} (by another name, perhaps)"
                if forbidden.files and _resolved(code.co_filename) in forbidden.files:
                    shown = forbidden.files[_resolved(code.co_filename)]
                    return forbidden.exercise, f"runs the code of {shown} (by another name, perhaps)"
            for part, shown in forbidden.c_functions.items():
                if any(part in name for name in c_names):
                    return forbidden.exercise, f"runs autograd's engine ({shown} or another way in)"
        if _OWN_WORK[0]:
            def course(code: Any) -> bool:
                if isinstance(code, str):
                    return False
                path = _resolved(code.co_filename)
                return path.startswith(_COURSE_DIR + os.sep) and not path.startswith(_GRADING_DIR + os.sep)

            reached = [e for e in entries if course(e.code)]
            called_by_course = {sub.code for e in reached for sub in e.calls or () if course(sub.code)}
            outermost = [e.code for e in reached if e.code not in called_by_course] or [e.code for e in reached]
            if outermost:
                code = min(outermost, key=lambda c: (c.co_filename, c.co_firstlineno))
                return _FORBIDDEN[-1].exercise, f"calls {_course_name(code)}, the course's own version"
        return None


def _watched(compute: Callable[[], Any]) -> tuple[Any, BaseException | None, tuple[str, str] | None]:
    """Run ``compute`` under a :class:`_Watch` when a :func:`forbid` is in force (and no watch is running yet)."""
    if not _FORBIDDEN or _Watch.active or REMOTE.on:  # with the learner's code remote, the kernel watches it
        return compute(), None, None
    watch = _Watch()
    value, error = None, None
    with watch:
        try:
            value = compute()
        except BaseException as exc:  # noqa: BLE001 (judged below, after the watch is off)
            error = exc
    return value, error, watch.verdict()


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


def run_checks(chapter: Chapter | str | int, ns: Mapping[str, Any], exercise: str | None = None,
               own_work: bool = False) -> list[CheckResult]:
    """Run every check of ``chapter`` (or only those of ``exercise``) against namespace ``ns``.

    With ``own_work`` (as the notebook grader runs them) an exercise that forbids built-ins also refuses the
    course's own functions (see :func:`course_code_refused`)."""
    if not isinstance(chapter, Chapter):
        chapter = load_chapter(chapter)
    checks = [c for c in chapter.checks if exercise is None or c.exercise == exercise]
    if exercise is not None and not checks:
        known = ", ".join(chapter.exercises)
        raise LookupError(f"chapter {chapter.number} has no exercise {exercise!r}; its exercises are: {known}")
    with course_code_refused(own_work):
        return [run_check(c, ns) for c in checks]


def report_checks(chapter: str, namespace: Mapping[str, Any], skip: list[str], channel: str | None = None,
                  token: str = "") -> None:
    """Run each check of ``chapter`` (but those in ``skip``) and report its result as a JSON line.

    The notebook grader calls this inside the learner's kernel for the checks marked
    :meth:`Chapter.run_in_kernel` (every other check runs in the grader's process), with ``channel`` the path
    of a file of its own and ``token`` a fresh random string: each result is one line written to that file in a single
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
            with course_code_refused():
                result = run_check(check, namespace)
            emit(result.to_dict())
    finally:
        if out is not None:
            out.close()
