"""The typed channel between the grader process and the learner's kernel (chapter: the course's grading tools).

The checks that decide a grade run in the grader's own process. The learner's functions, classes and objects
stay in the learner's sandboxed kernel, where :func:`serve` answers the grader's requests over a Unix socket:
look a name up in the notebook, call it, read or set an attribute, apply an operator, list an iterable.

What crosses the socket is a fixed vocabulary of values, encoded as JSON plus raw tensor bytes, never pickle:

* ``None``, booleans, numbers (also ``nan`` and ``inf``), strings, bytes, lists, tuples, dicts, sets, slices;
* tensors (dtype, shape and raw bytes; ``requires_grad``, ``.grad`` and whether it is a ``Parameter``),
  NumPy arrays, ``torch.dtype``, ``torch.Size``, ``torch.device``, ``torch.Generator`` (by its state);
* dataclass instances of the course's own package (rebuilt field by field on the other side);
* objects of torch's and the course's classes the check passes (modules, optimizers, a graph of ``Value``
  nodes) by their attributes, written back into the check's own objects after the call. The kernel sends
  such objects back by value only when they came from the grader: a module or function the learner's code
  makes, even of a course class, stays a handle, so its code runs in the kernel, under the watch;
* anything else is a *handle*: the object stays where it is and the other side gets a proxy. A learner's
  object is reached through :class:`Remote` (attributes, calls, operators, items, iteration). A grader's
  object (a function a check hands to the learner's code, e.g. the ``f`` of a finite difference) can only
  be called, so the kernel can never reach the grader's code, modules or files.

Whatever the kernel sends is decoded into fresh values in the grader, so the learner's code only ever sees
copies of the check's tensors, and a check compares what came back with references it computed itself.

Each call also carries the grader's global random state (torch and ``random``), grad mode and default
dtype, and brings the kernel's state back, so a check that seeds the generator before building a learner's
model sees the same numbers as if both ran in one process. An exercise that forbids built-ins runs the
learner's call, in the kernel, under the watch of :mod:`llmcourse.grading.checks`; the kernel reports what
it saw, and the grader fails the check.
"""
from __future__ import annotations

import builtins
import dataclasses
import importlib
import json
import marshal
import math
import operator
import random
import socket
import struct
import sys
import types
from collections import OrderedDict
from pathlib import Path, PurePath
from typing import Any, Callable

import torch

MAX_FRAME = 1 << 30           # bytes in one frame (a tensor's data, or a message's JSON)
MAX_ITEMS = 100_000           # items of one iterable listed at once
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64, torch.complex128,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}
# exceptions the grader raises as themselves when the learner's code raised them (or a subclass of them)
_EXCEPTIONS = ("NotImplementedError", "ValueError", "TypeError", "KeyError", "IndexError", "AttributeError",
               "ZeroDivisionError", "AssertionError", "OverflowError", "RecursionError", "MemoryError",
               "StopIteration", "LookupError", "ArithmeticError", "RuntimeError", "NameError", "OSError")
_OPERATORS = {name: getattr(operator, name) for name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "abs", "invert",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "lshift", "rshift")}


class ChannelError(Exception):
    """The other side broke the protocol, went away or sent what the vocabulary does not allow."""


class LearnerError(Exception):
    """An exception the learner's code raised in the kernel that is none of the plain built-in ones."""


def learner_exception(info: dict) -> BaseException:
    """The grader's copy of an exception raised in the kernel: same type name and message, a safe base class."""
    name = str(info.get("type", "Exception"))[:80]
    message = str(info.get("message", ""))
    base = LearnerError
    if info.get("builtin_not_allowed"):
        from llmcourse.grading.checks import BuiltinNotAllowed
        base = BuiltinNotAllowed
    else:
        for candidate in info.get("bases", []):
            if candidate in _EXCEPTIONS:
                base = getattr(builtins, candidate)
                break
    kind = base if base.__name__ == name else type(name if name.isidentifier() else "LearnerError", (base,), {})
    exc = kind(message)
    exc.learner_frame = str(info.get("frame", ""))[:300]  # type: ignore[attr-defined]
    return exc


# --------------------------------------------------------------------------- framing

def _dense(t: torch.Tensor) -> bool:
    """Whether ``t`` covers its memory exactly once in some order of its dimensions (a permuted contiguous tensor)."""
    order = sorted(range(t.dim()), key=lambda i: -t.stride(i))
    expected = 1
    for i in reversed(order):
        if t.size(i) != 1 and t.stride(i) != expected:
            return False
        expected *= t.size(i)
    return True


def _send_frames(sock: socket.socket, frames: list[bytes]) -> None:
    sock.sendall(b"".join(struct.pack("!Q", len(f)) + f for f in [struct.pack("!Q", len(frames)), *frames]))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ChannelError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv_frame(sock: socket.socket) -> bytes:
    (n,) = struct.unpack("!Q", _recv_exact(sock, 8))
    if n > MAX_FRAME:
        raise ChannelError(f"a frame of {n} bytes is more than the channel accepts")
    return _recv_exact(sock, n)


def _recv_frames(sock: socket.socket) -> list[bytes]:
    (count,) = struct.unpack("!Q", _recv_frame(sock))
    if count > 1_000_000:
        raise ChannelError("too many frames in one message")
    return [_recv_frame(sock) for _ in range(count)]


# --------------------------------------------------------------------------- the peer (both sides)

