"""Knowledge distillation: a small student learns from a large teacher's probabilities (chapter 09).

A label says only which token is right. A trained teacher's distribution also
says how wrong the others are ("7" is a near miss for "8", "cat" is not), and a
student can learn from that. Hinton et al. (2015) soften both distributions
with a temperature T and train the student to match the teacher:

    soft = T² · KL( softmax(teacher / T) ‖ softmax(student / T) )

The T² keeps the soft term's gradients about as large as the hard term's when
T changes (they shrink like 1/T² otherwise). With labels, the loss blends it
with the ordinary cross-entropy:

    loss = alpha · soft + (1 - alpha) · CE(student, labels)

The KL goes from the teacher to the student (the teacher's probabilities weigh
the log-ratios), as in ``F.kl_div(log_student, log_teacher, log_target=True)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from llmcourse.finetuning.sft import IGNORE_INDEX


def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / T) along the last dimension: higher T spreads the probability over more tokens."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return torch.softmax(logits / temperature, dim=-1)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None,
                      temperature: float = 2.0, alpha: float = 0.5) -> Tensor:
    """Hinton et al.'s loss: T² · KL(teacher ‖ student) at temperature T, blended with cross-entropy.

    ``student_logits`` and ``teacher_logits``: (..., vocab), the same shape; the
    KL is summed over the vocabulary and averaged over all other positions.
    ``labels`` (...,): class ids, -100 to skip; without labels the loss is the
    soft term alone. ``alpha`` weighs the soft term, ``1 - alpha`` the hard one.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the soft term), got {alpha!r}")
    vocab = student_logits.shape[-1]
    log_student = F.log_softmax(student_logits.reshape(-1, vocab) / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.detach().reshape(-1, vocab) / temperature, dim=-1)
    soft = temperature ** 2 * F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    if labels is None:
        return soft
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"labels must have shape {tuple(student_logits.shape[:-1])} (one class per row of "
                         f"logits), got {tuple(labels.shape)}")
    hard = F.cross_entropy(student_logits.reshape(-1, vocab), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    return alpha * soft + (1 - alpha) * hard


__all__ = ["soft_targets", "distillation_loss"]
