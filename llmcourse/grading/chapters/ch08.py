"""Graded checks of chapter 08, "Pretraining".

Six warm-up exercises on the pieces of a pretraining loop, each checked on seeded inputs
against an independent reference: ``Tensor.unfold`` for the windows,
``F.cross_entropy`` for the loss, PyTorch's ``LinearLR`` + ``CosineAnnealingLR``
for the schedule, ``torch.nn.utils.clip_grad_norm_`` for clipping, one big
batch's gradients for gradient accumulation, and the cross-entropy of all tokens
at once for perplexity. No check needs another exercise's function.

Then the program they add up to, ``TrainingLoop`` (built by the learner): its
steps are compared with the same training written differently (one forward pass
over all micro-batches, torch's AdamW and clipping), it must bring a small GPT
within 0.05 nats of the best possible loss on a Markov chain in 500 steps, and
stopping, saving and resuming must give the same losses as never stopping.

Last, an experiment and a derivation:

* ``initial_loss``, an experiment: the loss of an untrained GPT as a function of
  its initial weights' size, compared with fresh models built here and with the
  ln(vocab_size) that small weights must give;
* ``adamw_after_steps``, a derivation: where AdamW takes a parameter whose
  gradient never changes, in closed form, compared with ``torch.optim.AdamW``
  (switched off for the learner's code) and with the fixed point of the update.

And the statistics of sections 14 and 15: ``bigram_table`` (add-k smoothed, checked
against a table counted one pair at a time with a Counter) and ``bits_per_byte``
(checked on hand cases and against ``F.cross_entropy(reduction="sum")``).
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any, Mapping

import torch
import torch._dynamo  # noqa: F401  (imported before any optimizer is made inside a timed check)
import torch.nn.functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    beside_the_learner,
    call,
    call_method,
    expect,
    expect_close,
    expect_raises_value_error,
    expect_shape,
    forbid,
    get_function,
    run_learner,
    seeded_generator,
    seeded_randn,
)
from llmcourse.pretraining import ngram as _ngram

chapter = Chapter("08", "Pretraining")

Namespace = Mapping[str, Any]


# --------------------------------------------------------------------------- make_windows


def _windows(ns: Namespace, ids: torch.Tensor, T: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    got = call(ns, "make_windows", ids.clone(), T)
    expect(isinstance(got, (tuple, list)) and len(got) == 2, f"{what} should return a pair (inputs, targets).")
    return got[0], got[1]


@chapter.check("make_windows", points=2, hint="Window i starts at i * context_length: inputs = ids[s : s + T], "
               "targets = ids[s + 1 : s + T + 1]. There are (len(ids) - 1) // T windows; leftover tokens at the "
               "end are dropped.")
def windows_match_unfold(ns: Namespace) -> None:
    for n, T in [(103, 10), (100, 10), (33, 4), (9, 8)]:
        ids = torch.randint(0, 50, (n,), generator=seeded_generator(n))
        reference = ids.unfold(0, T + 1, T)  # every (T + 1)-token slice, side by side
        x, y = _windows(ns, ids, T, f"make_windows(ids of {n} tokens, {T})")
        expect_close(expect_shape(x, tuple(reference[:, :-1].shape), f"inputs of make_windows(ids of {n}, {T})"),
                     reference[:, :-1], f"inputs of make_windows(ids of {n} tokens, {T})")
        expect_close(y, reference[:, 1:], f"targets of make_windows(ids of {n} tokens, {T})")


@chapter.check("make_windows", points=1, hint="Each target row is its input row moved one token to the left, plus "
               "the token after the window: the model at position t must predict token t + 1.")
def windows_by_hand(ns: Namespace) -> None:
    x, y = _windows(ns, torch.arange(7), 3, "make_windows(arange(7), 3)")
    expect(isinstance(x, torch.Tensor) and x.tolist() == [[0, 1, 2], [3, 4, 5]],
           f"make_windows(arange(7), 3) gave inputs {x.tolist() if isinstance(x, torch.Tensor) else x!r}, "
           "expected [[0, 1, 2], [3, 4, 5]].")
    expect(isinstance(y, torch.Tensor) and y.tolist() == [[1, 2, 3], [4, 5, 6]],
           f"make_windows(arange(7), 3) gave targets {y.tolist() if isinstance(y, torch.Tensor) else y!r}, "
           "expected [[1, 2, 3], [4, 5, 6]].")


@chapter.check("make_windows", points=1, hint="Raise a ValueError when context_length < 1, and when there are "
               "fewer than context_length + 1 tokens (not even one window with its targets).")
def windows_reject_bad_input(ns: Namespace) -> None:
    expect_raises_value_error(ns, "make_windows", torch.arange(10), 0)
    expect_raises_value_error(ns, "make_windows", torch.arange(10), 10)
    expect_raises_value_error(ns, "make_windows", torch.arange(3), 8)


# --------------------------------------------------------------------------- next_token_loss


def _reference_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@chapter.check("next_token_loss", points=2, hint="The logits at position t predict the token at t + 1: compare "
               "logits[:, :-1] with ids[:, 1:], flatten batch and positions together, and take the mean "
               "cross-entropy over all B * (T - 1) predictions.")
def loss_matches_cross_entropy(ns: Namespace) -> None:
    for (B, T, V), seed in [((2, 9, 13), 1), ((4, 5, 30), 2), ((1, 2, 7), 3)]:
        logits = seeded_randn(B, T, V, seed=seed) * 2
        ids = torch.randint(0, V, (B, T), generator=seeded_generator(seed + 10))
        got = as_number(call(ns, "next_token_loss", logits.clone(), ids.clone()),
                        f"next_token_loss(logits {(B, T, V)}, ids {(B, T)})")
        want = float(_reference_loss(logits, ids))
        expect(math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5),
               f"next_token_loss(logits {(B, T, V)}, ids {(B, T)}) returned {got:.6g}, expected {want:.6g}.")


@chapter.check("next_token_loss", points=1, hint="A model that always puts its probability on the NEXT token must "
               "get a loss near 0, and uniform logits over V tokens a loss of log V.")
def loss_of_perfect_and_uniform_models(ns: Namespace) -> None:
    V = 11
    ids = torch.randint(0, V, (3, 8), generator=seeded_generator(4))
    logits = torch.zeros(3, 8, V)
    logits[:, :-1].scatter_(-1, ids[:, 1:, None], 30.0)  # position t is sure about token t + 1
    logits[:, -1, 0] = 30.0  # the last position has no target; its guess must not count
    got = as_number(call(ns, "next_token_loss", logits, ids.clone()), "next_token_loss for a perfect model")
    expect(abs(got) < 1e-4, f"a model that predicts every next token with certainty should have a loss near 0, "
           f"but next_token_loss returned {got:.4g}. Are the logits compared with the ids shifted by one?")
    got = as_number(call(ns, "next_token_loss", torch.zeros(3, 8, V), ids.clone()), "next_token_loss(zeros)")
    expect(math.isclose(got, math.log(V), rel_tol=1e-5),
           f"uniform logits over {V} tokens should give a loss of log {V} = {math.log(V):.5f}, got {got:.5g}.")


@chapter.check("next_token_loss", points=1, hint="Logits of size 1000 overflow exp(). Use log_softmax or "
               "F.cross_entropy (or subtract each row's maximum) instead of log(softmax(...)).")
def loss_is_stable(ns: Namespace) -> None:
    logits = seeded_randn(2, 6, 9, seed=5) * 1000
    ids = torch.randint(0, 9, (2, 6), generator=seeded_generator(6))
    got = as_number(call(ns, "next_token_loss", logits.clone(), ids.clone()), "next_token_loss of large logits")
    want = float(_reference_loss(logits, ids))
    expect(math.isfinite(got) and math.isclose(got, want, rel_tol=1e-4),
           f"with logits near +-1000, next_token_loss returned {got:.6g}, expected {want:.6g}.")


# --------------------------------------------------------------------------- warmup_cosine_lr


def _torch_schedule(max_lr: float, warmup: int, total: int, min_lr: float) -> list[float]:
    """PyTorch's LinearLR (from ~0) then CosineAnnealingLR: the learning rate at steps 0 .. total."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schedule = SequentialLR(opt, [LinearLR(opt, start_factor=1e-12, end_factor=1.0, total_iters=warmup),
                                      CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr)],
                                milestones=[warmup])
        lrs = []
        for _ in range(total + 1):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
    return lrs