class Peer:
    """One end of the channel. ``side`` is ``"grader"`` or ``"kernel"``; ``namespace`` (kernel only) is where
    names are looked up. Both ends can send requests; while one waits for its reply it answers the other's."""

    def __init__(self, sock: socket.socket, side: str, namespace: dict | None = None) -> None:
        self.sock, self.side, self.namespace = sock, side, namespace
        self.objects: dict[int, Any] = {}     # handles this side handed out: id -> object
        self.keys: dict[int, int] = {}        # id(object) -> its handle
        self.proxies: dict[int, Any] = {}     # the other side's handles, one proxy each (so `is` holds)
        self.received: dict[int, Any] = {}    # kernel: the course's and torch's objects the grader sent
        self.next_id = 1
        self.broken = ""

    # ---------------------------------------------------------------- encoding
    def encode(self, value: Any) -> tuple[Any, list[bytes]]:
        buffers: list[bytes] = []
        memo: dict[int, int] = {}
        return self._enc(value, buffers, memo, 0), buffers

    def _export(self, value: Any) -> int:
        key = self.keys.get(id(value))
        if key is not None and self.objects.get(key) is value:
            return key
        key = self.next_id
        self.next_id += 1
        self.objects[key] = value   # kept alive while the channel is open, so its id stays its own
        self.keys[id(value)] = key
        return key

    def _tensor(self, t: torch.Tensor, buffers: list[bytes], memo: dict, depth: int) -> dict:
        out: dict[str, Any] = {"$tensor": len(buffers)}
        d = t.detach()
        if d.device.type == "meta":
            out.update(meta=True)
            buffers.append(b"")
        else:
            if d.layout != torch.strided:
                d = d.to_dense()
            d = d.cpu().resolve_conj().resolve_neg()
            if d.dtype not in _DTYPES.values():
                d = d.to(torch.float64 if d.is_floating_point() else torch.int64)
            # the order of the dimensions in memory travels too, so a transposed tensor arrives transposed
            # (as a clone of it would be) and code that works only on some layouts behaves the same here
            order = sorted(range(d.dim()), key=lambda i: -d.stride(i)) if d.dim() > 1 else list(range(d.dim()))
            if order != list(range(d.dim())) and _dense(d):
                out["order"] = order
                d = d.permute(order)
            d = d.contiguous()
            buffers.append(d.reshape(-1).view(torch.uint8).numpy().tobytes() if d.numel() else b"")
        out.update(dtype=str(d.dtype).removeprefix("torch."), shape=list(t.shape), requires_grad=t.requires_grad,
                   parameter=isinstance(t, torch.nn.Parameter))
        if t.is_leaf and t.grad is not None and not isinstance(t.grad.grad, torch.Tensor):
            out["grad"] = self._enc(t.grad, buffers, memo, depth + 1)
        return out

    def _enc(self, v: Any, buffers: list[bytes], memo: dict, depth: int) -> Any:
        if depth > 60:
            raise ChannelError("a value nested more than 60 levels deep")
        if v is None or isinstance(v, bool) or type(v) is int:
            return v
        if isinstance(v, str):
            return str(v)
        if isinstance(v, float):
            return float(v) if math.isfinite(v) else {"$float": repr(float(v))}
        if isinstance(v, int):  # an int subclass (an enum value...): as a plain int
            return int(v)
        if isinstance(v, complex):
            return {"$complex": [v.real, v.imag]}
        if isinstance(v, torch.Tensor):
            if id(v) in memo:
                return {"$same": memo[id(v)]}
            memo[id(v)] = len(memo)
            return self._tensor(v, buffers, memo, depth)
        if isinstance(v, (bytes, bytearray)):
            buffers.append(bytes(v))
            return {"$bytes": len(buffers) - 1}
        if isinstance(v, torch.dtype):
            return {"$dtype": str(v).removeprefix("torch.")}
        if isinstance(v, torch.Size):
            return {"$size": list(v)}
        if isinstance(v, torch.device):
            return {"$device": str(v)}
        if isinstance(v, torch.Generator):
            buffers.append(v.get_state().numpy().tobytes())
            return {"$generator": len(buffers) - 1}
        if isinstance(v, PurePath):
            return {"$path": str(v)}
        if isinstance(v, slice):
            return {"$slice": [self._enc(x, buffers, memo, depth + 1) for x in (v.start, v.stop, v.step)]}
        if v is Ellipsis:
            return {"$ellipsis": True}
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, np.ndarray) and v.dtype.kind in "biufc":
            memo[("ndarray", id(v))] = len(memo)  # the decoder counts it among the tensors it has seen
            return {"$ndarray": self._tensor(torch.from_numpy(np.ascontiguousarray(v)), buffers, memo, depth)}
        if np is not None and isinstance(v, np.generic) and v.dtype.kind in "biufc":
            return self._enc(v.item(), buffers, memo, depth)
        if type(v) in (list, tuple) or (isinstance(v, tuple) and hasattr(v, "_fields")):
            tag = "$list" if isinstance(v, list) else "$tuple"
            return {tag: [self._enc(x, buffers, memo, depth + 1) for x in v]}
        if type(v) in (set, frozenset):
            return {"$set": [self._enc(x, buffers, memo, depth + 1) for x in v], "frozen": type(v) is frozenset}
        if type(v) in (dict, OrderedDict):
            return {"$dict": [[self._enc(k, buffers, memo, depth + 1), self._enc(x, buffers, memo, depth + 1)]
                              for k, x in v.items()], "ordered": type(v) is OrderedDict}
        if dataclasses.is_dataclass(v) and not isinstance(v, type) and type(v).__module__.startswith("llmcourse."):
            fields = {f.name: self._enc(getattr(v, f.name), buffers, memo, depth + 1)
                      for f in dataclasses.fields(v) if f.init}
            return {"$dataclass": f"{type(v).__module__}:{type(v).__qualname__}", "fields": fields}
        named = _import_path(v) if self.side == "grader" else ""   # the kernel's callables stay in the kernel
        if named:
            return {"$named": named}
        if self.side == "grader" and isinstance(v, types.FunctionType) and _course_function(v):
            buffers.append(marshal.dumps(v.__code__))
            cells = [c.cell_contents if _filled(c) else {"$empty": True} for c in (v.__closure__ or ())]
            return {"$function": v.__module__, "code": len(buffers) - 1, "name": v.__name__,
                    "closure": self._enc(cells, buffers, memo, depth + 1),
                    "defaults": self._enc(v.__defaults__, buffers, memo, depth + 1),
                    "kwdefaults": self._enc(v.__kwdefaults__, buffers, memo, depth + 1)}
        if _by_state(v) and (self.side == "grader" or id(v) in self.received):
            if id(v) in memo:
                return {"$same": memo[id(v)]}
            memo[id(v)] = len(memo)
            return {"$object": f"{type(v).__module__}:{type(v).__qualname__}",
                    "state": self._enc(dict(vars(v)), buffers, memo, depth + 1)}
        if isinstance(v, RemoteClassMeta) and v._remote._peer is self:
            return {"$ref": v._remote._id, "owner": "peer"}
        if isinstance(v, Remote) and v._peer is self:
            return {"$ref": v._id, "owner": "peer"}       # the other side's own object, going home
        klass = v if isinstance(v, type) else type(v)
        bases = [p for p in (_import_path(k) for k in klass.__mro__[:40]) if p][:8]
        return {"$ref": self._export(v), "owner": "sender", "callable": callable(v), "class": isinstance(v, type),
                "type": klass.__qualname__[:100], "bases": bases}

    # ---------------------------------------------------------------- decoding
    def decode(self, tree: Any, buffers: list[bytes]) -> Any:
        return self._dec(tree, buffers, [], 0)

    def _buffer(self, buffers: list[bytes], index: Any) -> bytes:
        if not isinstance(index, int) or not 0 <= index < len(buffers):
            raise ChannelError("a value names a buffer that was not sent")
        return buffers[index]

    def _dec_tensor(self, t: dict, buffers: list[bytes], same: list, depth: int) -> torch.Tensor:
        dtype = _DTYPES.get(t.get("dtype"))
        shape = t.get("shape")
        if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ChannelError("a tensor with an unknown dtype or a bad shape")
        if t.get("meta"):
            value = torch.empty(shape, dtype=dtype, device="meta")
        else:
            data = self._buffer(buffers, t.get("$tensor"))
            numel = math.prod(shape)
            size = torch.empty((), dtype=dtype).element_size()
            if len(data) != numel * size:
                raise ChannelError("a tensor whose data does not match its shape")
            order = t.get("order")
            if order is not None and sorted(order) != list(range(len(shape))):
                raise ChannelError("a tensor with a bad order of dimensions")
            stored = [shape[i] for i in order] if order is not None else shape
            value = (torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(stored).clone()
                     if numel else torch.empty(stored, dtype=dtype))
            if order is not None:
                value = value.permute([order.index(i) for i in range(len(shape))])
        if t.get("parameter"):
            value = torch.nn.Parameter(value, requires_grad=bool(t.get("requires_grad")))
        elif t.get("requires_grad") and (value.is_floating_point() or value.is_complex()):
            value.requires_grad_(True)
        same.append(value)
        if "grad" in t:
            grad = self._dec(t["grad"], buffers, same, depth + 1)
            if isinstance(grad, torch.Tensor) and grad.shape == value.shape:
                value.grad = grad.to(value.dtype) if grad.dtype != value.dtype else grad
        return value

    def _dec(self, v: Any, buffers: list[bytes], same: list, depth: int) -> Any:
        if depth > 64:
            raise ChannelError("a value nested too deeply")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            raise ChannelError("a bare list in a message")
        if not isinstance(v, dict):
            raise ChannelError(f"a value of the unknown kind {type(v).__name__}")
        d = lambda x: self._dec(x, buffers, same, depth + 1)  # noqa: E731
        if "$tensor" in v:
            return self._dec_tensor(v, buffers, same, depth)
        if "$same" in v:
            index = v["$same"]
            if not isinstance(index, int) or not 0 <= index < len(same):
                raise ChannelError("a repeated value that was never sent")
            return same[index]
        if "$float" in v:
            return float(str(v["$float"]))
        if "$complex" in v:
            real, imag = v["$complex"]
            return complex(float(real), float(imag))
        if "$bytes" in v:
            return self._buffer(buffers, v["$bytes"])
        if "$dtype" in v:
            if v["$dtype"] not in _DTYPES:
                raise ChannelError("an unknown dtype")
            return _DTYPES[v["$dtype"]]
        if "$size" in v:
            return torch.Size([int(s) for s in v["$size"]])
        if "$device" in v:
            return torch.device(str(v["$device"]))
        if "$generator" in v:
            state = torch.frombuffer(bytearray(self._buffer(buffers, v["$generator"])), dtype=torch.uint8)
            gen = torch.Generator()
            gen.set_state(state.clone())
            return gen
        if "$path" in v:
            return Path(str(v["$path"]))
        if "$slice" in v:
            return slice(*[d(x) for x in v["$slice"]])
        if "$ellipsis" in v:
            return Ellipsis
        if "$ndarray" in v:
            return self._dec_tensor(v["$ndarray"], buffers, same, depth).detach().numpy()
        if "$list" in v:
            return [d(x) for x in v["$list"]]
        if "$tuple" in v:
            return tuple(d(x) for x in v["$tuple"])
        if "$set" in v:
            items = [d(x) for x in v["$set"]]
            return frozenset(items) if v.get("frozen") else set(items)
        if "$dict" in v:
            pairs = [(d(k), d(x)) for k, x in v["$dict"]]
            return OrderedDict(pairs) if v.get("ordered") else dict(pairs)
        if "$dataclass" in v:
            path = str(v["$dataclass"])
            if not path.startswith("llmcourse."):
                raise ChannelError("a dataclass from outside the course's package")
            klass = _imported(path)
            if not (isinstance(klass, type) and dataclasses.is_dataclass(klass)):
                raise ChannelError(f"{path} is not a dataclass")
            return klass(**{str(k): d(x) for k, x in v["fields"].items()})
        if "$named" in v:
            if self.side == "grader":   # the kernel's callables come as handles, never as the grader's own
                raise ChannelError("the kernel may not name the grader's functions or classes")
            return _imported(str(v["$named"]))
        if "$function" in v:
            if self.side != "kernel":   # code only ever travels from the grader to the kernel
                raise ChannelError("the kernel may not send code")
            module = importlib.import_module(str(v["$function"]))
            code = marshal.loads(self._buffer(buffers, v["code"]))
            cells = [types.CellType() if isinstance(c, dict) and c.get("$empty") else types.CellType(c)
                     for c in d(v["closure"])]
            func = types.FunctionType(code, module.__dict__, str(v["name"]), d(v["defaults"]), tuple(cells) or None)
            func.__kwdefaults__ = d(v["kwdefaults"])
            return func
        if "$object" in v:
            klass = _state_class(str(v["$object"]))
            if self.side == "grader" and not _returnable(klass):
                raise ChannelError(f"the kernel may not send an object of {v['$object']}")
            obj = klass.__new__(klass)
            same.append(obj)
            if self.side == "kernel":   # it may travel back by its attributes; what the kernel makes does not
                self.received[id(obj)] = obj
            state = d(v.get("state"))
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise ChannelError("an object whose state is not a dict of names")
            obj.__dict__.update(state)
            return obj
        if "$ref" in v:
            key = v["$ref"]
            if v.get("owner") == "peer":                   # one of ours, coming back
                if key not in self.objects:
                    raise ChannelError("a handle this side never handed out")
                return self.objects[key]
            if self.side == "grader":
                if not isinstance(key, int):
                    raise ChannelError("a handle that is not a number")
                if key not in self.proxies:
                    bases = [b for b in v.get("bases", []) if isinstance(b, str)][:8]
                    if v.get("class"):
                        self.proxies[key] = _remote_class(self, key, str(v.get("type", "object")), bases)
                    else:
                        kind = RemoteCallable if v.get("callable") else Remote
                        self.proxies[key] = kind(self, key, str(v.get("type", "object")), bases)
                return self.proxies[key]
            return _GraderFunction(self, key, str(v.get("type", "object")))
        raise ChannelError("a value of an unknown kind")

    # ---------------------------------------------------------------- messages
    def send(self, message: dict, payload: Any = None) -> None:
        tree, buffers = self.encode(payload)
        try:
            _send_frames(self.sock, [json.dumps({**message, "payload": tree}).encode(), *buffers])
        except OSError as exc:
            self.broken = f"the channel failed: {exc}"
            raise ChannelError(self.broken) from None

    def receive(self) -> tuple[dict, Any]:
        try:
            frames = _recv_frames(self.sock)
        except (OSError, ChannelError, struct.error) as exc:
            self.broken = f"the channel closed ({exc})"
            raise ChannelError(self.broken) from None
        except BaseException:  # a time limit went off while waiting: the stream is out of step now
            self.broken = "a reply never came in time"
            raise
        try:
            message = json.loads(frames[0])
        except (ValueError, IndexError):
            self.broken = "a message that is not JSON"
            raise ChannelError(self.broken) from None
        if not isinstance(message, dict):
            raise ChannelError("a message that is not an object")
        return message, self.decode(message.get("payload"), frames[1:])

    def request(self, op: str, payload: Any = None) -> Any:
        """Send a request and wait for its reply, answering the other side's requests meanwhile."""
        if self.broken:
            raise ChannelError(self.broken)
        self.send({"op": op}, payload)
        while True:
            message, value = self.receive()
            if message.get("op") == "reply":
                if "error" in message:
                    raise learner_exception(message["error"]) if message.get("learner") else \
                        ChannelError(str(message["error"])[:300])
                return value
            self.answer(message, value)

    def answer(self, message: dict, value: Any) -> None:
        """Run one request from the other side and send its reply."""
        try:
            result = self.handle(str(message.get("op")), value)
        except ChannelError as exc:
            self.send({"op": "reply", "error": str(exc)})
            return
        except BaseException as exc:  # noqa: BLE001 (reported to the other side)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) and self.side == "grader":
                raise
            self.send({"op": "reply", "learner": True, "error": describe_exception(exc)})
            return
        self.send({"op": "reply"}, result)

    def handle(self, op: str, value: Any) -> Any:
        if self.side == "grader":   # the kernel may only call the functions a check handed to it
            if op != "call_back" or not isinstance(value, tuple) or len(value) != 3:
                raise ChannelError(f"the kernel may not ask the grader for {op!r}")
            key, args, kwargs = value
            if key not in self.objects:
                raise ChannelError("a handle the grader never handed out")
            return self.objects[key](*args, **dict(kwargs))
        return _kernel_handle(self, op, value)


