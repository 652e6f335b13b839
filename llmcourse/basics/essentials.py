"""PyTorch essentials: the small tools of chapter 00.

* :func:`count_parameters` — how many numbers a model learns.
* :func:`explain_device_error` and :func:`explain_dtype_error` — the two most
  common PyTorch errors, in plain words, with the fix.
* :class:`ToyClassification` — a tiny, seeded data set with a rule to learn.
* :func:`train` and :func:`accuracy` — the training loop every later chapter
  builds on, and its evaluation twin.
* :func:`plot_history` — the loss curve (and learning rate) of a run.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset
from llmcourse.progress import tqdm

# --------------------------------------------------------------------------- counting


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of scalars in ``model``'s parameters (only those with ``requires_grad`` if asked).

    Buffers (such as BatchNorm's running mean) are not parameters and are not counted,
    although they do appear in the ``state_dict``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- errors in plain words

_DEVICE_NAME = re.compile(r"\b(cpu|cuda(?::\d+)?|mps(?::\d+)?|xpu(?::\d+)?|meta)\b")
_DTYPE_NAME = re.compile(
    r"\b(float|double|half|bfloat16|long|int|short|byte|bool|"
    r"float16|float32|float64|int8|int16|int32|int64|uint8)\b",
    re.IGNORECASE,
)


def explain_device_error(exc: BaseException) -> str:
    """Explain PyTorch's "tensors on different devices" error in plain words, with the fix."""
    message = str(exc)
    devices = list(dict.fromkeys(_DEVICE_NAME.findall(message)))
    if "device" not in message or len(devices) < 2:
        return f"This is not a device mismatch: {message}"
    return (
        f"One operation received tensors on two devices ({devices[0]} and {devices[1]}). "
        "PyTorch only computes on data that sits on a single device and never moves it for you. "
        "Put everything where the model is: `model.to(device)` moves a module in place, while a "
        "tensor's `.to` returns a new tensor, so write `x = x.to(device)`."
    )


def explain_dtype_error(exc: BaseException) -> str:
    """Explain PyTorch's "mixed dtypes" error in plain words, with the fix."""
    message = str(exc)
    dtypes = list(dict.fromkeys(name.lower() for name in _DTYPE_NAME.findall(message)))
    if not ("dtype" in message or "scalar type" in message) or not dtypes:
        return f"This is not a dtype mismatch: {message}"
    if "target" in message:
        return (
            f"The targets have dtype {dtypes[-1]}, but cross-entropy wants class indices as integers. "
            "Convert them with `y = y.long()`."
        )
    found = " and ".join(dtypes)
    return (
        f"One operation received tensors of different dtypes ({found}). Elementwise arithmetic "
        "quietly converts to the wider type, but matrix products and layers do not. Convert the "
        "input to the model's dtype: `x = x.to(model_dtype)`, e.g. `x = x.float()` for float32."
    )


# --------------------------------------------------------------------------- a toy problem


class ToyClassification(Dataset):
    """``n`` random points in ``n_features`` dimensions, labelled by a hidden linear rule.

    The rule (a random "teacher" matrix) and the points are drawn once, from ``seed``, so the
    same seed always gives the same data set, and ``dataset[i]`` is the same pair every time.
    Item ``i`` is ``(x, y)``: a float32 vector of shape ``(n_features,)`` and an int64 label.
    """

    def __init__(self, n: int = 512, n_features: int = 16, n_classes: int = 2, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.teacher = torch.randn(n_features, n_classes, generator=generator)  # the rule, the same for any n
        self.x = torch.randn(n, n_features, generator=generator)
        self.y = (self.x @ self.teacher).argmax(dim=1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


# --------------------------------------------------------------------------- training and evaluation

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    epochs: int = 1,
    loss_fn: LossFunction = F.cross_entropy,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` on ``(x, y)`` batches and return the loss of every step.

    Each step: move the batch to the model's device, zero the gradients, compute
    ``loss_fn(model(x), y)``, back-propagate, update the weights, then advance the
    learning-rate ``scheduler`` (once per step, not per epoch).
    """
    device = next(model.parameters()).device
    model.train()
    losses: list[float] = []
    bar = tqdm(total=epochs * len(loader), desc="training", disable=not progress)
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The fraction of examples whose highest logit is the right class (model in eval mode)."""
    device = next(model.parameters()).device
    model.eval()
    correct, total = 0, 0
    for x, y in loader:
        predictions = model(x.to(device)).argmax(dim=-1)
        correct += (predictions == y.to(device)).sum().item()
        total += len(y)
    return correct / total


def plot_history(losses: list[float], lrs: list[float] | None = None) -> Figure:
    """The loss of every step, and beside it the learning rate if ``lrs`` is given.

    The figure is closed in pyplot, so a notebook shows it once, as the cell's last expression.
    """
    fig, axes = plt.subplots(1, 1 if lrs is None else 2, figsize=(5 if lrs is None else 10, 3.5), squeeze=False)
    axes[0, 0].plot(losses)
    axes[0, 0].set(title="training loss", xlabel="step", ylabel="loss")
    if lrs is not None:
        axes[0, 1].plot(lrs)
        axes[0, 1].set(title="learning rate", xlabel="step", ylabel="lr")
    fig.tight_layout()
    plt.close(fig)
    return fig
