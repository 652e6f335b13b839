"""The typed channel between the grader and the learner's kernel (llmcourse/grading/channel.py).

* values cross as copies, exactly (every dtype, gradients, nesting, the course's dataclasses...);
* the learner's objects stay in the kernel as handles: calls, attributes, operators, classes, modules, and
  gradients that flow back through autograd as if the learner's module were local;
* nothing the kernel sends can run code in the grader or reach the grader's objects;
* every check that runs outside the kernel grades every wrong solution as it does in-process.
"""
import importlib
import math
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from channel_harness import remote_namespace
from llmcourse.grading import channel, checks
from llmcourse.grading.checks import load_chapter, run_check
from llmcourse.inference.batching import Request

CHAPTERS = [f"{n:02d}" for n in range(12)]


class Counter:
    def __init__(self, start):
        self.count = start

    def add(self, k):
        self.count += k
        return self

    def __mul__(self, other):
        return Counter(self.count * (other.count if isinstance(other, Counter) else other))


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0, -1.0, 0.5]))

    def forward(self, x):
        return torch.tanh(x * self.w)


def echo(*values):
    return values


@pytest.fixture
def ns():
    return remote_namespace({"echo": echo, "Counter": Counter, "Scale": Scale, "grow": lambda xs: xs.append(1),
                             "drop": lambda state: state.pop("step"),
                             "apply": lambda f, x: f(x) * 2})


def test_values_cross_as_exact_copies(ns):
    grad_leaf = torch.randn(3, dtype=torch.float64, requires_grad=True)
    grad_leaf.grad = torch.ones(3, dtype=torch.float64)
    values = [
        torch.randn(2, 3), torch.randn(4, dtype=torch.bfloat16), torch.tensor([True, False]),
        torch.arange(6).reshape(2, 3).t(), torch.randn(2, 3, 4).transpose(0, 2), torch.tensor(3.5), torch.empty(0, 4), torch.randn(2) + 1j,
        grad_leaf, nn.Parameter(torch.zeros(2)), math.nan, -math.inf, 2**70, "text\x1b[2J", b"\x00\xff",
        {"a": [1, (2.5, None)], 3: {4}}, Path("/tmp/x"), torch.float16, torch.Size([2, 3]), torch.device("cpu"),
        slice(1, None, 2), Ellipsis, np.arange(5, dtype=np.int32), Request(0.25, 7),
    ]
    back = ns["echo"](*values)
    assert len(back) == len(values)
    for sent, got in zip(values, back):
        if isinstance(sent, torch.Tensor):
            assert got is not sent and got.dtype == sent.dtype and got.shape == sent.shape
            assert torch.equal(got, sent) and got.requires_grad == sent.requires_grad
            assert isinstance(got, nn.Parameter) == isinstance(sent, nn.Parameter)
            assert got.stride() == sent.clone().stride()                  # laid out as a clone would be
        elif isinstance(sent, float) and math.isnan(sent):
            assert math.isnan(got)
        elif isinstance(sent, np.ndarray):
            assert isinstance(got, np.ndarray) and (got == sent).all() and got.dtype == sent.dtype
        else:
            assert got == sent and type(got) is type(sent)
    assert torch.equal(back[next(i for i, v in enumerate(values) if v is grad_leaf)].grad, grad_leaf.grad)
    generator = torch.Generator().manual_seed(5)
    (copy,) = ns["echo"](generator)
    assert torch.equal(torch.rand(3, generator=copy), torch.rand(3, generator=generator))


def test_the_learners_objects_stay_in_the_kernel_as_handles(ns):
    klass = ns["Counter"]
    assert isinstance(klass, type) and not issubclass(klass, nn.Module)
    counter = klass(2)
    assert counter.add(3) is counter and counter.count == 5      # a method that returns self: the same handle
    assert (counter * 4).count == 20 and isinstance(counter, klass)
    counter.count = 1
    assert counter.count == 1
    assert "Counter" in repr(counter) and "the learner's" in repr(counter)
    with pytest.raises(AttributeError):
        counter.missing
    xs = [0]
    ns["grow"](xs)
    assert xs == [0, 1]       # as in one process: what the learner's code does to a plain list, the check sees


def test_a_dict_keyed_by_tensors_comes_back_with_the_checks_own_keys(ns):
    a, b = torch.zeros(3), torch.ones(2, 2)   # keyed by tensors, as an optimizer's state is
    state = {a: "first", b: "second", "step": 4}
    assert ns["drop"](state) == 4
    assert "step" not in state and len(state) == 2 and all(k is t for k, t in zip(state, (a, b)))


def test_gradients_flow_back_from_a_learners_module(ns):
    module = ns["Scale"]()
    assert isinstance(module, nn.Module) and issubclass(ns["Scale"], nn.Module)
    x = torch.tensor([0.3, -0.7, 1.2], requires_grad=True)
    weight = torch.tensor([1.0, 2.0, 3.0])
    (module(x) * weight).sum().backward()
    local = Scale()
    x_local = x.detach().clone().requires_grad_()
    (local(x_local) * weight).sum().backward()
    assert torch.allclose(x.grad, x_local.grad)
    (w,) = [p for _, p in module.named_parameters()]
    assert torch.allclose(w.grad, local.w.grad)                 # the learner's weights got their gradient