def _import_path(v: Any) -> str:
    """``module:qualname`` when ``v`` is a class or function that torch or the course's package defines at that
    name (so the other side can import the very same one), else ""."""
    if isinstance(v, RemoteClassMeta) or type(v) in (Remote, RemoteCallable):
        return ""
    if not (isinstance(v, type) or callable(v)) or isinstance(v, torch.nn.Module):
        return ""
    module, qualname = getattr(v, "__module__", None), getattr(v, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return ""
    if not (module == "torch" or module.startswith(("torch.", "llmcourse.", "math", "operator", "builtins"))):
        return ""
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return ""
    return f"{module}:{qualname}" if found is v else ""


def _imported(path: str) -> Any:
    module, _, qualname = path.partition(":")
    if not (module == "torch" or module.startswith(("torch.", "llmcourse.", "math", "operator", "builtins"))):
        raise ChannelError("a name from outside torch and the course's package")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            if part.startswith("__"):
                raise ChannelError("a private name")
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ChannelError(f"{path} does not name anything ({exc})") from None
    return found


def _course_function(func: types.FunctionType) -> bool:
    """A function of the course's checks (a check's own ``f``): it is sent as code, so autograd runs through it."""
    return isinstance(func.__module__, str) and func.__module__.startswith("llmcourse.")


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


_STATE_BASES = ("torch.nn.modules.module:Module", "torch.optim.optimizer:Optimizer",
                "torch.utils.data.dataset:Dataset", "torch.utils.data.sampler:Sampler",
                "torch.optim.lr_scheduler:LRScheduler", "torch.utils.data.dataloader:DataLoader")


def _by_state(v: Any) -> bool:
    """Objects that travel by their attributes: torch's modules, optimizers, datasets and samplers, and the
    course's own classes (never the learner's: those stay in the kernel)."""
    return not isinstance(v, (type, Remote)) and hasattr(v, "__dict__") and _travels_by_state(type(v))


def _travels_by_state(klass: type) -> bool:
    """Whether objects of ``klass`` travel by their attributes (see :func:`_by_state`)."""
    module = getattr(klass, "__module__", "") or ""
    if not module.startswith(("torch.", "llmcourse.")) or "<locals>" in klass.__qualname__:
        return False
    if getattr(klass, "__slots__", None):
        return False
    if module.startswith("llmcourse.") and not module.startswith("llmcourse.grading.channel"):
        callable_objects = any("__call__" in vars(k) for k in klass.__mro__ if k is not object)
        return not callable_objects or issubclass(klass, torch.nn.Module)
    names = {f"{k.__module__}:{k.__qualname__}" for k in klass.__mro__}
    return any(base in names for base in _STATE_BASES)


def _returnable(klass: type) -> bool:
    """The classes whose objects the kernel may send back by their attributes (the modules, optimizers, data and
    graph nodes a check passed in): objects whose methods the grader may then run on data the kernel set."""
    from torch.optim.lr_scheduler import LRScheduler
    from torch.utils.data import DataLoader, Dataset, Sampler

    from llmcourse.basics.autograd import Value

    return issubclass(klass, (torch.nn.Module, torch.optim.Optimizer, Dataset, Sampler, DataLoader, LRScheduler,
                              Value))


def _state_class(path: str) -> type:
    if not path.startswith(("torch.", "llmcourse.")) or ":" not in path:
        raise ChannelError("an object of a class from outside torch and the course's package")
    klass = _imported(path)
    if not isinstance(klass, type):
        raise ChannelError(f"{path} is not a class")
    if not _travels_by_state(klass):
        raise ChannelError(f"objects of {path} do not travel by their attributes")
    return klass


def describe_exception(exc: BaseException) -> dict:
    from llmcourse.grading.checks import BuiltinNotAllowed, _learner_frame

    return {"type": type(exc).__name__, "message": str(exc)[:2000],
            "bases": [k.__name__ for k in type(exc).__mro__], "frame": _learner_frame(exc),
            "builtin_not_allowed": isinstance(exc, BuiltinNotAllowed)}


# --------------------------------------------------------------------------- the grader's view of the kernel

class Remote:
    """A learner's object that stays in the kernel. Attributes, items, operators and iteration become requests;
    what comes back is a copy (or another :class:`Remote`)."""

    __slots__ = ("_peer", "_id", "_type", "_bases")

    def __init__(self, peer: Peer, key: int, typename: str, bases: list[str] | None = None) -> None:
        object.__setattr__(self, "_peer", peer)
        object.__setattr__(self, "_id", key)
        object.__setattr__(self, "_type", typename)
        object.__setattr__(self, "_bases", list(bases or []))

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The most specific class of torch or the course the learner's class derives from (``nn.Module`` for
        a learner's module), so ``isinstance(obj, nn.Module)`` answers as it would in the kernel."""
        for path in object.__getattribute__(self, "_bases"):
            try:
                found = _imported(path)
            except (ChannelError, ImportError, AttributeError):
                continue
            if isinstance(found, type) and found is not object:
                return found
        return type(self)

    def _ask(self, op: str, *args: Any) -> Any:
        return self._peer.request(op, (self, *args))

    @property  # type: ignore[misc]
    def __dict__(self) -> dict:  # vars(obj): a copy of the learner's object's attributes
        return self._ask("getattr", "__dict__")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name, value)

    def __delattr__(self, name: str) -> None:
        self._ask("delattr", name)

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._ask("setitem", key, value)

    def __len__(self) -> int:
        return int(self._ask("len"))

    def __iter__(self):
        return iter(self._ask("list"))

    def __contains__(self, item: Any) -> bool:
        return bool(self._ask("contains", item))

    def __bool__(self) -> bool:
        return bool(self._ask("bool"))

    def __repr__(self) -> str:
        return f"<the learner's {self._type}>"

    def __hash__(self) -> int:
        return hash((id(self._peer), self._id))

    def __float__(self) -> float:
        return float(self._ask("float"))

    def __int__(self) -> int:
        return int(self._ask("int"))

    def __index__(self) -> int:
        return int(self._ask("int"))

    def __enter__(self) -> Any:
        return self._ask("call_method", "__enter__", (), {})

    def __exit__(self, *exc: Any) -> Any:
        return self._ask("call_method", "__exit__", (None, None, None), {})