def _lr(ns: Namespace, *args: Any) -> float:
    return as_number(call(ns, "warmup_cosine_lr", *args), f"warmup_cosine_lr{args}")


@chapter.check("warmup_cosine_lr", points=1, hint="Warmup: max_lr * step / warmup_steps (0 at step 0, max_lr at "
               "step warmup_steps). Then min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2 with progress = "
               "(step - warmup_steps) / (total_steps - warmup_steps); min_lr from total_steps on.")
def lr_key_points(ns: Namespace) -> None:
    cases = [((0, 1.0, 10, 110, 0.0), 0.0), ((4, 1.0, 10, 110, 0.0), 0.4), ((10, 1.0, 10, 110, 0.1), 1.0),
             ((60, 1.0, 10, 110, 0.1), 0.55), ((110, 1.0, 10, 110, 0.1), 0.1), ((500, 1.0, 10, 110, 0.1), 0.1),
             ((35, 2.0, 10, 110, 0.0), 2.0 * 0.5 * (1 + math.cos(math.pi * 0.25)))]
    for args, want in cases:
        got = _lr(ns, *args)
        expect(math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12),
               f"warmup_cosine_lr{args} returned {got:.6g}, expected {want:.6g}.")


@chapter.check("warmup_cosine_lr", points=2, hint="Compare your curve with PyTorch's LinearLR followed by "
               "CosineAnnealingLR(T_max=total_steps - warmup_steps, eta_min=min_lr): the cosine starts at step "
               "warmup_steps, not at step 0, and ends exactly at total_steps.")
def lr_matches_torch(ns: Namespace) -> None:
    for max_lr, warmup, total, min_lr in [(6e-4, 20, 100, 6e-5), (1e-3, 5, 37, 0.0), (3e-3, 1, 12, 1e-4)]:
        for step, want in enumerate(_torch_schedule(max_lr, warmup, total, min_lr)):
            got = _lr(ns, step, max_lr, warmup, total, min_lr)
            expect(math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12),
                   f"warmup_cosine_lr({step}, {max_lr}, {warmup}, {total}, {min_lr}) returned {got:.6g}; PyTorch's "
                   f"LinearLR + CosineAnnealingLR give {want:.6g}.")
    for step in (101, 150, 400):
        got = _lr(ns, step, 6e-4, 20, 100, 6e-5)
        expect(math.isclose(got, 6e-5, rel_tol=1e-9), f"after total_steps the rate must stay at min_lr: "
               f"warmup_cosine_lr({step}, 6e-4, 20, 100, 6e-5) returned {got:.6g}, expected 6e-05.")


# --------------------------------------------------------------------------- clip_grad_norm

_NO_BUILTIN_CLIP = [(torch.nn.utils, "clip_grad_norm_", "torch.nn.utils.clip_grad_norm_"),
                    (torch.nn.utils, "clip_grad_norm", "torch.nn.utils.clip_grad_norm"),
                    (torch.nn.utils, "clip_grads_with_norm_", "torch.nn.utils.clip_grads_with_norm_"),
                    (torch.nn.utils, "get_total_norm", "torch.nn.utils.get_total_norm")]


def _params_with_grads(seed: int, scale: float) -> list[torch.nn.Parameter]:
    shapes = [(4, 3), (7,), (2, 2, 5)]
    params = []
    for i, shape in enumerate(shapes):
        p = torch.nn.Parameter(seeded_randn(*shape, seed=seed + i))
        p.grad = seeded_randn(*shape, seed=seed + 10 + i) * scale
        params.append(p)
    return params


