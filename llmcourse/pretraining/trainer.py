"""Pretraining a GPT: the training loop, on top of accelerate (chapter 08).

Read top to bottom:

1. :class:`TrainConfig`: every number of a run in one dataclass (model shape,
   batch, schedule, evaluation, checkpoints, precision);
2. :func:`configure_optimizer`: AdamW with two parameter groups. Weight decay
   pulls *matrices* (every Linear weight and the token and position embedding
   tables: the parameters with 2 or more dimensions) towards zero; biases and
   LayerNorm gains (1-D parameters) are left alone, because shrinking a gain or
   an offset does not make the model simpler, it only fights the normalisation;
3. :func:`evaluate`: mean cross-entropy (nats per token) and perplexity exp(loss);
4. :class:`StepBatchSampler`: the data order as a pure function of (seed,
   micro-step), so a resumed run reads exactly the batches it would have read,
   and every process of a data-parallel run reads its own share;
5. :class:`Trainer`: the loop. Each optimizer step runs ``grad_accum_steps``
   micro-batches inside ``accelerator.accumulate`` (gradients are summed, and
   synchronised across processes only on the last one), under
   ``accelerator.autocast`` (bf16/fp16 mixed precision), then clips the gradient
   norm, steps AdamW and the warmup + cosine schedule. It evaluates every
   ``eval_interval`` steps, saves a checkpoint every ``checkpoint_interval``
   steps and when you interrupt it (Ctrl-C / the stop button), and calls your
   callbacks (e.g. a live loss plot) after every step;
6. :func:`load_trained_model`: a GPT (and its tokenizer) from a checkpoint file.

The same code runs on one CPU, one GPU, or several processes started by
``torchrun`` / ``accelerate launch``: the ``Accelerator`` wraps the model for
data parallelism and puts tensors on the right device.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from llmcourse.progress import tqdm

from llmcourse.files import check_writable, remove_stale_temporaries
from llmcourse.pretraining.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.seed import seed_everything

PRECISIONS = ("no", "bf16", "fp16", "auto")
# Settings a resumed run may change freely: they do not change which batches are read or what a step does.
RESUME_FREE = ("progress", "checkpoint_path", "checkpoint_interval", "eval_interval", "eval_steps", "cpu",
               "vocab_size", "context_length", "d_model", "n_layers", "n_heads", "dropout", "bias")
DATA_SETTINGS = ("dataset", "dataset_size", "val_fraction")  # what chose the data (the command line's names)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite: training stopped before the step changed any weight."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int, allowed_prefix: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"TrainConfig.{name} must be {allowed_prefix}a whole number >= {low}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float | None = None, low_open: bool = False,
                 allowed_prefix: str = "") -> float:
    """``value`` as a float if it is a finite number in the range, else a ValueError naming the setting."""
    if high is not None:
        allowed = f"a number in [{low:g}, {high:g})"
    else:
        allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
    ok = _is_number(value) and math.isfinite(value) and (value > low if low_open else value >= low) and (
        high is None or value < high)
    if not ok:
        raise ValueError(f"TrainConfig.{name} must be {allowed_prefix}{allowed}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- 1. the configuration


@dataclass
class TrainConfig:
    """Everything that defines a training run. The defaults are nanoGPT's small CPU character model."""

    # model shape (a GPTConfig); vocab_size None = take it from the tokenizer or the data
    vocab_size: int | None = None
    context_length: int = 64
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.0
    bias: bool = True
    # batches: each optimizer step sees batch_size * grad_accum_steps * processes sequences
    batch_size: int = 12
    grad_accum_steps: int = 1
    max_steps: int = 2000
    # AdamW and the learning-rate schedule (linear warmup, cosine decay to min_lr)
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0  # None or 0: no clipping
    # evaluation (0 = only at the end) and checkpoints (0 = only at the end and on interrupt)
    eval_interval: int = 250
    eval_steps: int = 20
    checkpoint_path: str | None = None
    checkpoint_interval: int = 0
    # machinery
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" | "auto"
    seed: int = 1337
    progress: bool = True
    cpu: bool = False  # force the CPU even when a GPU is there

    def __post_init__(self) -> None:
        """Check every setting before any work starts: one message naming the setting, its value and what is
        allowed. Wrong types (a string for a number), non-finite numbers and out-of-range values are refused."""
        positive = ("context_length", "d_model", "n_layers", "n_heads", "batch_size", "grad_accum_steps",
                    "eval_steps", "max_steps")
        for name in positive:
            _check_int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "seed"):
            _check_int(name, getattr(self, name), 0)
        if self.vocab_size is not None:
            _check_int("vocab_size", self.vocab_size, 2, "None (take it from the tokenizer) or ")
        for name in ("bias", "progress", "cpu"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"TrainConfig.{name} must be true or false, got {value!r}")
        self.lr = _check_float("lr", self.lr, 0.0, low_open=True)
        self.min_lr = _check_float("min_lr", self.min_lr, 0.0)
        if self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        self.weight_decay = _check_float("weight_decay", self.weight_decay, 0.0)
        self.dropout = _check_float("dropout", self.dropout, 0.0, 1.0)
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} is longer than the whole run (max_steps="
                             f"{self.max_steps}); use fewer warmup steps")
        betas = self.betas
        if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list)) or len(betas) != 2 or not all(
                _is_number(b) and 0 <= b < 1 for b in betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), e.g. [0.9, 0.99]; got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.grad_clip is not None:
            self.grad_clip = _check_float("grad_clip", self.grad_clip, 0.0, allowed_prefix="null, 0 (off) or ")
        if not isinstance(self.mixed_precision, str) or self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.checkpoint_path is not None:
            if isinstance(self.checkpoint_path, Path):
                self.checkpoint_path = str(self.checkpoint_path)
            if not isinstance(self.checkpoint_path, str) or not self.checkpoint_path.strip():
                raise ValueError(f"TrainConfig.checkpoint_path must be null (no checkpoints) or the path of a "
                                 f"file, got {self.checkpoint_path!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")

    def gpt_config(self, vocab_size: int | None = None) -> GPTConfig:
        """The model's shape as a :class:`~llmcourse.models.gpt.GPTConfig`."""
        vocab_size = vocab_size or self.vocab_size
        if vocab_size is None:
            raise ValueError("the vocabulary size is unknown: set TrainConfig.vocab_size or pass a tokenizer")
        return GPTConfig(vocab_size=vocab_size, context_length=self.context_length, d_model=self.d_model,
                         n_layers=self.n_layers, n_heads=self.n_heads, dropout=self.dropout, bias=self.bias)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from a dict (e.g. a JSON file); unknown keys are an error, with the known ones listed."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig setting(s) {unknown}; the settings are {sorted(known)}")
        return cls(**values)

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step in one process (multiply by the number of processes)."""
        return self.batch_size * self.grad_accum_steps * self.context_length


# --------------------------------------------------------------------------- 2. the optimizer


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on the >= 2-D parameters (matrices, embedding tables) and none on 1-D ones.

    Tied parameters (GPT's output layer is its token embedding) are counted
    once. Group 0 decays, group 1 does not.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() skips tied duplicates
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


# --------------------------------------------------------------------------- 3. evaluation


class EvalResult(NamedTuple):
    """Mean cross-entropy in nats per token, its perplexity exp(loss), and how many tokens were scored."""

    loss: float
    perplexity: float
    tokens: int


def _loss_sum(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")


def _eval_sums(model: nn.Module, batches: Iterable, steps: int | None, autocast: Callable[[], Any] | None,
               device: torch.device) -> tuple[Tensor, int]:
    """(sum of token losses, number of tokens) over the batches, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    total, tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    try:
        with torch.no_grad():
            for i, (x, y) in enumerate(batches):
                if steps is not None and i >= steps:
                    break
                x, y = x.to(device), y.to(device)
                with (autocast() if autocast is not None else contextlib.nullcontext()):
                    total += _loss_sum(model, x, y)
                tokens += y.numel()
    finally:
        model.train(was_training)
    return total, tokens