def _operator(name: str, reflected: bool = False) -> Callable[..., Any]:
    def method(self: Remote, *other: Any) -> Any:
        return self._ask("operator", name, reflected, other)
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_", "or_", "xor",
              "lshift", "rshift"):
    _dunder = _name.rstrip("_")
    setattr(Remote, f"__{_dunder}__", _operator(_name))
    setattr(Remote, f"__r{_dunder}__", _operator(_name, reflected=True))
for _name in ("neg", "pos", "abs", "invert", "eq", "ne", "lt", "le", "gt", "ge"):
    setattr(Remote, f"__{_name}__", _operator(_name))


class RemoteClassMeta(type):
    """The metaclass of a learner's class as the grader sees it: calling it builds the object in the kernel."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return remote_call(cls._remote, args, kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, Remote) and bool(cls._remote._peer.request("isinstance", (obj, cls._remote)))

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(cls._remote, name)

    def __repr__(cls) -> str:
        return f"<the learner's class {cls.__name__}>"


def _remote_class(peer: Peer, key: int, typename: str, bases: list[str]) -> type:
    """A stand-in class for a learner's class: a real class (so ``isinstance(cls, type)`` and ``issubclass(cls,
    nn.Module)`` hold as in the kernel) whose calls and attributes go to the kernel."""
    real = []
    for path in bases:
        try:
            found = _imported(path)
        except (ChannelError, ImportError, AttributeError):
            continue
        if isinstance(found, type) and type(found) is type and found is not object:
            real.append(found)
    chosen = tuple(b for b in real if not any(b is not o and issubclass(o, b) for o in real))[:1]
    name = typename.rpartition(".")[2] if typename.rpartition(".")[2].isidentifier() else "LearnerClass"
    stand_in = RemoteClassMeta(name, chosen, {"__slots__": () if not chosen else (), "__module__": "learner"})
    type.__setattr__(stand_in, "_remote", RemoteCallable(peer, key, typename, bases))
    return stand_in


class RemoteCallable(Remote):
    """A learner's function, class or bound method; calling it runs it in the kernel."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return remote_call(self, args, kwargs)