def _clip(ns: Namespace, parameters: Any, max_norm: float, what: str) -> float:
    with forbid("clip_grad_norm", _NO_BUILTIN_CLIP):
        return as_number(call(ns, "clip_grad_norm", parameters, max_norm), what)


def _compare_grads(params: list, reference: list, what: str) -> None:
    for i, (p, r) in enumerate(zip(params, reference)):
        expect_close(p.grad, r.grad, f"{what}: the gradient of parameter {i}")


@chapter.check("clip_grad_norm", points=2, hint="The norm is global: the square root of the sum of the squares of "
               "ALL gradient entries of ALL parameters. If it exceeds max_norm, multiply every gradient by "
               "max_norm / total_norm (in place, p.grad.mul_(...)). Return the norm measured before clipping.")
def clip_matches_torch(ns: Namespace) -> None:
    for seed, scale, max_norm in [(1, 3.0, 1.0), (2, 0.7, 0.5)]:
        params, reference = _params_with_grads(seed, scale), _params_with_grads(seed, scale)
        want = float(torch.nn.utils.clip_grad_norm_(reference, max_norm))
        got = _clip(ns, params, max_norm, f"clip_grad_norm(3 parameters, {max_norm})")
        expect(math.isclose(got, want, rel_tol=1e-5), f"clip_grad_norm returned {got:.6g}; the global gradient "
               f"norm before clipping is {want:.6g}.")
        _compare_grads(params, reference, f"after clip_grad_norm(..., {max_norm})")


@chapter.check("clip_grad_norm", points=1, hint="When the total norm is at most max_norm, leave the gradients "
               "alone. Skip parameters whose .grad is None (they had no gradient).")
def clip_leaves_small_gradients(ns: Namespace) -> None:
    params = _params_with_grads(3, 0.1)
    unused = torch.nn.Parameter(torch.ones(3))  # no gradient
    before = [p.grad.clone() for p in params]
    norm = float(torch.sqrt(sum((g ** 2).sum() for g in before)))
    got = _clip(ns, params + [unused], 100.0, "clip_grad_norm(small gradients, 100.0)")
    expect(math.isclose(got, norm, rel_tol=1e-5), f"clip_grad_norm returned {got:.6g}, expected the norm {norm:.6g}.")
    for i, (p, g) in enumerate(zip(params, before)):
        expect_close(p.grad, g, f"gradient {i} (its norm is below max_norm, so it must not change)")
    expect(unused.grad is None, "a parameter without a gradient should keep .grad = None.")


@chapter.check("clip_grad_norm", points=1, hint="model.parameters() is a generator: it can be read only once. "
               "Turn it into a list first (params = [p for p in parameters if p.grad is not None]).")
def clip_accepts_a_generator(ns: Namespace) -> None:
    torch.manual_seed(0)
    model, reference = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2)), None
    x = seeded_randn(8, 6, seed=7)
    (model(x) ** 2).sum().mul(10).backward()
    reference = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    for r, p in zip(reference, model.parameters()):
        r.grad = p.grad.clone()
    want = float(torch.nn.utils.clip_grad_norm_(reference, 1.0))
    func = get_function(ns, "clip_grad_norm")
    with forbid("clip_grad_norm", _NO_BUILTIN_CLIP):  # the generator is made beside the learner's code
        norm, grads = run_learner("`clip_grad_norm`", lambda: beside_the_learner(
            ns, _clip_a_generator, func, list(model.parameters()), 1.0))
    got = as_number(norm, "clip_grad_norm(model.parameters(), 1.0)")
    expect(math.isclose(got, want, rel_tol=1e-5), f"clip_grad_norm(model.parameters(), 1.0) returned {got:.6g}, "
           f"expected {want:.6g}.")
    for p, grad in zip(model.parameters(), grads):
        p.grad = grad
    _compare_grads(list(model.parameters()), reference, "after clip_grad_norm(model.parameters(), 1.0)")


def _clip_a_generator(func, params: list, max_norm: float) -> tuple:
    """``func`` given a generator of ``params`` (as model.parameters() is one); its result and the gradients after."""
    norm = func((p for p in params), max_norm)
    return norm, [p.grad for p in params]


# --------------------------------------------------------------------------- accumulate_gradients


