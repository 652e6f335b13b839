"""Label smoothing and calibration: does a classifier's confidence match how often it is right? (chapter 02)

1. **Label smoothing.** :func:`smoothed_targets` moves a share ``smoothing`` of the
   target's probability from the right class to all classes evenly;
   :func:`label_smoothed_cross_entropy` is cross-entropy against that target, the
   same number as ``nn.CrossEntropyLoss(label_smoothing=...)``.
2. **Calibration.** A classifier is *calibrated* when, among the examples it gives
   confidence 0.8, it is right 80% of the time. :func:`reliability_bins` sorts the
   examples into equal-width confidence bins and measures each bin's accuracy;
   :func:`expected_calibration_error` (ECE) is the examples-weighted average gap.
3. **Temperature scaling.** :func:`fit_temperature` finds the one number ``T`` that
   divides the logits so that the held-out negative log-likelihood is lowest.
4. **An experiment.** :func:`overlapping_blobs` makes a seeded multi-class 2-D data set
   whose classes overlap; :func:`calibration_experiment` trains a small MLP on few of
   its points with and without label smoothing and measures each on fresh points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from llmcourse.basics.activations import log_softmax, softmax
from llmcourse.basics.neurons import MLP

# --------------------------------------------------------------------------- 1. label smoothing


def _check_smoothing(smoothing: float) -> None:
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be between 0 and 1, got {smoothing}")


def smoothed_targets(targets: Tensor, n_classes: int, smoothing: float,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """``(1 - smoothing) * one_hot(targets) + smoothing / n_classes``: shape ``targets.shape + (n_classes,)``."""
    _check_smoothing(smoothing)
    one_hot = torch.zeros(*targets.shape, n_classes, dtype=dtype)
    one_hot.scatter_(-1, targets.long().unsqueeze(-1), 1.0)
    return (1.0 - smoothing) * one_hot + smoothing / n_classes


def label_smoothed_cross_entropy(logits: Tensor, targets: Tensor, smoothing: float = 0.1) -> Tensor:
    """Mean over the batch of ``-sum_k q_k log softmax(logits)_k`` with ``q`` the smoothed target.

    Written out: ``(1 - smoothing) * (-log p_target) + smoothing * mean_k(-log p_k)``.
    ``logits`` is ``(N, C)``, ``targets`` ``(N,)`` class indices; ``smoothing = 0`` is plain cross-entropy.
    """
    q = smoothed_targets(targets, logits.shape[-1], smoothing, dtype=logits.dtype)
    return -(q * log_softmax(logits, dim=-1)).sum(dim=-1).mean()


# --------------------------------------------------------------------------- 2. calibration


@dataclass
class ReliabilityBins:
    """Equal-width bins of confidence: ``edges`` (n_bins + 1,), and per bin its count, mean confidence, accuracy.

    Bin ``k`` holds the confidences in ``(edges[k], edges[k + 1]]`` (the first bin also holds 0).
    Empty bins have count 0 and confidence and accuracy ``nan``.
    """

    edges: Tensor
    counts: Tensor
    confidence: Tensor
    accuracy: Tensor

    @property
    def gaps(self) -> Tensor:
        """Accuracy minus confidence per bin: negative where the model is over-confident."""
        return self.accuracy - self.confidence


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 10) -> ReliabilityBins:
    """Sort examples by their confidence (the largest probability) into ``n_bins`` equal bins on [0, 1]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).to(torch.float64)
    confidence = confidence.to(torch.float64)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges[1:-1])  # (edges[k], edges[k + 1]] -> k
    counts = torch.bincount(which, minlength=n_bins)
    summed_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, confidence)
    summed_correct = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, correct)
    safe = counts.clamp_min(1).to(torch.float64)
    empty = counts == 0
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    return ReliabilityBins(edges, counts, torch.where(empty, nan, summed_conf / safe),
                           torch.where(empty, nan, summed_correct / safe))


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 10) -> float:
    """ECE: ``sum over bins of (examples in bin / all examples) * |accuracy - mean confidence|``."""
    bins = reliability_bins(probs, labels, n_bins)
    filled = bins.counts > 0
    weights = bins.counts[filled].to(torch.float64) / bins.counts.sum()
    return float((weights * bins.gaps[filled].abs()).sum())


# --------------------------------------------------------------------------- 3. temperature scaling