def remote_call(target: Any, args: tuple, kwargs: dict, inplace: bool = False, peer: Peer | None = None) -> Any:
    """Call ``target`` in the kernel with copies of ``args``; the watch, random state and grad mode go along.

    ``target`` is a :class:`Remote` or, with ``peer``, a function of torch or the course that the kernel imports
    by name (a helper that has to run beside the learner's code). With ``inplace`` the kernel's arguments come back after the call and are copied into the check's own
    (tensors and their ``.grad``), as if the learner's code had changed them directly. Without it, only the
    gradients of tensors that require grad come back, and a tensor the learner's code changed in place
    fails the check (see :func:`~llmcourse.grading.checks.call`)."""
    from llmcourse.grading import checks

    context = {"forbid": [f.spec for f in checks._FORBIDDEN if f.spec is not None], "own_work": checks._OWN_WORK[0],
               "torch_rng": torch.get_rng_state(), "random": random.getstate(), "grad": torch.is_grad_enabled(),
               "default_dtype": torch.get_default_dtype()}
    peer = target._peer if peer is None else peer
    reply = peer.request("call", (target, args, dict(kwargs), context))
    value, after, state, error, seen, graphs = reply
    torch.set_rng_state(state["torch_rng"])
    random.setstate(_as_random_state(state["random"]))
    if seen is not None:
        raise checks.ForbiddenPath(*seen)
    changed = _write_back(args, after[0], inplace) or _write_back(kwargs, after[1], inplace)
    if error is not None:
        raise learner_exception(error)
    if changed:
        raise checks.ArgumentChanged(f"{changed} in place.")
    pairs: dict[int, Any] = {}
    _pair(args, after[0], pairs)
    _pair(kwargs, after[1], pairs)
    value = _remapped(value, pairs)
    if graphs:
        leaves = [t for t in _tensors((args, kwargs)) if t.requires_grad]
        value = _bridged(value, list(graphs), peer, leaves)
    return value


