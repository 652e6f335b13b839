"""Checks that the learner's call itself cannot fool.

Two weaknesses are closed here (see llmcourse/grading/checks.py):

* a function that changes its inputs in place (zeroing them and answering for zeros, or an honest ``x -= m``)
  used to change the check's own tensors, and with them the answer the check expected afterwards. Now the
  learner gets clones, and an input changed in place fails the check, naming the argument;
* "write it yourself" exercises used to switch built-ins off by patching attributes only. Now the learner's
  call also runs under a TorchFunctionMode, a TorchDispatchMode and a profiler, so a reference captured before
  the check, a private op (``torch._softmax``, ``torch.ops.aten``), a method or alias, and (while a submission
  is graded) the course's own version imported under the exercise's name are all seen, and named.

Each attack gets no more points than its honest content earns; honest work keeps full marks.
"""
import math
import sys

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.basics import activations as A
from llmcourse.basics import calibration
from llmcourse.basics import losses as L
from llmcourse.grading.checks import call, call_inplace, forbid, load_chapter, run_checks
from llmcourse.grading.runner import grade_notebook

# References captured before any check runs, as a notebook's first cell would capture them.
_GELU, _SOFTMAX, _RELU, _LINEAR, _CROSS_ENTROPY = F.gelu, torch.softmax, torch.relu, F.linear, F.cross_entropy
_LAYER_NORM, _EMBEDDING, _SDPA, _GRAD = F.layer_norm, F.embedding, F.scaled_dot_product_attention, torch.autograd.grad
_SGD, _ADAMW, _CLIP = torch.optim.SGD, torch.optim.AdamW, torch.nn.utils.clip_grad_norm_
_NORMALIZE, _ECE = F.normalize, calibration.expected_calibration_error

CH01 = load_chapter("01")


def _score(chapter, ns, exercise, own_work=False):
    results = run_checks(chapter, ns, exercise, own_work=own_work)
    return sum(r.points for r in results), sum(r.max_points for r in results), [r.message for r in results]