def evaluate(model: nn.Module, batches: Iterable, steps: int | None = None,
             autocast: Callable[[], Any] | None = None) -> EvalResult:
    """Mean next-token loss of ``model`` over (x, y) batches (at most ``steps`` of them), in eval mode.

    Every token counts once, so the result equals ``F.cross_entropy`` over all
    the tokens together, whatever the batch sizes. ``autocast``: a context
    factory such as ``accelerator.autocast``.
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be None (all batches) or a whole number >= 1, got {steps!r}")
    total, tokens = _eval_sums(model, batches, steps, autocast, next(model.parameters()).device)
    if tokens == 0:
        raise ValueError("evaluate got no batches: the validation data is empty")
    loss = total.item() / tokens
    return EvalResult(loss, math.exp(min(loss, 700.0)), tokens)


# --------------------------------------------------------------------------- 4. the data order


class StepBatchSampler(Sampler[list[int]]):
    """Endless micro-batches of example indices whose order depends only on (seed, position).

    The stream of examples is epoch 0's shuffle of 0..n-1, then epoch 1's, and
    so on, each a ``randperm`` seeded from (seed, epoch). Micro-batch m of
    process ``rank`` (out of ``world_size``) takes the ``batch_size`` examples
    starting at position (m * world_size + rank) * batch_size of that stream,
    so the processes never overlap and ``start=m`` resumes exactly at micro-batch m.
    """

    def __init__(self, n_examples: int, batch_size: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world_size: int = 1):
        if n_examples < 1:
            raise ValueError("the training data has no complete window: give more tokens than the context "
                             "length")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self._perms: dict[int, Tensor] = {}

    def epoch_order(self, epoch: int) -> Tensor:
        """The shuffled example indices of one epoch."""
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            self._perms[epoch] = torch.randperm(self.n, generator=generator)
        return self._perms[epoch]

    def indices(self, micro_step: int) -> list[int]:
        """The example indices of micro-batch ``micro_step`` for this process."""
        first = (micro_step * self.world_size + self.rank) * self.batch_size
        out = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.n)
            out.append(int(self.epoch_order(epoch)[offset]))
        return out

    def __iter__(self):
        m = self.start
        while True:
            yield self.indices(m)
            m += 1


def as_windows(data: Dataset | Tensor, context_length: int, stride: int | None = None) -> Dataset:
    """Token ids (1-D tensor) become :class:`llmcourse.pretraining.data.TokenWindows`; a dataset of (x, y) passes through.

    For training the Trainer uses ``stride=1``: every position of the text starts
    a window (like nanoGPT's random offsets, but each used once per epoch).
    """
    if isinstance(data, (list, tuple)) and all(isinstance(i, int) for i in data[:100]):
        data = torch.tensor(data, dtype=torch.long)
    if isinstance(data, Tensor):
        if data.dim() != 1 or data.is_floating_point():
            raise ValueError(f"token ids must be a 1-D integer tensor, got dtype {data.dtype} and shape "
                             f"{tuple(data.shape)}")
        from llmcourse.pretraining.data import TokenWindows

        return TokenWindows(data, context_length, stride)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(f"data must be a 1-D tensor of token ids or a dataset of (x, y) pairs, got "
                        f"{type(data).__name__}")
    return data


def eval_indices(n_examples: int, n_batches: int, batch_size: int) -> list[list[int]]:
    """A fixed validation subset: ``n_batches`` batches of windows spread evenly over the data."""
    count = min(n_batches * batch_size, n_examples)
    spread = torch.linspace(0, n_examples - 1, count).round().long().unique().tolist()
    return [spread[i:i + batch_size] for i in range(0, len(spread), batch_size)]


# --------------------------------------------------------------------------- RNG states (for exact resume)


def _torch_rng() -> tuple[Tensor, list[Tensor]]:
    """PyTorch's CPU and CUDA generator states: the only generators a training step draws from (dropout)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def _set_torch_rng(state: tuple[Tensor, list[Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), Python and NumPy generator states, as tensors and plain values (for a checkpoint)."""
    torch_state, cuda = _torch_rng()
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch_state, "cuda": cuda,
            "python": (version, torch.tensor(mt, dtype=torch.int64), gauss),
            "numpy": (torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------- tokenizers in checkpoints


def describe_tokenizer(tokenizer: Any) -> dict[str, Any] | None:
    """A plain-data description of a tokenizer, to store in a checkpoint (None: token ids only)."""
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "itos") and hasattr(tokenizer, "unk"):  # CharTokenizer
        return {"kind": "char", "chars": [tokenizer.itos[i] for i in range(len(tokenizer.itos))],
                "unk": tokenizer.unk}
    if hasattr(tokenizer, "alphabet") and hasattr(tokenizer, "vocab_size"):  # a synthetic source's letters
        alphabet = tokenizer.alphabet() if callable(tokenizer.alphabet) else tokenizer.alphabet
        return {"kind": "char", "chars": list(alphabet)[: tokenizer.vocab_size], "unk": None}
    if hasattr(tokenizer, "to_dict") and hasattr(tokenizer, "merges"):  # RegexTokenizer (chapter 03)
        return {"kind": "regex-bpe", "tokenizer": tokenizer.to_dict()}
    raise TypeError(f"cannot store a {type(tokenizer).__name__} in a checkpoint; use a CharTokenizer, a "
                    f"RegexTokenizer or None")


def tokenizer_from_description(description: dict[str, Any] | None):
    """Rebuild the tokenizer :func:`describe_tokenizer` described (None stays None)."""
    if description is None:
        return None
    if description.get("kind") == "regex-bpe":
        from llmcourse.tokenizers.regex_bpe import RegexTokenizer

        try:
            return RegexTokenizer.from_dict(description.get("tokenizer"))
        except ValueError as exc:
            raise CheckpointError(f"the checkpoint's tokenizer is damaged: {exc}") from None
    if description.get("kind") != "char":
        raise CheckpointError(f"unknown tokenizer kind {description.get('kind')!r} in the checkpoint")
    from llmcourse.tokenizers.simple import CharTokenizer

    tokenizer = CharTokenizer(unk=description.get("unk"))
    tokenizer.stoi = {s: i for i, s in enumerate(description["chars"])}
    tokenizer.itos = dict(enumerate(description["chars"]))
    return tokenizer


# --------------------------------------------------------------------------- the accelerator


def resolve_precision(mixed_precision: str, cpu: bool = False) -> str:
    """"auto" becomes bf16 on a GPU that supports it, fp16 on an older GPU and "no" on the CPU."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {mixed_precision!r}")
    cuda = torch.cuda.is_available() and not cpu
    if mixed_precision == "auto":
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    if mixed_precision == "fp16" and not cuda:
        raise ValueError("mixed_precision='fp16' needs a CUDA GPU (float16 training uses loss scaling made for "
                         "GPUs); on the CPU use 'bf16' or 'no'")
    return mixed_precision


def make_accelerator(mixed_precision: str = "no", cpu: bool = False, grad_accum_steps: int = 1) -> Accelerator:
    """An ``Accelerator`` for this run.

    accelerate keeps one process-wide state; in a single process (a notebook)
    we reset it when the precision or device changes, so trying bf16 after fp32
    works without restarting the kernel. Under torchrun it is left alone.
    """
    precision = resolve_precision(mixed_precision, cpu)
    state = AcceleratorState._shared_state
    if state and PartialState().num_processes == 1:
        wrong_device = cpu and PartialState().device.type != "cpu"
        if wrong_device or state.get("_mixed_precision") != precision:
            AcceleratorState._reset_state(reset_partial_state=wrong_device)
    return Accelerator(mixed_precision=precision, cpu=cpu, gradient_accumulation_steps=grad_accum_steps,
                       step_scheduler_with_optimizer=False)


# --------------------------------------------------------------------------- 5. the trainer


@dataclass
class History:
    """What happened during training: one entry per optimizer step, and one per evaluation."""

    step: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> "History":
        return cls(**{k: list(v) for k, v in values.items()})

    def __len__(self) -> int:
        return len(self.step)


Callback = Callable[[History], None]


class Trainer:
    """Trains a GPT on token windows with AdamW, warmup + cosine learning rate, and accelerate.

    ``train_data`` / ``val_data``: 1-D tensors of token ids or datasets of (x, y)
    windows. ``model``: a GPT to train (default: a new one of the config's shape).
    ``tokenizer``: stored in checkpoints so the model can be used from the file
    alone. ``callbacks``: functions called with the :class:`History` after
    every step (raise ``KeyboardInterrupt`` in one to stop, like Ctrl-C); a
    callback with an ``on_end(history)`` method also hears when training stops.

    Use :meth:`fit` to train; it returns the history. The model being trained
    is ``trainer.model`` (``trainer.unwrapped_model`` without any wrapper).
    """

    def __init__(self, config: TrainConfig, train_data: Dataset | Tensor, val_data: Dataset | Tensor | None = None,
                 model: nn.Module | None = None, tokenizer: Any = None,
                 callbacks: Iterable[Callback] = ()):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        if config.checkpoint_path:  # refuse an unwritable path now, not after the last step
            check_writable(config.checkpoint_path, "TrainConfig.checkpoint_path")
        self.accelerator = make_accelerator(config.mixed_precision, config.cpu, config.grad_accum_steps)
        self.precision = resolve_precision(config.mixed_precision, config.cpu)
        self.tokenizer = tokenizer
        self.callbacks = list(callbacks)
        self.train_data = as_windows(train_data, config.context_length, stride=1)
        self.val_data = None if val_data is None else as_windows(val_data, config.context_length)
        seed_everything(config.seed)  # the same initial weights in every process
        if model is None:
            vocab_size = config.vocab_size or getattr(tokenizer, "vocab_size", None)
            if vocab_size is None and hasattr(self.train_data, "ids"):  # last resort: the largest id seen
                vocab_size = int(self.train_data.ids.max()) + 1
            model = GPT(config.gpt_config(vocab_size))
        self.model_config = asdict(model.config) if hasattr(model, "config") else {}
        ids = getattr(self.train_data, "ids", None)
        self.data_fingerprint = None if ids is None else hashlib.sha256(
            ids.detach().cpu().to(torch.int64).numpy().tobytes()).hexdigest()
        self.data_info: dict[str, Any] = {}  # how the data was chosen (dataset, dataset_size, ...), if known
        optimizer = configure_optimizer(model, config.lr, config.weight_decay, config.betas)
        self.scheduler = self._make_schedule(optimizer)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.step = 0
        self.history = History()
        self._batches = None
        self._rng_at_stop: dict[str, Any] | None = None  # the generators' state when fit was interrupted
        self.interrupted = False  # True when the last fit() was stopped by Ctrl-C or a callback

    def _make_schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        from llmcourse.pretraining.schedules import warmup_cosine_schedule

        cfg = self.config
        return warmup_cosine_schedule(optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps,
                                      min_lr=cfg.min_lr)

    # ---------------------------------------------------------------- pieces

    @property
    def unwrapped_model(self) -> nn.Module:
        """The model itself, without the data-parallel, mixed-precision or torch.compile wrappers."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _loader(self) -> Iterable:
        """Training batches from micro-step ``step * grad_accum_steps`` on: resuming reads the same data."""
        cfg, acc = self.config, self.accelerator
        sampler = StepBatchSampler(len(self.train_data), cfg.batch_size, seed=cfg.seed,
                                   start=self.step * cfg.grad_accum_steps, rank=acc.process_index,
                                   world_size=acc.num_processes)
        # a private generator: starting a DataLoader draws a seed, which must not move the global RNG (dropout)
        return iter(DataLoader(self.train_data, batch_sampler=sampler, pin_memory=acc.device.type == "cuda",
                               generator=torch.Generator()))

    def autocast(self) -> contextlib.AbstractContextManager:
        """This Trainer's mixed precision (accelerate keeps one precision per process; a later Trainer may differ)."""
        if self.precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.accelerator.device.type, dtype=dtype)

    def train_step(self) -> float:
        """One optimizer step (``grad_accum_steps`` micro-batches); returns the mean training loss."""
        cfg, acc = self.config, self.accelerator
        if acc.gradient_accumulation_steps != cfg.grad_accum_steps:
            # accelerate keeps this setting process-wide: a Trainer built later in the same process changes it
            acc.gradient_accumulation_steps = cfg.grad_accum_steps
        if self._batches is None:
            self._batches = self._loader()
        self.model.train()
        loss_sum = torch.zeros((), device=acc.device)
        for _ in range(cfg.grad_accum_steps):
            x, y = next(self._batches)
            x, y = x.to(acc.device, non_blocking=True), y.to(acc.device, non_blocking=True)
            with acc.accumulate(self.model):  # gradients sync across processes only on the last micro-batch
                with self.autocast():
                    logits = self.model(x)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                acc.backward(loss)  # divides by grad_accum_steps, scales the loss for fp16
                if acc.sync_gradients:
                    if cfg.grad_clip:
                        norm = acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    elif self.precision != "fp16":  # fp16's grad scaler skips steps with inf gradients itself
                        norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters()
                                                              if p.grad is not None])
                    else:
                        norm = None
                    self._stop_if_diverged(loss_sum + loss.detach(), norm)  # before the step changes a weight
                self.optimizer.step()  # only acts on the last micro-batch
                self.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        self.scheduler.step()
        self.step += 1
        mean_loss = loss_sum / cfg.grad_accum_steps
        if acc.num_processes > 1:
            mean_loss = acc.reduce(mean_loss, reduction="mean")
        return mean_loss.item()

    def _stop_if_diverged(self, loss_sum: Tensor, grad_norm: Tensor | None) -> None:
        """Raise :class:`TrainingDiverged` (on every process alike) when the loss or the gradient is not finite."""
        bad = torch.stack([(~torch.isfinite(loss_sum)).float(),
                           torch.zeros((), device=loss_sum.device) if grad_norm is None or self.precision == "fp16"
                           else (~torch.isfinite(grad_norm.to(loss_sum.device))).float()])
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bool(bad.any()):
            self.optimizer.optimizer.zero_grad(set_to_none=True)
            what = "the loss" if bool(bad[0]) else "the gradient"
            raise TrainingDiverged(f"training diverged at step {self.step + 1}: {what} is not finite (loss sum "
                                   f"{float(loss_sum):.4g}, gradient norm "
                                   f"{'?' if grad_norm is None else f'{float(grad_norm):.4g}'}) with lr="
                                   f"{self.config.lr:g}; the weights are those after step {self.step}. Try a "
                                   f"smaller lr or grad_clip")

    def evaluate(self) -> EvalResult:
        """Loss on a fixed validation subset (the same windows every time), shared out between processes."""
        if self.val_data is None:
            raise ValueError("this Trainer has no validation data: pass val_data=...")
        cfg, acc = self.config, self.accelerator
        batches = eval_indices(len(self.val_data), cfg.eval_steps, cfg.batch_size)
        mine = batches[acc.process_index::acc.num_processes]
        loader = DataLoader(self.val_data, batch_sampler=mine, generator=torch.Generator())
        total, n = _eval_sums(self.model, loader, None, self.autocast, acc.device)
        tokens = torch.tensor(float(n), dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            total, tokens = acc.reduce(total, "sum"), acc.reduce(tokens, "sum")
        loss = (total / tokens).item()
        return EvalResult(loss, math.exp(min(loss, 700.0)), int(tokens.item()))

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self, rng: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything needed to resume (and to use the model alone)."""
        scaler = self.accelerator.scaler
        return {"model": self.unwrapped_model.state_dict(), "model_config": self.model_config,
                "train_config": self.config.to_dict(), "tokenizer": describe_tokenizer(self.tokenizer),
                "optimizer": self.optimizer.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(), "step": self.step,
                "rng": rng or rng_state(), "history": self.history.to_dict(),
                "data": {"fingerprint": self.data_fingerprint, **self.data_info}}

    def save(self, path: str | Path | None = None, rng: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint (the main process writes; all processes wait for it)."""
        path = Path(path or self.config.checkpoint_path or "checkpoint.pt")
        if not all(bool(torch.isfinite(p).all()) for p in self.unwrapped_model.parameters()):
            raise TrainingDiverged(f"training diverged: the weights after step {self.step} are not finite, so "
                                   f"they were not saved to {path}")
        if self.accelerator.is_main_process:
            save_checkpoint(path, self.state_dict(rng))
        self.accelerator.wait_for_everyone()
        return path

    def resume_changes(self, state: dict[str, Any], allow_changes: Iterable[str] = ()) -> dict[str, tuple]:
        """How this run differs from the checkpoint's (setting -> (saved, now)); raises :class:`CheckpointError`
        for a difference not named in ``allow_changes``. Compared: the optimizer and schedule settings, the
        batches (batch_size, grad_accum_steps, seed), the precision, the tokenizer and a fingerprint of the
        training tokens. New training data is allowed when one of the data settings (``dataset``,
        ``dataset_size``, ``val_fraction``) is named in ``allow_changes`` and really differs; another tokenizer
        only when ``"tokenizer"`` itself is named (the model's ids would mean other text)."""
        allow = set(allow_changes)
        changes: dict[str, tuple] = {}
        saved_config = state.get("train_config") or {}
        mine = self.config.to_dict()
        for key, value in mine.items():
            if key in RESUME_FREE or key not in saved_config:
                continue
            before = tuple(saved_config[key]) if isinstance(saved_config[key], list) else saved_config[key]
            if before != value:
                changes[key] = (before, value)
        saved_data = state.get("data") or {}
        new_data = {k for k in DATA_SETTINGS if k in allow and k in saved_data
                    and saved_data[k] != self.data_info.get(k)}
        for key in DATA_SETTINGS:
            if key in new_data:
                changes[key] = (saved_data[key], self.data_info.get(key))
        if state.get("tokenizer") is not None and self.tokenizer is not None \
                and state["tokenizer"] != describe_tokenizer(self.tokenizer):
            changes["tokenizer"] = ("the checkpoint's", "another")
        if saved_data.get("fingerprint") and self.data_fingerprint and \
                saved_data["fingerprint"] != self.data_fingerprint:
            changes["training data"] = (saved_data["fingerprint"][:12], self.data_fingerprint[:12])
        refused = [k for k in changes if k not in allow and not (k == "training data" and new_data)]
        if refused:
            described = ", ".join(f"{k}: {changes[k][0]!r} in the checkpoint, {changes[k][1]!r} now" for k in refused)
            hints = []
            if "tokenizer" in refused:
                hints.append("keep the tokenizer (the model's ids would mean other text with another one)")
            if "training data" in refused:
                hints.append("use the same data, or name the data setting you change on purpose (dataset, "
                             "dataset_size, val_fraction)")
            if set(refused) - {"tokenizer", "training data"}:
                hints.append("use the checkpoint's settings to continue the same run, or name each change to make "
                             "it on purpose (`--set key=value` on the command line, allow_changes=[...] in Python)")
            raise CheckpointError(f"the checkpoint does not belong to this run: {described}. To resume, "
                                  f"{'; '.join(hints)}")
        return changes

    def load(self, path: str | Path, allow_changes: Iterable[str] = ()) -> None:
        """Restore model, optimizer, schedule, grad scaler, step, history and random generators from a checkpoint.

        The checkpoint must come from this run (see :meth:`resume_changes`); the settings named in
        ``allow_changes`` may differ, and each change is printed and takes effect from the next step.
        """
        state = load_checkpoint(path, map_location="cpu")
        if state["model_config"] != self.model_config:
            raise CheckpointError(f"{path} holds a model of shape {state['model_config']}, but this Trainer's "
                                  f"model is {self.model_config}: use the same settings to resume")
        changes = self.resume_changes(state, allow_changes)
        if changes:
            self.accelerator.print("resuming with changed settings: " + ", ".join(
                f"{k} {before!r} -> {now!r}" for k, (before, now) in changes.items()))
        self.unwrapped_model.load_state_dict(state["model"])
        self.optimizer.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if changes.keys() & {"lr", "min_lr", "warmup_steps", "max_steps", "betas", "weight_decay"}:
            self._apply_new_optimizer_settings()
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = History.from_dict(state["history"])
        set_rng_state(state["rng"])
        if self.accelerator.num_processes > 1 and self.accelerator.process_index > 0:
            torch.manual_seed(self.config.seed + 7919 * self.accelerator.process_index + self.step)
        self._batches = None

    def _apply_new_optimizer_settings(self) -> None:
        """After loading a checkpoint, put this config's lr, schedule, betas and weight decay into the groups
        (a loaded optimizer and schedule would otherwise keep the saved ones)."""
        cfg = self.config
        self.scheduler.base_lrs = [cfg.lr for _ in self.optimizer.param_groups]
        step = self.scheduler.last_epoch
        for i, (group, factor) in enumerate(zip(self.optimizer.param_groups, self.scheduler.lr_lambdas)):
            group["initial_lr"] = cfg.lr
            group["lr"] = cfg.lr * factor(step)
            group["betas"] = cfg.betas
            group["weight_decay"] = cfg.weight_decay if i == 0 else 0.0
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---------------------------------------------------------------- the loop

    def fit(self, resume: bool = False, allow_changes: Iterable[str] = ()) -> History:
        """Train until ``config.max_steps``; returns the history.

        ``resume=True`` first loads ``config.checkpoint_path`` if that file
        exists. Ctrl-C (or ``KeyboardInterrupt`` from a callback) stops cleanly:
        the state after the last completed step is saved (when a
        checkpoint_path is set) and kept in memory, so ``fit()`` again on this
        Trainer, or ``fit(resume=True)`` on a new one, continues exactly. A checkpoint from another run
        (other settings, tokenizer or data) is refused unless each change is named in ``allow_changes``;
        ``max_steps`` at or below the checkpoint's step is an error (there would be nothing to train).
        """
        cfg, acc = self.config, self.accelerator
        if resume:
            if cfg.checkpoint_path and acc.is_main_process:
                remove_stale_temporaries(cfg.checkpoint_path)  # left by a save that was killed half-way
            if cfg.checkpoint_path and Path(cfg.checkpoint_path).exists():
                saved_step = int(load_checkpoint(cfg.checkpoint_path)["step"])
                if cfg.max_steps <= saved_step:
                    raise ValueError(f"max_steps={cfg.max_steps} is not beyond the checkpoint's step {saved_step} "
                                     f"({cfg.checkpoint_path}): nothing would be trained; set max_steps above "
                                     f"{saved_step} to continue")
                self.load(cfg.checkpoint_path, allow_changes)
                acc.print(f"resumed from {cfg.checkpoint_path} at step {self.step}")
            else:
                acc.print(f"no checkpoint at {cfg.checkpoint_path}; starting from step {self.step}")
        elif self._rng_at_stop is not None:  # continuing in memory after an interrupt
            set_rng_state(self._rng_at_stop)
        self._rng_at_stop = None
        self.interrupted = False
        acc.step = 0  # accelerate's micro-batch counter: a fresh optimizer step starts here
        self.optimizer.optimizer.zero_grad(set_to_none=True)
        self._batches = self._loader()
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="training", unit="step", file=sys.stdout,
                   disable=not (cfg.progress and acc.is_local_main_process), dynamic_ncols=True)
        tokens_per_step = cfg.tokens_per_step * acc.num_processes
        boundary_step, boundary_rng = self.step, _torch_rng()
        try:
            while self.step < cfg.max_steps:
                boundary_step, boundary_rng = self.step, _torch_rng()
                lr = self.lr
                start = time.perf_counter()
                loss = self.train_step()
                elapsed = time.perf_counter() - start
                h = self.history
                h.step.append(self.step), h.lr.append(lr), h.train_loss.append(loss)
                h.tokens_per_s.append(tokens_per_step / max(elapsed, 1e-9))
                last = self.step == cfg.max_steps
                if self.val_data is not None and ((cfg.eval_interval and self.step % cfg.eval_interval == 0)
                                                  or last):
                    h.val_step.append(self.step), h.val_loss.append(self.evaluate().loss)
                if cfg.checkpoint_path and ((cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0)
                                            or last):
                    self.save()
                bar.update(1)
                postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "tok/s": f"{h.tokens_per_s[-1]:,.0f}"}
                if h.val_loss:
                    postfix["val"] = f"{h.val_loss[-1]:.4f}"
                bar.set_postfix(postfix, refresh=False)
                for callback in self.callbacks:
                    callback(h)
        except TrainingDiverged as exc:
            saved = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
            kept = (f"; the last good checkpoint {saved} is kept as it was" if saved is not None and saved.exists()
                    else "; no checkpoint was written")
            raise TrainingDiverged(f"{exc}{kept}") from None
        except KeyboardInterrupt:
            self.interrupted = True
            if self.step == boundary_step:  # stopped inside a step: forget its partial work
                _set_torch_rng(boundary_rng)
                self.optimizer.optimizer.zero_grad(set_to_none=True)
            rng = self._rng_at_stop = rng_state()
            self._batches = None
            where = ""
            if cfg.checkpoint_path:
                where = f"; checkpoint saved to {self.save(rng=rng)}"
            acc.print(f"\ninterrupted at step {self.step}{where}; call fit() again"
                      f"{' or pass resume=True' if cfg.checkpoint_path else ''} to continue")
        finally:
            bar.close()
        for callback in self.callbacks:
            if hasattr(callback, "on_end"):  # e.g. LiveLossPlot draws its final picture
                callback.on_end(self.history)
        return self.history


def train(config: TrainConfig, train_data: Dataset | Tensor, val_data: Dataset | Tensor | None = None,
          tokenizer: Any = None, callbacks: Iterable[Callback] = (), resume: bool = False) -> Trainer:
    """Build a :class:`Trainer`, run :meth:`Trainer.fit`, and return the trainer (``.model``, ``.history``)."""
    trainer = Trainer(config, train_data, val_data, tokenizer=tokenizer, callbacks=callbacks)
    trainer.fit(resume=resume)
    return trainer


# --------------------------------------------------------------------------- 6. using a checkpoint


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer or None, the whole checkpoint) from a checkpoint file."""
    state = load_checkpoint(path, map_location="cpu")
    try:
        model = GPT(GPTConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit the model the checkpoint describes "
                              f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), tokenizer_from_description(state.get("tokenizer")), state


__all__ = ["TrainingDiverged", "TrainConfig", "configure_optimizer", "EvalResult", "evaluate", "StepBatchSampler", "as_windows",
           "eval_indices", "rng_state", "set_rng_state", "describe_tokenizer", "tokenizer_from_description",
           "resolve_precision", "make_accelerator", "History", "Trainer", "train", "load_trained_model"]