def _tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """The tensors in ``value`` (lists, tuples and dicts searched), in the order the codec meets them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 20:
        return []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v, depth + 1)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v, depth + 1)]
    return []


class _Bridge(torch.autograd.Function):
    """A tensor computed in the kernel, joined to the grader's autograd graph: its backward asks the kernel to run
    backward through the learner's graph (gradients reach the learner's weights there) and brings back the
    gradients of the arguments the check passed."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, peer: Peer, key: int, *leaves: torch.Tensor) -> torch.Tensor:
        ctx.peer, ctx.key, ctx.count = peer, key, len(leaves)
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        grads = ctx.peer.request("backward", (Remote(ctx.peer, ctx.key, "graph"), grad))
        grads = list(grads) + [None] * (ctx.count - len(grads))
        return (None, None, None, *grads[:ctx.count])


def _bridged(value: Any, graphs: list, peer: Peer, leaves: list[torch.Tensor]) -> Any:
    """Replace the tensors of ``value`` that carry a graph in the kernel (``graphs``: [path, key]) by bridges."""
    for path, key in graphs:
        def swap(node: Any, steps: list) -> Any:
            if not steps:
                if not isinstance(node, torch.Tensor) or not node.is_floating_point():
                    return node
                return _Bridge.apply(node, peer, key, *leaves)
            head, rest = steps[0], steps[1:]
            if isinstance(node, tuple):
                items = list(node)
                items[head] = swap(items[head], rest)
                return type(node)(*items) if hasattr(node, "_fields") else tuple(items)
            if isinstance(node, (list, dict)):
                node[head] = swap(node[head], rest)
            return node
        value = swap(value, list(path))
    return value


def _as_random_state(state: Any) -> tuple:
    version, internal, gauss = state
    return int(version), tuple(int(x) for x in internal), gauss


def _remapped(value: Any, pairs: dict, depth: int = 0) -> Any:
    """``value`` with the course's and torch's objects the check passed in replaced by the check's own (a method
    that returns ``self``, a graph's nodes): the learner's code had those very objects, so identity holds."""
    if id(value) in pairs and not isinstance(value, torch.Tensor):
        return pairs[id(value)]
    if depth > 20:
        return value
    if type(value) is list:
        return [_remapped(v, pairs, depth + 1) for v in value]
    if type(value) is tuple:
        return tuple(_remapped(v, pairs, depth + 1) for v in value)
    if type(value) is dict:
        return {k: _remapped(v, pairs, depth + 1) for k, v in value.items()}
    return value