def test_functions_a_check_hands_over_run_where_they_can(ns):
    def f(t):
        return t ** 3

    x = torch.tensor(2.0)
    assert float(ns["apply"](torch.neg, x)) == pytest.approx(-4.0)  # torch's own: the kernel imports the same one
    assert float(ns["apply"](f, x)) == pytest.approx(16.0)          # a test's function: called back in this process


def _grader_and_a_fake_kernel():
    grader_end, kernel_end = socket.socketpair()
    return channel.Peer(grader_end, "grader"), kernel_end


def _reply(kernel_end, payload, buffers=()):
    import json

    frames = [json.dumps({"op": "reply", "payload": payload}).encode(), *buffers]
    kernel_end.sendall(b"".join(struct.pack("!Q", len(f)) + f for f in [struct.pack("!Q", len(frames)), *frames]))


@pytest.mark.parametrize("payload,buffers,word", [
    ({"$function": "llmcourse.grading.checks", "code": 0, "name": "f", "closure": None, "defaults": None,
      "kwdefaults": None}, [b"\xe3"], "may not send code"),
    ({"$object": "os:_wrap_close", "state": {"$dict": []}}, [], "outside torch"),
    ({"$named": "os:system"}, [], "may not name"),
    ({"$named": "torch:load"}, [], "may not name"),
    ({"$object": "llmcourse.pretraining.trainer:Trainer", "state": {"$dict": []}}, [], "may not send an object"),
    ({"$dataclass": "subprocess:CompletedProcess", "fields": {}}, [], "outside the course"),
    ({"$ref": 99, "owner": "peer"}, [], "never handed out"),
    ({"$tensor": 0, "dtype": "float32", "shape": [1000]}, [b"1234"], "does not match"),
    ({"$tensor": 0, "dtype": "object", "shape": [1]}, [b"1234"], "unknown dtype"),
    ({"$pickle": "gASV"}, [], "unknown kind"),
])
def test_nothing_the_kernel_sends_runs_code_in_the_grader(payload, buffers, word):
    grader, kernel_end = _grader_and_a_fake_kernel()
    grader.send({"op": "lookup"}, "x")
    _reply(kernel_end, payload, buffers)
    with pytest.raises(channel.ChannelError, match=word):
        grader.receive()


def test_a_frame_longer_than_the_limit_is_refused_before_it_is_read():
    grader, kernel_end = _grader_and_a_fake_kernel()
    kernel_end.sendall(struct.pack("!Q", 8) + struct.pack("!Q", 1) + struct.pack("!Q", 2**40))  # one frame of 1 TB
    with pytest.raises(channel.ChannelError, match="more than the channel accepts"):
        grader.receive()
    assert grader.broken


def test_the_kernel_may_only_call_what_a_check_handed_it():
    grader, kernel_end = _grader_and_a_fake_kernel()
    secret = {"solutions": "here"}
    key = grader._export(lambda: secret)
    kernel = channel.Peer(kernel_end, "kernel", {})
    for op, value in [("getattr", (key, "__globals__")), ("lookup", "open"), ("call_back", (12345, (), {}))]:
        kernel.send({"op": op}, value)
        message, _ = grader.receive()
        grader.answer(message, None if op != "call_back" else (12345, (), {}))
        reply, _ = kernel.receive()
        assert "error" in reply and not reply.get("learner"), (op, reply)


def _wrong_cases():
    cases = []
    for number in CHAPTERS:
        module = importlib.import_module(f"wrong_solutions.ch{number}")
        for exercise, wrongs in module.WRONG.items():
            cases.append(pytest.param(number, exercise, wrongs, id=f"ch{number}-{exercise}"))
    return cases


@pytest.mark.parametrize("number,exercise,wrongs", _wrong_cases())
def test_checks_outside_the_kernel_grade_every_wrong_solution_as_in_process(number, exercise, wrongs):
    chapter = load_chapter(number)
    outside = [c for c in chapter.checks if c.exercise == exercise and not c.in_kernel]
    if not outside:
        pytest.skip(f"every check of {exercise} runs in the kernel")
    namespace: dict = {}
    remote = remote_namespace(namespace)
    for wrong in wrongs:
        namespace.clear()
        namespace[exercise] = wrong
        for check in outside:
            local = run_check(check, {exercise: wrong})
            if local.message.startswith("Gave up after"):  # a hung call: the grader restarts the kernel for that
                continue
            checks.REMOTE.on = True
            try:
                through = run_check(check, remote)
            finally:
                checks.REMOTE.on = False
            assert through.passed == local.passed, (wrong.__name__, check.name, local.message, through.message)
            assert "could not use your code" not in through.message or "could not use your code" in local.message, \
                (wrong.__name__, check.name, through.message)
            assert not remote.peer.broken


def test_every_check_of_the_course_runs_in_the_grader_as_the_readme_says():
    every = [c for number in CHAPTERS for c in load_chapter(number).checks]
    assert every and not [c.name for c in every if c.in_kernel]
    readme = " ".join(Path(__file__).resolve().parents[1].joinpath("README.md").read_text().split())
    assert f"All {len(every)} checks run in the grader's own process" in readme
    runner = " ".join(Path(checks.__file__).with_name("runner.py").read_text().split())
    assert f"none of the course's {len(every)} checks is" in runner
