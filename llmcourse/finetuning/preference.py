"""Learning from preferences: a reward model and direct preference optimisation (chapter 09).

Alignment data says which of two answers to the same prompt is better. Two
ways to learn from it:

* **RLHF** (Ouyang et al., 2022) first trains a :class:`RewardModel` that gives
  an answer a score, with the pairwise loss -log σ(r_chosen - r_rejected)
  (:func:`pairwise_reward_loss`), then optimises the language model against
  that score with reinforcement learning (PPO, not built here).
* **DPO** (Rafailov et al., 2023) skips both the reward model and the RL: it
  compares how much more likely the policy makes each answer than a frozen
  reference model does, and pushes the chosen answer's gain above the rejected
  one's (:func:`dpo_loss`). Its implicit reward is β·(log π(y|x) - log π_ref(y|x)).

Both losses use ``F.logsigmoid``: log(sigmoid(z)) computed directly, which
stays finite where sigmoid(z) rounds to 0.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from llmcourse.progress import tqdm

from llmcourse.finetuning.classify import last_token_states, pad_right
from llmcourse.models.gpt import GPT
from llmcourse.finetuning.instructions import END_OF_ANSWER, PreferencePair, format_example
from llmcourse.finetuning.sft import IGNORE_INDEX, SFTCollator, build_sft_example, update

# --------------------------------------------------------------------------- log-probability of an answer


def sequence_logprob(model: nn.Module, ids: Tensor, labels: Tensor) -> Tensor:
    """Sum of log p(token) over the labelled tokens of each row: ids, labels (batch, seq) -> (batch,).

    As in :func:`llmcourse.finetuning.sft.sft_loss`, position t's logits score the token at
    t + 1, and labels equal to -100 (the prompt, the padding) are left out.
    """
    if ids.dim() != 2 or labels.shape != ids.shape:
        raise ValueError(f"expected ids and labels of the same shape (batch, seq), got {tuple(ids.shape)} "
                         f"and {tuple(labels.shape)}")
    logits = model(ids)[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logps = torch.log_softmax(logits.float(), dim=-1)
    token_logps = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * keep).sum(dim=-1)


# --------------------------------------------------------------------------- a reward model


class RewardModel(nn.Module):
    """A GPT backbone and a linear head that maps the last real token's state to one number, the reward."""

    def __init__(self, backbone: GPT):
        super().__init__()
        if not hasattr(backbone, "hidden_states"):
            raise TypeError(f"the backbone must have a hidden_states(ids) method (like llmcourse.models.gpt.GPT), "
                            f"got {type(backbone).__name__}")
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.d_model, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """ids (batch, seq) -> rewards (batch,)."""
        return self.head(last_token_states(self.backbone.hidden_states(ids), lengths)).squeeze(-1)


def pairwise_reward_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Mean of -log σ(r_chosen - r_rejected): small when every chosen answer outscores its rejected one."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} must have "
                         f"the same shape: one reward each per pair")
    return -F.logsigmoid(r_chosen - r_rejected).mean()


# --------------------------------------------------------------------------- DPO


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss (Rafailov et al. 2023, eq. 7) and the implicit rewards of the two answers.

    chosen_rewards = β (log π(y_w|x) - log π_ref(y_w|x)), rejected_rewards likewise
    for y_l, and loss = mean of -log σ(chosen_rewards - rejected_rewards).
    The rewards come back detached, for logging.
    """
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                       ref_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have the same shape (one value per pair), "
                         f"got {sorted(shapes)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()


# --------------------------------------------------------------------------- batches and short training loops


def preference_batch(tokenizer, pairs: Sequence[PreferencePair]) -> dict[str, Tensor]:
    """SFT-style ids and labels (prompt masked) for the chosen and the rejected answers of ``pairs``.

    Keys: ``chosen_ids``, ``chosen_labels``, ``rejected_ids``, ``rejected_labels``.
    """
    collate = SFTCollator(pad_id=tokenizer.encode(END_OF_ANSWER)[0])
    chosen = collate([build_sft_example(tokenizer, p.question, p.chosen) for p in pairs])
    rejected = collate([build_sft_example(tokenizer, p.question, p.rejected) for p in pairs])
    return {"chosen_ids": chosen[0], "chosen_labels": chosen[1],
            "rejected_ids": rejected[0], "rejected_labels": rejected[1]}


def reward_batch(tokenizer, pairs: Sequence[PreferencePair]) -> dict[str, Tensor]:
    """Whole examples (prompt + answer + end marker), padded on the right, with their lengths."""
    pad = tokenizer.encode(END_OF_ANSWER)[0]
    chosen = pad_right([tokenizer.encode(format_example(p.question, p.chosen)) for p in pairs], pad)
    rejected = pad_right([tokenizer.encode(format_example(p.question, p.rejected)) for p in pairs], pad)
    return {"chosen_ids": chosen[0], "chosen_lengths": chosen[1],
            "rejected_ids": rejected[0], "rejected_lengths": rejected[1]}


def train_reward_model(model: RewardModel, tokenizer, pairs: Sequence[PreferencePair], steps: int,
                       batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                       progress: bool = False) -> list[float]:
    """Train ``model`` with :func:`pairwise_reward_loss`; returns the loss of every step."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="reward model", disable=not progress):
        batch = {k: v.to(device) for k, v in reward_batch(tokenizer, rng.sample(list(pairs),
                                                                                 min(batch_size, len(pairs)))).items()}
        loss = pairwise_reward_loss(model(batch["chosen_ids"], batch["chosen_lengths"]),
                                    model(batch["rejected_ids"], batch["rejected_lengths"]))
        losses.append(update(optimizer, loss))
    model.eval()
    return losses