def _pair(mine: Any, theirs: Any, pairs: dict, depth: int = 0) -> None:
    """Record which of the kernel's objects (``theirs``, as they came back) stand for which of the check's."""
    if depth > 40 or id(theirs) in pairs:
        return
    if isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)):
        for a, b in zip(mine, theirs):
            _pair(a, b, pairs, depth + 1)
    elif isinstance(mine, dict) and isinstance(theirs, dict):
        for k in mine:
            if k in theirs:
                _pair(mine[k], theirs[k], pairs, depth + 1)
    elif type(mine) is type(theirs) and _by_state(mine):
        pairs[id(theirs)] = mine
        state = vars(theirs)
        for name, value in vars(mine).items():
            if name in state:
                _pair(value, state[name], pairs, depth + 1)


def _write_back(mine: Any, theirs: Any, inplace: bool, pairs: dict | None = None, depth: int = 0) -> str:
    """Bring the kernel's arguments back into the check's own; the first in-place change, described, or "".

    Tensors get their values (``inplace``) and gradients back; the course's and torch's objects (modules,
    optimizers...) their attributes, recursively, so a check that holds on to a model's parameters sees the
    gradients the learner's code left in them. ``pairs`` maps the kernel's tensors to the check's."""
    pairs = {} if pairs is None else pairs
    if depth > 40:
        return ""
    if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor):
        pairs[id(theirs)] = mine
        changed = ""
        if not inplace and not _same_values(mine, theirs):
            changed = f"changed its argument (a tensor of shape {tuple(mine.shape)})"
        if inplace:
            with torch.no_grad():
                if mine.shape == theirs.shape and mine.dtype == theirs.dtype:
                    mine.copy_(theirs)
                else:
                    mine.data = theirs.detach()
        if inplace and mine.is_leaf and mine.requires_grad != theirs.requires_grad and mine.is_floating_point():
            mine.requires_grad_(theirs.requires_grad)
        if mine.is_leaf:
            grad = theirs.grad
            if grad is not None and mine.grad is not None and grad.shape == mine.grad.shape:
                mine.grad.copy_(grad)
            else:
                mine.grad = grad
        return changed
    if isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)) and len(mine) == len(theirs):
        for a, b in zip(mine, theirs):
            changed = _write_back(a, b, inplace, pairs, depth + 1)
            if changed:
                return changed
        if isinstance(mine, list):
            mine[:] = [a if _kept(a, b) else _mapped(b, pairs) for a, b in zip(mine, theirs)]
        return ""
    if isinstance(mine, list) and isinstance(theirs, list):   # a list the learner's code grew or shrank
        mine[:] = [_mapped(b, pairs) for b in theirs]
        return ""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        # tensor keys (an optimizer's state is keyed by parameters) pair up in order, like the values
        for a, b in zip([k for k in mine if isinstance(k, torch.Tensor)],
                        [k for k in theirs if isinstance(k, torch.Tensor)]):
            pairs.setdefault(id(b), a)
        for k, value in theirs.items():
            key = pairs.get(id(k), k) if isinstance(k, torch.Tensor) else k
            if key in mine:
                changed = _write_back(mine[key], value, inplace, pairs, depth + 1)
                if changed:
                    return changed
                if not _kept(mine[key], value):
                    mine[key] = _mapped(value, pairs)
            else:
                mine[key] = _mapped(value, pairs)
        kept = [pairs.get(id(k), k) if isinstance(k, torch.Tensor) else k for k in theirs]
        for k in list(mine):  # keys the learner's code removed (tensor keys compared by identity)
            if not any(k is t or not isinstance(k, torch.Tensor) and not isinstance(t, torch.Tensor) and k == t
                       for t in kept):
                del mine[k]
        return ""
    if type(mine) is type(theirs) and _by_state(mine):
        pairs[id(theirs)] = mine
        state = vars(theirs)
        for name in list(vars(mine)):
            if name in state:
                changed = _write_back(vars(mine)[name], state[name], inplace, pairs, depth + 1)
                if changed:
                    return f"{changed} (in its `{name}`)" if depth == 0 else changed
        for name, value in state.items():
            if name not in vars(mine) or not _kept(vars(mine)[name], value):
                vars(mine)[name] = _mapped(value, pairs)
        return ""
    return ""


def _kept(mine: Any, theirs: Any) -> bool:
    """Whether the check's own object stays (it was updated in place) instead of the kernel's value."""
    if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor):
        return True
    if isinstance(mine, (list, dict)) and type(mine) is type(theirs):
        return True
    if isinstance(mine, tuple) and type(mine) is type(theirs) and len(mine) == len(theirs):
        return all(_kept(a, b) or (a is b) or (type(a) is type(b) and not isinstance(a, (torch.Tensor, list, dict))
                                                and a == b) for a, b in zip(mine, theirs))
    return type(mine) is type(theirs) and _by_state(mine)


def _mapped(value: Any, pairs: dict) -> Any:
    """The kernel's value, with tensors the check already holds replaced by the check's own."""
    if isinstance(value, torch.Tensor) or id(value) in pairs:
        return pairs.get(id(value), value)
    if type(value) is list:
        return [_mapped(v, pairs) for v in value]
    if type(value) is tuple:
        return tuple(_mapped(v, pairs) for v in value)
    if type(value) is dict:
        return {(pairs.get(id(k), k) if isinstance(k, torch.Tensor) else k): _mapped(v, pairs) for k, v in value.items()}
    return value


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    from llmcourse.grading.checks import _same_tensor
    return _same_tensor(a, b)


class RemoteNamespace:
    """The learner's notebook namespace as the grader sees it: names looked up in the kernel."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.peer.request("has", name))

    def __getitem__(self, name: str) -> Any:
        return self.peer.request("lookup", name)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def keys(self) -> list[str]:
        return list(self.peer.request("keys"))


# --------------------------------------------------------------------------- the kernel's side

class _GraderFunction:
    """In the kernel: a function a check handed to the learner's code; calling it asks the grader."""

    __slots__ = ("_peer", "_id", "_type")

    def __init__(self, peer: Peer, key: int, typename: str) -> None:
        self._peer, self._id, self._type = peer, key, typename

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._peer.request("call_back", (self._id, args, kwargs))

    def __repr__(self) -> str:
        return f"<the grader's {self._type}>"