def _honest_softmax(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum(dim, keepdim=True)


def _honest_cross_entropy(logits, targets):
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    return -log_probs[torch.arange(len(targets)), targets].mean()


def _cross_entropy_grad(logits, targets):
    p = _honest_softmax(logits)
    return (p - F.one_hot(targets, logits.shape[-1]).to(p.dtype)) / logits.shape[0]


HONEST_01 = {
    "neuron": lambda x, w, b: torch.sigmoid((x * w).sum(-1) + b),
    "dense_layer": lambda a, W, b: a @ W + b,
    "mlp_forward": lambda x, Ws, bs: _mlp(x, Ws, bs),
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "stable_softmax": _honest_softmax,
    "cross_entropy_from_logits": _honest_cross_entropy,
    "cross_entropy_grad": _cross_entropy_grad,
}


def _mlp(x, weights, biases):
    for i, (W, b) in enumerate(zip(weights, biases)):
        x = x @ W + b
        if i < len(weights) - 1:
            x = torch.where(x > 0, x, torch.zeros_like(x))
    return x


def _zero_everything(args):
    with torch.no_grad():
        for a in args:
            for t in (a if isinstance(a, (list, tuple)) else [a]):
                if isinstance(t, torch.Tensor):
                    t.zero_()


def _answers_for_zeros(f):
    """The attack: zero every input tensor in place, then answer for the zeros."""
    def hostile(*args, **kwargs):
        _zero_everything(args)
        return f(*args, **kwargs)
    return hostile


# --------------------------------------------------------------------------- inputs changed in place


def test_zeroing_the_inputs_earns_nothing_in_chapter_01():
    # before: 15 of these 21 points passed, because the checks computed their expected values afterwards
    earned = total = 0
    for exercise, honest in HONEST_01.items():
        got, out_of, messages = _score(CH01, {exercise: _answers_for_zeros(honest)}, exercise)
        earned, total = earned + got, total + out_of
        assert got == 0, (exercise, messages)
        assert all("in place" in m for m in messages), messages
    assert total == 21 and earned == 0
    for exercise, honest in HONEST_01.items():  # the honest versions still earn everything
        got, out_of, messages = _score(CH01, {exercise: honest}, exercise)
        assert got == out_of, messages


def test_an_honest_in_place_bug_is_named():
    def softmax_in_place(x, dim=-1):
        x -= x.max(dim, keepdim=True).values  # right answer, but the caller's tensor is ruined
        e = torch.exp(x)
        return e / e.sum(dim, keepdim=True)

    got, _, messages = _score(CH01, {"stable_softmax": softmax_in_place}, "stable_softmax")
    assert got == 0
    assert "`stable_softmax` changed its argument 1 (a tensor of shape (4, 6)) in place" in messages[0]


def test_the_check_keeps_its_own_tensors_and_containers():
    x, weights = torch.ones(3), [torch.ones(2), torch.ones(2)]
    seen = {}

    def learner(a, ws, dim=None):
        seen["same"] = a is x or ws is weights or ws[0] is weights[0]
        return a.sum()

    assert call({"f": learner}, "f", x, weights, dim=torch.zeros(1)) == 3.0
    assert seen["same"] is False
    ids = [1, 2, 3]  # a list without tensors is passed as it is (the checks compare it afterwards)
    assert call({"f": lambda v: v}, "f", ids) is ids


def test_tensors_that_require_grad_and_modules_are_watched_not_copied():
    w = torch.ones(3, requires_grad=True)
    call({"f": lambda t: (t * 2).sum().backward()}, "f", w)  # .grad reaches the check's own tensor
    assert w.grad.tolist() == [2.0, 2.0, 2.0]
    layer = nn.Linear(2, 2)

    def shrink(module):
        with torch.no_grad():
            module.weight.mul_(0)

    with pytest.raises(AssertionError, match=r"changed its argument 1 \(the module's `weight`\) in place"):
        call({"shrink": shrink}, "shrink", layer)
    call_inplace({"shrink": shrink}, "shrink", layer)  # an exercise that changes its argument on purpose
    assert layer.weight.abs().sum() == 0


def test_modules_the_learner_builds_get_copies_of_their_inputs():
    from test_ch05_checks import CORRECT as CORRECT_05
    from test_ch06_checks import CORRECT as CORRECT_06
    from test_ch09_checks import CORRECT as CORRECT_09

    for number, correct, name in [("05", CORRECT_05, "CausalSelfAttention"), ("06", CORRECT_06, "MixtureOfExperts"),
                                  ("09", CORRECT_09, "LoRALinear")]:
        honest = correct[name]

        class ZeroesItsInput(honest):
            def forward(self, x, *args, **kwargs):
                with torch.no_grad():
                    x.zero_()
                return super().forward(x, *args, **kwargs)

        ZeroesItsInput.__name__ = name
        chapter = load_chapter(number)
        before = sum(r.points for r in run_checks(chapter, {name: honest}, name))
        after = run_checks(chapter, {name: ZeroesItsInput}, name)
        assert before == sum(r.max_points for r in after)
        failed = [r for r in after if not r.passed]
        assert failed and any("in place" in r.message for r in failed), [r.message for r in after]
        # the checks that still pass look at the module's structure, not at an output
        assert all("parameters" in r.name or "trains_only" in r.name or "inject" in r.name or "merge_all" in r.name
                   for r in after if r.passed), [r.name for r in after if r.passed]


def test_an_exercise_that_changes_its_arguments_on_purpose_still_works():
    from test_ch00 import CORRECT as CORRECT_00

    chapter = load_chapter("00")
    for exercise in ("train_step", "swap_modules"):
        got, out_of, messages = _score(chapter, {exercise: CORRECT_00[exercise]}, exercise)
        assert got == out_of, messages

    def zero_then_train(model, optimizer, x, y):
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return CORRECT_00["train_step"](model, optimizer, x, y)

    got, _, _ = _score(chapter, {"train_step": zero_then_train}, "train_step")
    assert got <= 2  # only the two checks that look at the returned type and the mode, not at the values


# --------------------------------------------------------------------------- forbidden built-ins, however reached


@pytest.mark.parametrize("exercise, cheat, seen", [
    # a reference captured before the check
    ("gelu", lambda x: _GELU(x), "reaches aten::gelu (F.gelu or an alias)"),
    ("stable_softmax", lambda x, dim=-1: _SOFTMAX(x, dim), "reaches aten::_softmax (torch.softmax or an alias)"),
    ("relu", lambda x: _RELU(x), "reaches aten::relu (torch.relu or an alias)"),
    ("dense_layer", lambda a, W, b: _LINEAR(a, W.T, b), "calls torch's linear (F.linear or an alias)"),
    ("cross_entropy_from_logits", lambda z, t: _CROSS_ENTROPY(z, t), "runs F.cross_entropy"),
    ("cross_entropy_grad", lambda z, t: (lambda u: _GRAD(F.cross_entropy(u, t), u)[0])(z.clone().requires_grad_()),
     "runs torch.autograd.grad"),
    # private ops and torch.ops.aten
    ("gelu", lambda x: torch.ops.aten.gelu(x), "reaches aten::gelu"),
    ("stable_softmax", lambda x, dim=-1: torch._softmax(x, dim, False), "reaches aten::_softmax"),
    ("stable_softmax", lambda x, dim=-1: torch.ops.aten._softmax.default(x, dim, False), "reaches aten::_softmax"),
    ("relu", lambda x: torch.ops.aten.relu(x), "reaches aten::relu"),
    ("dense_layer", lambda a, W, b: torch._C._nn.linear(a, W.T, b), "calls torch's linear"),
    ("cross_entropy_from_logits", lambda z, t: torch.ops.aten.nll_loss_forward(
        z - z.logsumexp(-1, keepdim=True), t, None, 1, -100)[0], "asks you to write"),
    # aliases and methods
    ("stable_softmax", lambda x, dim=-1: x.softmax(dim), "asks you to write"),
    ("stable_softmax", lambda x, dim=-1: torch.special.softmax(x, dim), "asks you to write"),
    ("stable_softmax", lambda x, dim=-1: nn.Softmax(dim)(x), "asks you to write"),
    ("relu", lambda x: nn.ReLU()(x), "asks you to write"),
    ("relu", lambda x: F.threshold(x, 0.0, 0.0), "reaches aten::threshold (torch.relu or an alias)"),
    ("gelu", lambda x: nn.GELU()(x), "asks you to write"),
])
def test_chapter_01_sees_the_builtin_however_it_is_reached(exercise, cheat, seen):
    got, _, messages = _score(CH01, {exercise: cheat}, exercise)
    assert got == 0, messages
    assert all("asks you to write" in m for m in messages), messages
    assert seen in messages[0], messages[0]


def _by_sgd(lr, momentum, steps):
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = _SGD([param], lr=lr, momentum=momentum)
    for _ in range(min(steps, 100)):
        optimizer.zero_grad()
        param.sum().backward()
        optimizer.step()
    return -param.item()


def _by_adamw(param, grad, steps, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
    p = param.clone().requires_grad_(True)
    optimizer = _ADAMW([p], lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    for _ in range(steps):
        p.grad = grad.clone()
        optimizer.step()
    return p.detach()


@pytest.mark.parametrize("number, exercise, cheat, seen", [
    ("02", "momentum_distance", _by_sgd, "runs torch.optim.SGD"),
    ("04", "one_hot_embed", lambda ids, w: _EMBEDDING(ids, w), "F.embedding"),
    ("04", "one_hot_embed", lambda ids, w: torch.ops.aten.embedding(w, ids), "reaches aten::embedding"),
    ("05", "attention", lambda q, k, v, mask=None: _SDPA(q, k, v, attn_mask=mask), "F.scaled_dot_product_attention"),
    ("06", "layer_norm", lambda x, weight, bias, eps=1e-5: _LAYER_NORM(x, (x.shape[-1],), weight, bias, eps),
     "F.layer_norm"),
    ("06", "layer_norm", lambda x, weight, bias, eps=1e-5: torch.ops.aten.native_layer_norm(
        x, [x.shape[-1]], weight, bias, eps)[0], "reaches aten::native_layer_norm"),
    ("08", "adamw_after_steps", _by_adamw, "torch.optim.Adam"),
    ("08", "clip_grad_norm", lambda ps, m: _CLIP(list(ps), m), "runs torch.nn.utils."),
    ("04", "cosine_similarity", lambda a, b: torch.ops.aten.cosine_similarity(a, b, -1), "calls torch's cosine_similarity"),
    ("04", "cosine_similarity", lambda a, b: (_NORMALIZE(a, dim=-1) * _NORMALIZE(b, dim=-1)).sum(-1), "runs F.normalize"),
    ("02", "expected_calibration_error", lambda p, y, n=10: _ECE(p, y, n),
     "runs calibration.expected_calibration_error"),
])
def test_other_chapters_see_captured_references_and_private_ops(number, exercise, cheat, seen):
    chapter = load_chapter(number)
    got, _, messages = _score(chapter, {exercise: cheat}, exercise)
    assert got == 0, messages
    assert all("asks you to write" in m for m in messages), messages
    assert seen in messages[0], messages[0]


def test_a_module_the_learner_builds_is_watched_too():
    from wrong_solutions.ch05 import _Attention

    class FusedAttention(_Attention):
        def forward(self, x):
            batch, seq, d_model = x.shape
            q = self.split(self.q_proj(x), self.n_heads)
            k, v = self.split(self.k_proj(x), self.n_kv_heads), self.split(self.v_proj(x), self.n_kv_heads)
            out = _SDPA(q, k, v, is_causal=True, enable_gqa=True)
            return self.o_proj(out.transpose(1, 2).reshape(batch, seq, d_model))

    results = run_checks(load_chapter("05"), {"CausalSelfAttention": FusedAttention}, "CausalSelfAttention")
    outputs = [r for r in results if r.name != "build_attention_parameters"]
    assert outputs and not any(r.passed for r in outputs), [r.message for r in results]
    assert any("F.scaled_dot_product_attention or an alias" in r.message for r in outputs)


def test_the_watch_is_only_on_during_the_learners_call():
    calls = []

    def learner(x):
        calls.append(1)
        return x * 2

    with forbid("double", [(torch, "softmax", "torch.softmax")]):
        expected = _SOFTMAX(torch.zeros(2), 0)  # the check's own code may use the captured built-in
        assert call({"double": learner}, "double", torch.ones(2)).tolist() == [2.0, 2.0]
    assert expected.tolist() == [0.5, 0.5] and calls == [1]
    assert sys.getprofile() is None
    assert not torch.overrides._get_current_function_mode_stack()


# --------------------------------------------------------------------------- the course's own version


@pytest.mark.parametrize("exercise, package, shown", [
    ("gelu", A.gelu, "llmcourse.basics.activations.gelu"),
    ("stable_softmax", A.softmax, "llmcourse.basics.activations.softmax"),
    ("relu", A.relu, "llmcourse.basics.activations.relu"),
    ("cross_entropy_from_logits", L.cross_entropy, "llmcourse.basics.losses.cross_entropy"),
    ("gelu", lambda x: A.gelu(x) + 0.0, "llmcourse.basics.activations.gelu"),  # wrapped in a function of one's own
])
def test_the_course_version_under_the_exercise_name_is_refused_when_grading(exercise, package, shown):
    got, out_of, messages = _score(CH01, {exercise: package}, exercise)
    assert got == out_of  # correct: the package's functions prove the checks right ...
    got, _, messages = _score(CH01, {exercise: package}, exercise, own_work=True)
    assert got == 0  # ... but they are not the learner's work
    assert all(f"calls {shown}, the course's own version, but this exercise asks you to write" in m
               for m in messages), messages


def test_the_courses_bpe_functions_are_refused_under_any_name():
    from llmcourse.tokenizers.basic import get_pair_counts, merge

    chapter = load_chapter("03")
    for ns, exercise in [({"pair_counts": get_pair_counts}, "pair_counts"), ({"merge": merge}, "merge"),
                         ({"merge": lambda ids, pair, new: list(merge(ids, pair, new))}, "merge")]:
        got, _, messages = _score(chapter, ns, exercise)
        assert got == 0, messages
        assert all("llmcourse's" in m and f"asks you to write `{exercise}` yourself" in m for m in messages)


def test_switching_the_watch_off_is_seen():
    def sneaky_gelu(x):
        sys.setprofile(None)
        return A.gelu(x)

    got, _, messages = _score(CH01, {"gelu": sneaky_gelu}, "gelu", own_work=True)
    assert got == 0
    assert "switched off the profiler that watches it" in messages[0]
    assert sys.getprofile() is None


def test_honest_work_keeps_full_marks_when_grading():
    from test_ch04_checks import CORRECT as CORRECT_04
    from test_ch06_checks import CORRECT as CORRECT_06

    for number, correct in [("01", HONEST_01), ("04", CORRECT_04), ("06", CORRECT_06)]:
        chapter = load_chapter(number)
        results = run_checks(chapter, correct, own_work=True)
        graded = [r for r in results if r.exercise in correct]
        assert graded and all(r.passed for r in graded), [r.message for r in graded if not r.passed]


# --------------------------------------------------------------------------- real notebooks, graded end to end

_HOSTILE_01 = [
    "import math\nimport torch\nimport torch.nn.functional as F\n_linear = F.linear",
    # zeroes its inputs and answers for zeros
    "def neuron(x, w, b):\n    x.zero_(); w.zero_()\n    return torch.sigmoid(x @ w + b)",
    "def dense_layer(a, W, b):\n    return _linear(a, W.T, b)",  # a captured reference
    "def relu(x):\n    return torch.ops.aten.relu(x)",  # an aten op
    "def stable_softmax(x, dim=-1):\n    return torch._softmax(x, dim, False)",  # a private alias
    "from llmcourse.basics.activations import gelu",  # the course's own version
    # honest work, which keeps its points
    "def mlp_forward(x, weights, biases):\n"
    "    for i, (W, b) in enumerate(zip(weights, biases)):\n"
    "        x = x @ W + b\n"
    "        if i < len(weights) - 1:\n"
    "            x = torch.where(x > 0, x, torch.zeros_like(x))\n"
    "    return x",
    "def cross_entropy_from_logits(logits, targets):\n"
    "    shifted = logits - logits.max(dim=-1, keepdim=True).values\n"
    "    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))\n"
    "    return -log_probs[torch.arange(len(targets)), targets].mean()",
]


def test_a_hostile_chapter_01_notebook_earns_only_its_honest_points(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in _HOSTILE_01]
    path = tmp_path / "01_neural_networks_are_numbers.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path)
    by_exercise = {}
    for r in report.checks:
        by_exercise.setdefault(r.exercise, []).append(r)
    assert report.score == 6, [(r.name, r.message) for r in report.checks]  # mlp_forward 3 + cross-entropy 3
    assert all(r.passed for r in by_exercise["mlp_forward"] + by_exercise["cross_entropy_from_logits"])
    expected = {"neuron": "in place", "dense_layer": "calls torch's linear", "relu": "reaches aten::relu",
                "stable_softmax": "reaches aten::_softmax",
                "gelu": "calls llmcourse.basics.activations.gelu, the course's own version"}
    for exercise, seen in expected.items():
        assert all(not r.passed and seen in r.message for r in by_exercise[exercise]), \
            [r.message for r in by_exercise[exercise]]


@pytest.mark.parametrize("notebook", ["01_neural_networks_are_numbers.ipynb", "04_embeddings_and_positions.ipynb"])
def test_the_solutions_still_get_full_marks(notebook):
    from conftest import ROOT

    report = grade_notebook(ROOT / "solutions" / notebook)
    assert report.full_marks, [(r.name, r.message) for r in report.checks if not r.passed]