def _accumulation_setup(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = seeded_randn(24, 5, seed=seed + 1)
    y = torch.randint(0, 3, (24,), generator=seeded_generator(seed + 2))
    big = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    big.load_state_dict(model.state_dict())
    big_loss = F.cross_entropy(big(x), y)
    big_loss.backward()
    return model, big, x, y, float(big_loss.detach())


def _micro_batches(x: torch.Tensor, y: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(x.chunk(k), y.chunk(k)))


@chapter.check("accumulate_gradients", points=2, hint="For each of the k micro-batches: loss = loss_fn(model(x), y) "
               "/ k, then loss.backward(). Gradients add up in .grad, so dividing by k makes their sum the "
               "gradient of the mean over the whole batch. Do not update the parameters.")
def accumulation_equals_one_big_batch(ns: Namespace) -> None:
    for k in (4, 3):
        model, big, x, y, _ = _accumulation_setup(k)
        before = [p.detach().clone() for p in model.parameters()]
        call(ns, "accumulate_gradients", model, F.cross_entropy, _micro_batches(x, y, k))
        for i, (p, q, b) in enumerate(zip(model.parameters(), big.parameters(), before)):
            expect(p.grad is not None, "after accumulate_gradients every parameter should have a .grad.")
            expect_close(p.grad, q.grad, f"the accumulated gradient of parameter {i} over {k} micro-batches "
                         "(vs one batch of all 24 examples)")
            expect(torch.equal(p.detach(), b), "accumulate_gradients must not change the parameters (the optimizer "
                   "step comes afterwards).")


@chapter.check("accumulate_gradients", points=1, hint="Return the mean of the k unscaled micro-batch losses as a "
               "float: with equal micro-batches it is the loss of the whole batch.")
def accumulation_returns_the_mean_loss(ns: Namespace) -> None:
    model, _, x, y, big_loss = _accumulation_setup(5)
    got = as_number(call(ns, "accumulate_gradients", model, F.cross_entropy, _micro_batches(x, y, 4)),
                    "accumulate_gradients")
    expect(math.isclose(got, big_loss, rel_tol=1e-5), f"accumulate_gradients returned {got:.6g}; the loss of the "
           f"whole batch is {big_loss:.6g}.")


@chapter.check("accumulate_gradients", points=1, hint="Start from zero: call model.zero_grad() (or set every .grad "
               "to None) before the first backward, or old gradients get added to the new ones.")
def accumulation_starts_from_zero(ns: Namespace) -> None:
    model, big, x, y, _ = _accumulation_setup(6)
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # left over from an earlier step
    call(ns, "accumulate_gradients", model, F.cross_entropy, _micro_batches(x, y, 2))
    for i, (p, q) in enumerate(zip(model.parameters(), big.parameters())):
        expect(p.grad is not None, "after accumulate_gradients every parameter should have a .grad.")
        expect_close(p.grad, q.grad, f"the gradient of parameter {i} when .grad held old values before the call")


# --------------------------------------------------------------------------- perplexity


def _perplexity(ns: Namespace, losses: Any, n_tokens: Any, what: str) -> float:
    return as_number(call(ns, "perplexity", losses, n_tokens), what)


@chapter.check("perplexity", points=1, hint="Perplexity is exp(mean loss per token), with the loss in nats: a "
               "model that is uniform over V tokens has loss log V and perplexity V.")
def perplexity_by_hand(ns: Namespace) -> None:
    got = _perplexity(ns, [math.log(50.0)] * 3, [10, 10, 10], "perplexity([log 50] * 3, [10, 10, 10])")
    expect(math.isclose(got, 50.0, rel_tol=1e-6), f"three batches with loss log 50 should give perplexity 50, got "
           f"{got:.6g}.")
    got = _perplexity(ns, [1.0, 2.0], [4, 4], "perplexity([1.0, 2.0], [4, 4])")
    expect(math.isclose(got, math.exp(1.5), rel_tol=1e-6), f"perplexity([1.0, 2.0], [4, 4]) returned {got:.6g}, "
           f"expected exp(1.5) = {math.exp(1.5):.6g}.")


@chapter.check("perplexity", points=2, hint="Batches hold different numbers of tokens: weight each batch's mean "
               "loss by its token count (total loss / total tokens), then take exp. Averaging the batch losses "
               "or the batch perplexities gives a different, wrong number.")
def perplexity_weights_batches_by_tokens(ns: Namespace) -> None:
    V, sizes = 20, [64, 64, 9]
    logits = seeded_randn(sum(sizes), V, seed=8) * 1.5
    targets = torch.randint(0, V, (sum(sizes),), generator=seeded_generator(9))
    want = math.exp(float(F.cross_entropy(logits, targets)))  # all tokens at once
    losses = [float(F.cross_entropy(lg, tg)) for lg, tg in zip(logits.split(sizes), targets.split(sizes))]
    for form, args in (("lists", (losses, sizes)), ("tensors", (torch.tensor(losses), torch.tensor(sizes)))):
        got = _perplexity(ns, *args, f"perplexity(batch losses, {sizes}) given {form}")
        expect(math.isclose(got, want, rel_tol=1e-5), f"perplexity of batches of {sizes} tokens (given as {form}) "
               f"returned {got:.6g}; the perplexity of all {sum(sizes)} tokens together is {want:.6g}.")


# --------------------------------------------------------------------------- TrainingLoop (build the program)

_LOOP = "TrainingLoop"
_BETAS = (0.9, 0.95)
chapter.time_budget(_LOOP, seconds=60)  # one check trains a small GPT for 500 steps


def _tiny_gpt(seed: int, vocab_size: int = 7, context_length: int = 6, d_model: int = 16):
    from llmcourse.models.gpt import GPT, GPTConfig

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, d_model=d_model, n_layers=1,
                             n_heads=2))


def _loop_batches(seed: int, k: int, batch: int = 3, vocab_size: int = 7, context_length: int = 6):
    generator = seeded_generator(seed)
    ids = torch.randint(0, vocab_size, (k, batch, context_length + 1), generator=generator)
    return [(row[:, :-1], row[:, 1:]) for row in ids]


def _model(ns: Namespace, seed: int):
    """:func:`_tiny_gpt`, built beside the learner's code (in their kernel when grading), so that their loop
    trains the very model the check then reads."""
    return beside_the_learner(ns, _tiny_gpt, seed)


def _optimizer_groups(loop, model) -> dict:
    """What the check needs to know about ``loop.optimizer``'s groups, found beside the learner's code."""
    optimizer = loop.optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [{"names": [names.get(id(p), "?") for p in group["params"]], "dims": [p.dim() for p in group["params"]],
               "betas": tuple(group.get("betas", ())), "weight_decay": group.get("weight_decay")}
              for group in optimizer.param_groups]
    seen = [id(p) for group in optimizer.param_groups for p in group["params"]]
    return {"is_adamw": isinstance(optimizer, torch.optim.AdamW), "type": type(optimizer).__name__, "groups": groups,
            "repeated": len(seen) != len(set(seen)), "all": set(seen) == {id(p) for p in model.parameters()}}


def _new_folder() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="llmcourse-loop-")


def _folder_files(folder: str) -> list[str]:
    from pathlib import Path

    return sorted(p.name for p in Path(folder).iterdir() if p.is_file())


def _remove_folder(folder: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _markov_gpt():
    from llmcourse.models.gpt import GPT, GPTConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=8, context_length=16, d_model=32, n_layers=1, n_heads=2))