def _kernel_handle(peer: Peer, op: str, value: Any) -> Any:
    ns = peer.namespace if peer.namespace is not None else {}
    if op == "has":
        return value in ns
    if op == "keys":
        return [k for k in ns if isinstance(k, str) and not k.startswith("_")]
    if op == "lookup":
        if value not in ns:
            raise KeyError(value)
        return ns[value]
    if op == "call":
        return _kernel_call(peer, *value)
    target, *rest = value
    if op == "getattr":
        return getattr(target, rest[0])
    if op == "setattr":
        return setattr(target, rest[0], rest[1])
    if op == "delattr":
        return delattr(target, rest[0])
    if op == "getitem":
        return target[rest[0]]
    if op == "setitem":
        target[rest[0]] = rest[1]
        return None
    if op == "len":
        return len(target)
    if op == "list":
        items = []
        for item in target:
            items.append(item)
            if len(items) > MAX_ITEMS:
                raise ValueError(f"more than {MAX_ITEMS} items")
        return items
    if op == "isinstance":
        return isinstance(target, rest[0])
    if op == "backward":
        return _kernel_backward(peer, target, rest[0])
    if op == "contains":
        return rest[0] in target
    if op == "bool":
        return bool(target)
    if op == "float":
        return float(target)
    if op == "int":
        return operator.index(target) if not isinstance(target, float) else int(target)
    if op == "call_method":
        name, args, kwargs = rest
        return getattr(target, name)(*args, **kwargs)
    if op == "operator":
        name, reflected, other = rest
        func = _OPERATORS[name]
        if reflected:
            return func(other[0], target)
        return func(target, *other)
    raise ChannelError(f"unknown request {op!r}")


def _kernel_call(peer: Peer, target: Any, args: tuple, kwargs: dict, context: dict) -> tuple:
    """Run one call of the learner's code for the grader, under the watch it asks for."""
    from contextlib import ExitStack

    from llmcourse.grading import checks

    torch.set_rng_state(context["torch_rng"])
    random.setstate(_as_random_state(context["random"]))
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(context["default_dtype"])
    value, error, seen = None, None, None
    try:
        with ExitStack() as stack:
            stack.enter_context(torch.set_grad_enabled(context["grad"]))
            stack.enter_context(checks.course_code_refused(context["own_work"]))
            for exercise, entries in context["forbid"]:
                stack.enter_context(checks.forbid(exercise, checks.resolve_entries(entries)))
            value, error, seen = checks._watched(lambda: target(*args, **kwargs))
    finally:
        torch.set_default_dtype(previous_dtype)
    state = {"torch_rng": torch.get_rng_state(), "random": random.getstate()}
    graphs = []
    if error is None and seen is None:
        leaves = [t for t in _tensors((args, kwargs)) if t.requires_grad]
        for path, tensor in _graph_outputs(value):
            graphs.append([path, peer._export((tensor, leaves))])
    return value, (args, kwargs), state, None if error is None else describe_exception(error), seen, graphs


def _graph_outputs(value: Any, path: tuple = (), depth: int = 0) -> list[tuple[list, torch.Tensor]]:
    """(path, tensor) for every tensor in ``value`` (or its top-level tuple, list or dict) that carries a graph."""
    if isinstance(value, torch.Tensor):
        return [(list(path), value)] if value.grad_fn is not None else []
    if depth > 2:
        return []
    if isinstance(value, (list, tuple)):
        return [x for i, v in enumerate(value) for x in _graph_outputs(v, (*path, i), depth + 1)]
    if type(value) is dict:
        return [x for k, v in value.items() if isinstance(k, (str, int)) for x in _graph_outputs(v, (*path, k), depth + 1)]
    return []


def _kernel_backward(peer: Peer, stored: Any, grad: torch.Tensor) -> list:
    """Run backward from a stored output with ``grad``; the gradients its arguments received."""
    tensor, leaves = stored
    before = [None if t.grad is None else t.grad.clone() for t in leaves]
    torch.autograd.backward(tensor, grad, retain_graph=True)
    out = []
    for t, old in zip(leaves, before):
        if t.grad is None:
            out.append(None)
        else:
            out.append(t.grad.clone() if old is None else t.grad - old)
    return out


def serve(address: str, token: str, namespace: dict) -> None:
    """In the learner's kernel: connect to the grader at ``address`` and answer its requests until it is done."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    peer = Peer(sock, "kernel", namespace)
    peer.send({"op": "hello", "token": token})
    try:
        while True:
            message, value = peer.receive()
            if message.get("op") == "bye":
                peer.objects.clear()
                return
            peer.answer(message, value)
    except ChannelError:
        return
    finally:
        sock.close()


def listen(address: str | Path) -> socket.socket:
    """The grader's listening socket at ``address`` (a path inside the sandbox's folder)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(address))
    server.listen(1)
    return server


def accept(server: socket.socket, token: str, timeout: float) -> Peer:
    """Wait up to ``timeout`` s for the kernel's server to connect and say ``token``; the grader's :class:`Peer`."""
    server.settimeout(timeout)
    sock, _ = server.accept()
    sock.settimeout(timeout)
    peer = Peer(sock, "grader")
    message, _ = peer.receive()
    sock.settimeout(None)
    if message.get("op") != "hello" or message.get("token") != token:
        sock.close()
        raise ChannelError("the kernel's server did not say this run's token")
    return peer


__all__ = ["ChannelError", "LearnerError", "Peer", "Remote", "RemoteCallable", "RemoteNamespace", "accept",
           "learner_exception", "listen", "remote_call", "serve"]