def negative_log_likelihood(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    """Mean ``-log softmax(logits / temperature)[label]``."""
    log_p = log_softmax(logits.to(torch.float64) / temperature, dim=-1)
    return float(-log_p[torch.arange(len(labels)), labels].mean())


def fit_temperature(logits: Tensor, labels: Tensor, low: float = 0.05, high: float = 20.0,
                    iterations: int = 80) -> float:
    """The temperature in ``[low, high]`` with the lowest :func:`negative_log_likelihood`, by golden-section search.

    The likelihood is convex in ``1 / T``, so it has one minimum and the search (on ``log T``) finds it.
    """
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = negative_log_likelihood(logits, labels, math.exp(c)), negative_log_likelihood(logits, labels, math.exp(d))
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = negative_log_likelihood(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = negative_log_likelihood(logits, labels, math.exp(d))
    return math.exp((a + b) / 2)


# --------------------------------------------------------------------------- 4. an experiment


def overlapping_blobs(n: int, n_classes: int = 4, spread: float = 0.6, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` points of ``n_classes`` round Gaussian clouds (std ``spread``) centred on the unit circle.

    Neighbouring clouds overlap, so even the best classifier is unsure near the borders. Returns
    ``(X (n, 2) float32, y (n,) int64)``.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    angles = 2 * math.pi * y.to(torch.float32) / n_classes
    centres = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return centres + spread * torch.randn(n, 2, generator=g), y


@dataclass
class CalibrationResult:
    """One trained classifier measured on fresh points: its logits there, accuracy, ECE and NLL."""

    label: str
    smoothing: float
    logits: Tensor
    labels: Tensor
    accuracy: float
    ece: float
    nll: float
    mean_confidence: float

    @property
    def probs(self) -> Tensor:
        return softmax(self.logits, dim=-1)


def measure(label: str, logits: Tensor, labels: Tensor, smoothing: float = 0.0, n_bins: int = 10) -> CalibrationResult:
    """Accuracy, ECE, NLL and mean confidence of ``logits`` against ``labels``."""
    probs = softmax(logits.to(torch.float64), dim=-1)
    confidence, predicted = probs.max(dim=-1)
    return CalibrationResult(label, smoothing, logits, labels, float((predicted == labels).double().mean()),
                             expected_calibration_error(probs, labels, n_bins), negative_log_likelihood(logits, labels),
                             float(confidence.mean()))


def train_classifier(X: Tensor, y: Tensor, smoothing: float = 0.0, hidden: int = 64, steps: int = 500,
                     lr: float = 0.01, seed: int = 0) -> MLP:
    """A 2 -> hidden -> hidden -> classes ReLU MLP trained by full-batch Adam on label-smoothed cross-entropy.

    It trains in float64 (a few seconds on a CPU), so its numbers are the same on every machine's kernels;
    pass float64 inputs to it afterwards.
    """
    n_classes = int(y.max()) + 1
    model = MLP([X.shape[1], hidden, hidden, n_classes], generator=torch.Generator().manual_seed(seed)).double()
    X = X.double()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        label_smoothed_cross_entropy(model(X), y, smoothing).backward()
        optimizer.step()
    return model


def calibration_experiment(smoothings: tuple[float, ...] = (0.0, 0.1), n_train: int = 200, n_val: int = 1000,
                           n_test: int = 4000, steps: int = 500, seed: int = 0,
                           ) -> tuple[dict[str, CalibrationResult], dict[str, Tensor]]:
    """Train one classifier per smoothing on ``n_train`` blob points; measure each on ``n_test`` fresh points.

    Returns the results by label and, for temperature scaling, each model's logits on ``n_val`` further
    points (``"val_logits/<label>"``) with the labels (``"val_labels"``).
    """
    X, y = overlapping_blobs(n_train, seed=seed)
    X_val, y_val = overlapping_blobs(n_val, seed=seed + 1)
    X_test, y_test = overlapping_blobs(n_test, seed=seed + 2)
    results: dict[str, CalibrationResult] = {}
    held_out: dict[str, Tensor] = {"val_labels": y_val}
    for smoothing in smoothings:
        label = "plain cross-entropy" if smoothing == 0 else f"label smoothing {smoothing:g}"
        model = train_classifier(X, y, smoothing, steps=steps, seed=seed)
        with torch.no_grad():
            results[label] = measure(label, model(X_test.double()), y_test, smoothing)
            held_out[f"val_logits/{label}"] = model(X_val.double())
    return results, held_out


__all__ = [
    "smoothed_targets", "label_smoothed_cross_entropy",
    "ReliabilityBins", "reliability_bins", "expected_calibration_error",
    "negative_log_likelihood", "fit_temperature",
    "overlapping_blobs", "CalibrationResult", "measure", "train_classifier", "calibration_experiment",
]