def _make_loop(ns: Namespace, model, **settings):
    from llmcourse.pretraining.trainer import Trainer

    loop = call(ns, _LOOP, model, **settings)
    if isinstance(loop, Trainer):
        raise CheckFailed(f"`{_LOOP}` must be written here, not taken from llmcourse's Trainer.")
    for attribute in ("optimizer", "step_count"):
        if not hasattr(loop, attribute):
            raise CheckFailed(f"a `{_LOOP}` needs an attribute `{attribute}` (see the task)")
    return loop


def _method(loop, name: str, *args):
    return call_method(loop, _LOOP, name, *args)


def _train_steps(loop, steps) -> list[float]:
    return [as_number(_method(loop, "train_step", batches), "train_step(...)") for batches in steps]


_SETTINGS = dict(max_lr=0.01, warmup_steps=2, total_steps=5, min_lr=0.001, weight_decay=0.1, max_grad_norm=0.05)


@chapter.check(_LOOP, points=1, hint="Build torch.optim.AdamW with betas (0.9, 0.95) from two parameter groups: every "
               "parameter with 2 or more dimensions decays by weight_decay, the 1-D ones (biases, norm weights) "
               "have weight_decay 0. Each parameter belongs to exactly one group.")
def loop_parameter_groups(ns: Namespace) -> None:
    model = _model(ns, 1)
    loop = _make_loop(ns, model, **_SETTINGS)
    found = run_learner(f"`{_LOOP}.optimizer`", lambda: beside_the_learner(ns, _optimizer_groups, loop, model))
    expect(found["is_adamw"], f"`optimizer` should be a torch.optim.AdamW, got {found['type']}")
    expect(not found["repeated"], "a parameter appears in more than one group")
    expect(found["all"], "the optimizer should hold every parameter of the model, each once (a tied weight counts "
           "once)")
    for group in found["groups"]:
        expect(tuple(group["betas"]) == _BETAS, f"betas should be {_BETAS}, got {tuple(group['betas'])}")
        wants = {dim >= 2 for dim in group["dims"]}
        expect(len(wants) <= 1, "a group mixes matrices with 1-D parameters (biases, norm weights)")
        if wants == {True}:
            expect(group["weight_decay"] == 0.1, f"the matrices' group should have weight_decay 0.1 (the "
                   f"weight_decay given), got {group['weight_decay']}")
        elif wants == {False}:
            shown = ", ".join(sorted(group["names"])[:3])
            expect(group["weight_decay"] == 0.0, f"biases and norm weights ({shown}, ...) should not decay, but "
                   f"their group has weight_decay {group['weight_decay']}")


@chapter.check(_LOOP, points=1, hint="Before each optimizer step set every group's 'lr' to warmup_cosine_lr(step_count, "
               "max_lr, warmup_steps, total_steps, min_lr), then count the step: the first step uses step 0's rate.")
def loop_learning_rates(ns: Namespace) -> None:
    from llmcourse.pretraining.schedules import warmup_cosine_lr

    loop = _make_loop(ns, _tiny_gpt(2), **_SETTINGS)
    expect(loop.step_count == 0, f"a new loop's step_count should be 0, got {loop.step_count}")
    for step, batches in enumerate([_loop_batches(10 + s, 1) for s in range(7)]):
        _method(loop, "train_step", batches)
        want = warmup_cosine_lr(step, 0.01, 2, 5, 0.001)
        got = [group["lr"] for group in loop.optimizer.param_groups]
        expect(all(math.isclose(float(lr), want, rel_tol=1e-9, abs_tol=1e-12) for lr in got),
               f"step {step} (warmup 2, total 5) should use the rate {want:.6g}, but the groups' 'lr' after it is "
               f"{[round(float(lr), 6) for lr in got]}")
    expect(loop.step_count == 7, f"after 7 steps step_count should be 7, got {loop.step_count}")


def _reference_training(model, steps, max_lr, warmup_steps, total_steps, min_lr, weight_decay, max_grad_norm):
    """The same training, written differently: one forward pass over all micro-batches at once."""
    from llmcourse.pretraining.schedules import warmup_cosine_lr

    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                                   {"params": vectors, "weight_decay": 0.0}], lr=max_lr, betas=_BETAS)
    losses = []
    for step, batches in enumerate(steps):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr)
        x = torch.cat([x for x, _ in batches])
        y = torch.cat([y for _, y in batches])
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
    return losses


@chapter.check(_LOOP, points=2, hint="One train_step: zero the gradients, then for each micro-batch forward, "
               "cross-entropy over every position, divide by the number of micro-batches, backward; clip the "
               "norm of all gradients together; one optimizer step. Return the mean of the micro-batch losses.")
def loop_step_matches_the_reference(ns: Namespace) -> None:
    steps = [_loop_batches(20 + s, 3) for s in range(5)]
    model = _model(ns, 3)
    reference = _tiny_gpt(3)
    loop = _make_loop(ns, model, **_SETTINGS)
    got = _train_steps(loop, steps)
    want = _reference_training(reference, steps, **_SETTINGS)
    for step, (g, w) in enumerate(zip(got, want)):
        expect(math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-5), f"step {step} returned the loss {g:.6f}; the mean "
               f"loss of its 3 micro-batches is {w:.6f}")
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        expect_close(p.detach(), q.detach(), f"after 5 steps (3 micro-batches each, max_grad_norm 0.05), `{name}`",
                     atol=1e-5, rtol=1e-4)


@chapter.check(_LOOP, points=1, hint="If the loss stays high, look at the learning rate each step uses and at the "
               "gradient: is it zeroed before each step, and clipped as a whole (not per parameter)?")