@torch.no_grad()
def preference_margin(policy: nn.Module, reference: nn.Module, tokenizer, pairs: Sequence[PreferencePair]) -> float:
    """Mean of (log π - log π_ref)(chosen) - (log π - log π_ref)(rejected): DPO's reward margin with β = 1."""
    batch = preference_batch(tokenizer, pairs)
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was = policy.training, reference.training
    policy.eval()
    reference.eval()
    gain_chosen = sequence_logprob(policy, batch["chosen_ids"], batch["chosen_labels"]) - \
        sequence_logprob(reference, batch["chosen_ids"], batch["chosen_labels"])
    gain_rejected = sequence_logprob(policy, batch["rejected_ids"], batch["rejected_labels"]) - \
        sequence_logprob(reference, batch["rejected_ids"], batch["rejected_labels"])
    policy.train(was[0])
    reference.train(was[1])
    return float((gain_chosen - gain_rejected).mean())


def train_dpo(policy: nn.Module, tokenizer, pairs: Sequence[PreferencePair], steps: int, beta: float = 0.1,
              batch_size: int = 16, lr: float = 1e-3, reference: nn.Module | None = None, seed: int = 0,
              progress: bool = False) -> dict[str, list[float]]:
    """Train ``policy`` with :func:`dpo_loss` against a frozen ``reference`` (default: a copy of the policy now).

    Returns per-step ``loss``, ``chosen_reward``, ``rejected_reward`` (batch means)
    and ``accuracy`` (fraction of pairs whose chosen reward is the larger).
    """
    if reference is None:
        reference = copy.deepcopy(policy).requires_grad_(False)
    reference_was_training = reference.training
    reference.eval()  # read under torch.no_grad() below; the caller's model keeps its requires_grad flags
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    device = next(policy.parameters()).device
    history: dict[str, list[float]] = {"loss": [], "chosen_reward": [], "rejected_reward": [], "accuracy": []}
    policy.train()
    for _ in tqdm(range(steps), desc="DPO", disable=not progress):
        batch = preference_batch(tokenizer, rng.sample(list(pairs), min(batch_size, len(pairs))))
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            ref_chosen = sequence_logprob(reference, batch["chosen_ids"], batch["chosen_labels"])
            ref_rejected = sequence_logprob(reference, batch["rejected_ids"], batch["rejected_labels"])
        loss, chosen, rejected = dpo_loss(sequence_logprob(policy, batch["chosen_ids"], batch["chosen_labels"]),
                                          sequence_logprob(policy, batch["rejected_ids"], batch["rejected_labels"]),
                                          ref_chosen, ref_rejected, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["loss"].append(loss.item())
        history["chosen_reward"].append(chosen.mean().item())
        history["rejected_reward"].append(rejected.mean().item())
        history["accuracy"].append((chosen > rejected).float().mean().item())
    policy.eval()
    reference.train(reference_was_training)
    return history


__all__ = ["sequence_logprob", "RewardModel", "pairwise_reward_loss", "dpo_loss", "preference_batch",
           "reward_batch", "train_reward_model", "preference_margin", "train_dpo"]
