"""Chapter 02's label smoothing, calibration and temperature scaling against independent references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from llmcourse.basics import calibration as C
from llmcourse.basics.calibration_plots import plot_reliability

F64 = torch.float64


# --------------------------------------------------------------------------- label smoothing


@pytest.mark.parametrize("smoothing", [0.0, 0.05, 0.1, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_label_smoothed_cross_entropy_equals_torch(smoothing, dtype):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(32, 7, generator=g, dtype=F64) * 4).to(dtype)
    targets = torch.randint(0, 7, (32,), generator=g)
    ours = C.label_smoothed_cross_entropy(logits, targets, smoothing)
    theirs = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, targets)
    assert ours.dtype == dtype
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


def test_label_smoothed_gradient_equals_torch_and_huge_logits_stay_finite():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 5, generator=g, dtype=F64) * 3
    targets = torch.randint(0, 5, (16,), generator=g)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    C.label_smoothed_cross_entropy(a, targets, 0.2).backward()
    F.cross_entropy(b, targets, label_smoothing=0.2).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    huge = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=F64)
    torch.testing.assert_close(C.label_smoothed_cross_entropy(huge, torch.tensor([1]), 0.1),
                               F.cross_entropy(huge, torch.tensor([1]), label_smoothing=0.1))


def test_smoothed_targets_by_hand():
    q = C.smoothed_targets(torch.tensor([0, 2]), 3, 0.1, dtype=F64)
    torch.testing.assert_close(q, torch.tensor([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]],
                                               dtype=F64))
    torch.testing.assert_close(q.sum(dim=-1), torch.ones(2, dtype=F64))
    with pytest.raises(ValueError):
        C.smoothed_targets(torch.tensor([0]), 3, 1.5)


def test_smoothed_loss_is_lowest_where_p_equals_its_target():
    # logits [g, 0, 0]: d/dg of the smoothed loss is p_t - q_t, zero at g = log(q_t / q_other) = log 28 for eps 0.1
    g = torch.tensor(math.log(28), dtype=F64, requires_grad=True)
    logits = torch.stack([g, torch.tensor(0.0, dtype=F64), torch.tensor(0.0, dtype=F64)]).unsqueeze(0)
    C.label_smoothed_cross_entropy(logits, torch.tensor([0]), 0.1).backward()
    assert abs(g.grad.item()) < 1e-12


# --------------------------------------------------------------------------- calibration


def _ece_brute_force(probs, labels, n_bins):
    """One example at a time: find its bin by comparing with every edge, then average the gaps."""
    bins = [[] for _ in range(n_bins)]
    for p, label in zip(probs.tolist(), labels.tolist()):
        confidence = max(p)
        predicted = p.index(confidence)
        k = 0
        while k < n_bins - 1 and confidence > (k + 1) / n_bins:
            k += 1
        bins[k].append((confidence, predicted == label))
    total = len(labels)
    ece = 0.0
    for members in bins:
        if members:
            conf = sum(c for c, _ in members) / len(members)
            acc = sum(ok for _, ok in members) / len(members)
            ece += len(members) / total * abs(acc - conf)
    return ece


def test_ece_by_hand():
    probs = torch.tensor([[0.95, 0.05], [0.08, 0.92], [0.65, 0.35], [0.38, 0.62]], dtype=F64)
    labels = torch.tensor([0, 0, 0, 1])
    assert C.expected_calibration_error(probs, labels, 10) == pytest.approx(0.4, abs=1e-12)
    bins = C.reliability_bins(probs, labels, 10)
    assert bins.counts.tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert bins.accuracy[9].item() == 0.5 and bins.accuracy[6].item() == 1.0
    assert torch.isnan(bins.confidence[0]) and torch.isnan(bins.accuracy[0])


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
def test_ece_matches_a_brute_force_loop(n_bins):
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(500, 4, generator=g, dtype=F64) * 2, dim=-1)
    labels = torch.randint(0, 4, (500,), generator=g)
    assert C.expected_calibration_error(probs, labels, n_bins) == pytest.approx(
        _ece_brute_force(probs, labels, n_bins), abs=1e-12)


def test_bin_edges_belong_to_the_lower_bin():
    probs = torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.3, 0.7], [1.0, 0.0]], dtype=F64)
    bins = C.reliability_bins(probs, torch.tensor([0, 0, 1, 0]), n_bins=10)
    assert bins.counts.tolist() == [0, 0, 0, 0, 1, 0, 2, 0, 0, 1]  # 0.5 -> (0.4, 0.5], 0.7 -> (0.6, 0.7], 1 -> (0.9, 1]


def test_labels_drawn_from_the_probabilities_are_calibrated():
    # a model that says p and whose labels really come out with probability p has a small ECE; a sharpened one not
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(20_000, 3, generator=g, dtype=F64) * 2
    probs = torch.softmax(logits, dim=-1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    assert C.expected_calibration_error(probs, labels, 10) < 0.02
    assert C.expected_calibration_error(torch.softmax(logits * 3, dim=-1), labels, 10) > 0.1


# --------------------------------------------------------------------------- temperature scaling


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    g = torch.Generator().manual_seed(4)
    true_logits = torch.randn(20_000, 5, generator=g, dtype=F64) * 2
    labels = torch.multinomial(torch.softmax(true_logits, dim=-1), 1, generator=g).squeeze(1)
    T = C.fit_temperature(true_logits * 3, labels)  # an over-confident model: logits three times too large
    assert abs(T - 3) < 0.15
    grid = torch.exp(torch.linspace(math.log(0.05), math.log(20.0), 4001, dtype=F64)).tolist()
    best = min(grid, key=lambda t: C.negative_log_likelihood(true_logits * 3, labels, t))
    assert abs(best / T - 1) < 2e-3
    assert C.negative_log_likelihood(true_logits * 3, labels, T) == pytest.approx(
        float(F.cross_entropy(true_logits * 3 / T, labels)), abs=1e-12)


# --------------------------------------------------------------------------- the experiment and the plot


def test_blobs_are_seeded_and_overlap():
    X, y = C.overlapping_blobs(2000, n_classes=4, seed=0)
    X2, y2 = C.overlapping_blobs(2000, n_classes=4, seed=0)
    assert torch.equal(X, X2) and torch.equal(y, y2) and X.shape == (2000, 2) and set(y.tolist()) == {0, 1, 2, 3}
    centres = torch.stack([X[y == k].mean(dim=0) for k in range(4)])
    torch.testing.assert_close(centres.norm(dim=1), torch.ones(4), atol=0.1, rtol=0)
    nearest_centre = torch.cdist(X, torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])).argmin(dim=1)
    best_possible = (nearest_centre == y).float().mean().item()
    assert 0.6 < best_possible < 0.85  # overlapping: even the best rule misses some


def test_smoothing_lowers_the_confidence_of_a_trained_classifier():
    results, held_out = C.calibration_experiment(smoothings=(0.0, 0.3), n_train=100, n_val=200, n_test=500, steps=150)
    plain, smoothed = results["plain cross-entropy"], results["label smoothing 0.3"]
    assert plain.mean_confidence > smoothed.mean_confidence
    assert plain.mean_confidence > plain.accuracy  # over-confident after memorising 100 points
    assert held_out["val_logits/plain cross-entropy"].shape == (200, 4)
    probs = plain.probs
    assert plain.ece == pytest.approx(_ece_brute_force(probs, plain.labels, 10), abs=1e-12)


def test_plot_reliability_draws_one_panel_per_model_and_a_bar_per_bin():
    probs = torch.tensor([[0.95, 0.05], [0.08, 0.92], [0.65, 0.35], [0.38, 0.62]], dtype=F64)
    labels = torch.tensor([0, 0, 0, 1])
    fig = plot_reliability({"a": (probs, labels), "b": (probs, 1 - labels)}, n_bins=10)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert all(len(ax.patches) == 10 for ax in fig.axes)
    assert "ECE 0.400" in fig.axes[0].get_title()