def loop_learns_the_markov_chain(ns: Namespace) -> None:
    from llmcourse.pretraining.synthetic import MarkovSource

    source, T, steps = MarkovSource(vocab_size=8, order=2, seed=0), 16, 500
    train, val = source.sample(20_000, seed=1), source.sample(4_000, seed=2)
    model = beside_the_learner(ns, _markov_gpt)
    loop = _make_loop(ns, model, max_lr=0.01, warmup_steps=20, total_steps=steps, min_lr=0.0, weight_decay=0.1,
                      max_grad_norm=1.0)
    generator = seeded_generator(0)

    def batch():
        starts = torch.randint(0, len(train) - T - 1, (16,), generator=generator)
        rows = torch.stack([train[s:s + T + 1] for s in starts])
        return rows[:, :-1], rows[:, 1:]

    for _ in range(steps):
        _method(loop, "train_step", [batch(), batch()])
    windows = val[:len(val) // (T + 1) * (T + 1)].view(-1, T + 1)
    with torch.no_grad():
        logits = model(windows[:, :-1])
        loss = float(F.cross_entropy(logits.reshape(-1, 8), windows[:, 1:].reshape(-1)))
    best = source.optimal_loss(T)
    expect(loss < best + 0.05, f"after {steps} steps the validation loss is {loss:.3f} nats; the best possible loss "
           f"at context {T} is {best:.3f} and a correct loop gets within 0.05 of it (from log 8 = 2.079 at the start)")


@chapter.check(_LOOP, points=1, hint="save(path) must write everything the next step depends on: the model's and the "
               "optimizer's state_dict and step_count (torch.save to a temporary file, then os.replace). load(path) "
               "restores all three.")
def loop_resumes_exactly(ns: Namespace) -> None:
    from pathlib import Path

    steps = [_loop_batches(40 + s, 2) for s in range(6)]
    straight = _make_loop(ns, _model(ns, 4), **_SETTINGS)
    want = _train_steps(straight, steps)
    first_model = _model(ns, 4)
    first = _make_loop(ns, first_model, **_SETTINGS)
    got = _train_steps(first, steps[:3])
    folder = beside_the_learner(ns, _new_folder)  # a folder the learner's code can write: theirs
    try:
        path = Path(folder) / "loop.pt"
        _method(first, "save", path)
        files = beside_the_learner(ns, _folder_files, folder)
        expect(path.name in files, f"save({path.name!r}) wrote no file at that path")
        leftovers = [name for name in files if name != path.name]
        expect(not leftovers, f"save left other files behind: {leftovers}")
        resumed_model = _model(ns, 5)  # different weights: load must bring back the saved ones
        resumed = _make_loop(ns, resumed_model, **_SETTINGS)
        _method(resumed, "load", path)
    finally:
        beside_the_learner(ns, _remove_folder, folder)
    expect(resumed.step_count == 3, f"after load, step_count should be 3 (the saved run's), got {resumed.step_count}")
    got += _train_steps(resumed, steps[3:])
    for step, (g, w) in enumerate(zip(got, want)):
        expect(math.isclose(g, w, rel_tol=1e-5, abs_tol=1e-6), f"stopped after 3 steps and resumed, step {step} "
               f"gives the loss {g:.6f}; a run that never stopped gives {w:.6f}")
    for (name, p), q in zip(resumed_model.named_parameters(), straight.model.parameters()):
        expect_close(p.detach(), q.detach(), f"after resuming and 3 more steps, `{name}`", atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- initial_loss (an experiment)

def _initial_loss_estimate(vocab_size: int, init_std: float, seeds: tuple[int, ...], n_layers: int = 2,
                           d_model: int = 64) -> float:
    """The mean next-token loss of freshly drawn GPTs on random tokens, averaged over ``seeds``."""
    from torch import nn

    from llmcourse.models.gpt import GPT, GPTConfig

    losses = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = GPT(GPTConfig(vocab_size=vocab_size, context_length=64, d_model=d_model, n_layers=n_layers, n_heads=4))
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        ids = torch.randint(0, vocab_size, (16, 65), generator=seeded_generator(seed))
        with torch.no_grad():
            logits = model(ids[:, :-1])
        losses.append(float(F.cross_entropy(logits.reshape(-1, vocab_size), ids[:, 1:].reshape(-1))))
    return sum(losses) / len(losses)


def _learner_initial_loss(ns: Namespace, vocab_size: int, init_std: float) -> float:
    what = f"initial_loss({vocab_size}, init_std={init_std})"
    value = as_number(call(ns, "initial_loss", vocab_size, init_std), what)
    expect(math.isfinite(value) and value > 0, f"{what} is {value}; a cross-entropy is a positive finite number.")
    return value


@chapter.check("initial_loss", points=1, hint="Build the GPT, then re-draw the weight of every nn.Linear and "
               "nn.Embedding with nn.init.normal_(weight, std=init_std) and zero their biases. The loss is "
               "F.cross_entropy (natural log, mean over all predicted tokens) of the logits for the first 64 tokens "
               "against the next 64.")
def initial_loss_matches_a_fresh_estimate(ns: Namespace) -> None:
    for vocab_size, init_std, tolerance in [(65, 0.02, 0.05), (1000, 0.02, 0.05), (65, 0.2, 0.1), (1000, 0.2, 0.1)]:
        expected = _initial_loss_estimate(vocab_size, init_std, seeds=(180, 181, 182))
        got = _learner_initial_loss(ns, vocab_size, init_std)
        allowed = tolerance if init_std < 0.1 else tolerance * expected
        expect(abs(got - expected) < allowed, f"initial_loss({vocab_size}, init_std={init_std}) is {got:.3f} nats, "
               f"but fresh models give {expected:.3f} on average.")


@chapter.check("initial_loss", points=1, hint="With small weights every logit is close to 0, so the model predicts "
               "every one of the vocab_size tokens with probability about 1/vocab_size: the loss is about "
               "ln(vocab_size) nats, whatever the targets are.")
def initial_loss_small_weights_give_log_vocab(ns: Namespace) -> None:
    for vocab_size in (65, 1000, 4000):
        for init_std in (0.002, 0.02):
            got = _learner_initial_loss(ns, vocab_size, init_std)
            expect(abs(got - math.log(vocab_size)) < 0.05, f"initial_loss({vocab_size}, init_std={init_std}) is "
                   f"{got:.3f}; small initial weights should give about ln({vocab_size}) = "
                   f"{math.log(vocab_size):.3f} nats.")


@chapter.check("initial_loss", points=1, hint="Large initial weights make large logits: the untrained model is "
               "confidently wrong, and its loss is many nats above ln(vocab_size). Make sure init_std really "
               "replaces the GPT's own initialisation.")
def initial_loss_large_weights_are_confidently_wrong(ns: Namespace) -> None:
    values = [_learner_initial_loss(ns, 65, std) for std in (0.02, 0.2, 1.0)]
    expect(values[0] < values[1] < values[2], "the initial loss should grow with init_std (0.02, 0.2, 1.0); got "
           f"{[round(v, 3) for v in values]}.")
    expect(values[2] > math.log(65) + 5, f"with init_std=1.0 the loss should be far above ln(65) = {math.log(65):.2f} "
           f"(more than 5 nats above), got {values[2]:.3f}.")


# --------------------------------------------------------------------------- adamw_after_steps (a derivation)

_ADAM = [(torch.optim, "AdamW", "torch.optim.AdamW"), (torch.optim, "Adam", "torch.optim.Adam")]


def _torch_adamw(param: torch.Tensor, grad: torch.Tensor, steps: int, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.Tensor:
    """``steps`` steps of torch.optim.AdamW that all see the gradient ``grad``."""
    p = torch.nn.Parameter(param.clone())
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    for _ in range(steps):
        p.grad = grad.clone()
        opt.step()
    return p.detach()


def _learner_adamw(ns: Namespace, param, grad, steps: int, lr: float, weight_decay: float, what: str,
                   **kwargs: Any) -> torch.Tensor:
    with forbid("adamw_after_steps", _ADAM):
        got = call(ns, "adamw_after_steps", param.clone(), grad.clone(), steps, lr, weight_decay, **kwargs)
    return expect_shape(got, tuple(param.shape), what)


_GRADS = torch.tensor([3e3, -2.0, 0.5, -1e-3, 1e-9, 0.0])  # huge, ordinary, tiny, below eps, zero


@chapter.check("adamw_after_steps", points=1, hint="After one step m = (1 - beta1) g and v = (1 - beta2) g^2, and "
               "the bias corrections divide those factors out again: the update is lr * g / (|g| + eps), about lr * "
               "sign(g) whatever the gradient's size. AdamW first multiplies the parameter by (1 - lr * weight_decay).")
def adamw_first_step(ns: Namespace) -> None:
    param = seeded_randn(6, seed=190)
    for weight_decay in (0.0, 0.1):
        expected = _torch_adamw(param, _GRADS, 1, 1e-2, weight_decay)
        got = _learner_adamw(ns, param, _GRADS, 1, 1e-2, weight_decay, f"adamw_after_steps(steps=1, "
                             f"weight_decay={weight_decay})")
        expect_close(got, expected, f"the parameter after one AdamW step (weight_decay={weight_decay}, gradients "
                     f"{_GRADS.tolist()})", atol=1e-6, rtol=1e-5)


@chapter.check("adamw_after_steps", points=1, hint="With the same gradient every step, the bias-corrected moments are "
               "g and g^2 at every step t, so each step is p <- (1 - lr * wd) * p - lr * u with the same "
               "u = g / (|g| + eps). Unroll it: a geometric series in a = 1 - lr * wd.")
def adamw_many_steps(ns: Namespace) -> None:
    param = seeded_randn(6, seed=191) * 3
    for steps, weight_decay, betas in [(25, 0.1, (0.9, 0.95)), (200, 0.5, (0.8, 0.99)), (60, 0.0, (0.9, 0.999))]:
        expected = _torch_adamw(param, _GRADS, steps, 1e-2, weight_decay, betas=betas)
        got = _learner_adamw(ns, param, _GRADS, steps, 1e-2, weight_decay, f"adamw_after_steps(steps={steps})",
                             betas=betas)
        expect_close(got, expected, f"the parameter after {steps} AdamW steps (weight_decay={weight_decay}, betas="
                     f"{betas})", atol=1e-5, rtol=1e-4)


@chapter.check("adamw_after_steps", points=1, hint="A loop cannot run a billion steps: use the closed form, "
               "a**steps * p + (1 - a**steps) * p_star, where p_star = -u / weight_decay is where the decay and the "
               "update cancel (and p - steps * lr * u when weight_decay is 0). Compute in the parameter's dtype.")
def adamw_closed_form_for_a_billion_steps(ns: Namespace) -> None:
    param, grads = seeded_randn(6, seed=192, dtype=torch.float64), _GRADS.double()
    u = grads / (grads.abs() + 1e-8)
    got = _learner_adamw(ns, param, grads, 10**9, 1e-3, 0.1, "adamw_after_steps(steps=10**9, weight_decay=0.1)")
    expect(got.dtype == torch.float64, f"float64 inputs should give a float64 parameter, got {got.dtype}.")
    expect_close(got, -u / 0.1, "the parameter after 10**9 steps with weight_decay=0.1 (where the decay and the "
                 "update balance)", atol=1e-9, rtol=1e-9)
    got = _learner_adamw(ns, param, grads, 10**6, 1e-3, 0.0, "adamw_after_steps(steps=10**6, weight_decay=0)")
    expect_close(got, param - 10**6 * 1e-3 * u, "the parameter after 10**6 steps without weight decay",
                 atol=1e-9, rtol=1e-9)


# --------------------------------------------------------------------------- bigram_table (n-grams)

_NGRAM = [(_ngram, "NGramModel", "llmcourse.pretraining.ngram.NGramModel")]


def _counter_table(ids: list[int], vocab_size: int, k: float) -> torch.Tensor:
    """The add-k bigram table counted one pair at a time with a Counter: the reference."""
    pairs, firsts = Counter(zip(ids[:-1], ids[1:])), Counter(ids[:-1])
    return torch.tensor([[(pairs[(a, b)] + k) / (firsts[a] + k * vocab_size) for b in range(vocab_size)]
                         for a in range(vocab_size)], dtype=torch.float64)


def _learner_table(ns: Namespace, ids: torch.Tensor, vocab_size: int, k: float, what: str) -> torch.Tensor:
    with forbid("bigram_table", _NGRAM):
        got = call(ns, "bigram_table", ids.clone(), vocab_size, k)
    return expect_shape(got, (vocab_size, vocab_size), what)


@chapter.check("bigram_table", points=1, hint="Row a is P(next | a): (N(a, b) + k) / (N(a) + k * vocab_size), where "
               "N(a, b) counts the pairs (ids[t], ids[t+1]) and N(a) counts how often a is FOLLOWED by a token "
               "(the last token of the text starts no pair). A row that never occurs is uniform.")
def bigram_table_by_hand(ns: Namespace) -> None:
    ids = [0, 1, 0, 2, 0, 1]
    expected = _counter_table(ids, 3, 1.0)      # row 0: (1, 3, 2) / 6; rows 1 and 2: (2, 1, 1) / 4
    got = _learner_table(ns, torch.tensor(ids), 3, 1.0, "bigram_table([0, 1, 0, 2, 0, 1], 3, k=1)")
    expect_close(got, expected, "the add-1 bigram table of [0, 1, 0, 2, 0, 1] (row = previous token)",
                 atol=1e-12, rtol=1e-10)


@chapter.check("bigram_table", points=1, hint="Count with the whole tensor at once (e.g. index_put_ with "
               "accumulate=True, or torch.bincount of a * vocab_size + b), then add k and divide each row by its sum. "
               "Return float64: the rows must sum to 1.")
def bigram_table_matches_a_counter(ns: Namespace) -> None:
    generator = seeded_generator(201)
    for vocab_size, k, n in [(50, 0.01, 3000), (7, 0.5, 40), (20, 2.0, 5)]:
        ids = torch.randint(0, vocab_size, (n,), generator=generator)
        expected = _counter_table(ids.tolist(), vocab_size, k)
        got = _learner_table(ns, ids, vocab_size, k, f"bigram_table(ids, {vocab_size}, k={k})")
        expect(got.dtype == torch.float64, f"bigram_table should return float64 probabilities, got {got.dtype}.")
        expect_close(got, expected, f"the add-{k} bigram table of {n} random ids over {vocab_size} tokens, against "
                     f"counting one pair at a time", atol=1e-12, rtol=1e-10)
        expect_close(got.sum(1), torch.ones(vocab_size, dtype=torch.float64), "the sum of every row", atol=1e-12,
                     rtol=0)


@chapter.check("bigram_table", points=1, hint="k must be positive (k = 0 divides by zero for a token never seen "
               "first), and every id must lie in 0 .. vocab_size - 1: raise a ValueError otherwise.")
def bigram_table_rejects_bad_input(ns: Namespace) -> None:
    ids = torch.tensor([0, 1, 2, 1])
    expect_raises_value_error(ns, "bigram_table", ids.clone(), 3, 0.0)
    expect_raises_value_error(ns, "bigram_table", ids.clone(), 3, -1.0)
    expect_raises_value_error(ns, "bigram_table", ids.clone(), 2, 1.0)
    expect_raises_value_error(ns, "bigram_table", torch.tensor([0, -1, 1]), 3, 1.0)


# --------------------------------------------------------------------------- bits_per_byte


def _learner_bpb(ns: Namespace, mean_loss: float, n_tokens: int, n_bytes: int) -> float:
    return as_number(call(ns, "bits_per_byte", mean_loss, n_tokens, n_bytes),
                     f"bits_per_byte({mean_loss:g}, {n_tokens}, {n_bytes})")


@chapter.check("bits_per_byte", points=1, hint="A mean loss in nats per token times the number of tokens is the "
               "text's total loss in nats; divide by ln 2 for bits and by the number of bytes for bits per byte.")
def bits_per_byte_by_hand(ns: Namespace) -> None:
    for mean_loss, n_tokens, n_bytes, expected in [(math.log(2), 100, 100, 1.0), (math.log(2), 100, 400, 0.25),
                                                   (math.log(256), 10, 10, 8.0), (5.875, 1000, 4120, None)]:
        if expected is None:
            expected = 5.875 * 1000 / (4120 * math.log(2))
        got = _learner_bpb(ns, mean_loss, n_tokens, n_bytes)
        expect(abs(got - expected) < 1e-9 * max(1.0, expected), f"bits_per_byte(mean_loss={mean_loss:.4f}, "
               f"n_tokens={n_tokens}, n_bytes={n_bytes}) returned {got:.6f}, expected {expected:.6f}.")


@chapter.check("bits_per_byte", points=1, hint="Check it on a real loss: F.cross_entropy(..., reduction='sum') is "
               "the total in nats. Two tokenizers with different numbers of tokens for one text must get the same "
               "bits per byte if they assign the text the same total probability. Refuse n_tokens or n_bytes below 1 "
               "with a ValueError.")
def bits_per_byte_matches_a_summed_loss(ns: Namespace) -> None:
    generator = seeded_generator(202)
    for n_tokens, n_bytes in [(37, 150), (64, 64), (5, 23)]:
        logits = torch.randn(n_tokens, 30, generator=generator, dtype=torch.float64) * 2
        targets = torch.randint(0, 30, (n_tokens,), generator=generator)
        total = F.cross_entropy(logits, targets, reduction="sum").item()
        expected = total / (n_bytes * math.log(2))
        got = _learner_bpb(ns, total / n_tokens, n_tokens, n_bytes)
        expect(abs(got - expected) < 1e-9 * max(1.0, expected), f"for {n_tokens} tokens of a {n_bytes}-byte text "
               f"with a summed loss of {total:.4f} nats, bits_per_byte returned {got:.6f}, expected {expected:.6f}.")
    expect_raises_value_error(ns, "bits_per_byte", 2.0, 10, 0)
    expect_raises_value_error(ns, "bits_per_byte", 2.0, 0, 10)


__all__ = ["chapter"]

