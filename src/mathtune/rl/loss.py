"""GRPO's tensors, as pure functions: per-token log-probabilities of completions, group-relative advantages, and
the clipped policy loss with its KL term and normalisation per `loss_type`.

Semantics follow TRL's GRPOTrainer (trl 1.x `_generate_and_score_completions` and `_compute_loss`, token-level
importance sampling, sum-then-normalise rewards); tests/rl/test_loss.py checks them against TRL's own code on
random logits, rewards and masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4  # TRL's: a group whose rewards differ slightly is not blown up to +-1e4


def completion_logps(logits: torch.Tensor, completion_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) of each completion token under `logits` [B, T, V] (already aligned: position t predicts token
    t), sampled at `temperature` (TRL divides the logits by it, so the ratio compares the distributions that were
    actually sampled). logsumexp instead of log_softmax: one [B, T] tensor more rather than a second [B, T, V]."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _std(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    # Unbiased (n - 1), as torch.std and TRL's nanstd.
    return values.std(dim=dim) if dim is not None else values.std()


@dataclass(frozen=True)
class Advantages:
    values: torch.Tensor
    """One per completion, [N]."""
    std: torch.Tensor
    """The reward std each completion was scaled by (its group's, or the batch's), [N]."""
    zero_std: torch.Tensor
    """Whether that std is zero: the group (or batch) gives no learning signal, [N] bool."""


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> Advantages:
    """(reward - its group's mean), divided by the group's std ("group"), the whole batch's ("batch") or nothing
    ("none"). `rewards` [N] holds the weighted sum over reward functions, groups of `num_generations` consecutive."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale_rewards!r}")
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {num_generations}")
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1).repeat_interleave(num_generations)
    if scale_rewards == "batch":
        std = _std(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    elif num_generations > 1:
        std = _std(grouped, dim=1).repeat_interleave(num_generations)
    else:
        std = torch.zeros_like(rewards)
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + STD_EPS)
    return Advantages(advantages, std, torch.isclose(std, torch.zeros_like(std)))


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    """What to backpropagate for this micro-batch (already divided for gradient accumulation)."""
    kl: float | None
    """Mean per-token k3 KL to the reference over the micro-batch's completion tokens; None without a reference."""
    clip_ratio: float
    """Share of completion tokens whose ratio left [1 - epsilon, 1 + epsilon_high] in the direction that clipping
    stops (below with a negative advantage, above with a positive one)."""
    tokens: int


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None,
                advantages: torch.Tensor, mask: torch.Tensor, *, loss_type: str, epsilon_low: float,
                epsilon_high: float, beta: float, max_completion_length: int, accumulation_steps: int = 1,
                batch_tokens: int | None = None) -> PolicyLoss:
    """The clipped surrogate loss of one micro-batch of completions.

    logps, old_logps, ref_logps, mask: [B, T]; advantages: [B]. `old_logps` None means the sampling policy is this
    one (num_iterations 1): the ratio is then 1 in value but still carries the gradient. Normalisation:
    grpo: each sequence's token mean, then the mean over sequences; dr_grpo: the token sum over B x
    max_completion_length; dapo: the token sum over `batch_tokens`, the completion tokens of the whole optimizer
    step (all its micro-batches). grpo and dr_grpo are also divided by `accumulation_steps`.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs the reference policy's log-probabilities")
        delta = ref_logps - logps
        per_token_kl = torch.exp(delta) - delta - 1  # k3: unbiased, always >= 0
        per_token = per_token + beta * per_token_kl
        kl = float((per_token_kl.detach() * mask).sum() / mask.sum().clamp(min=1.0))
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation_steps
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length) / accumulation_steps
    else:
        total = mask.sum() if batch_tokens is None else torch.tensor(float(batch_tokens))
        loss = (per_token * mask).sum() / total.clamp(min=1.0)
    with torch.no_grad():
        region = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
        clip_ratio = float((region.float() * mask).sum() / mask.sum().clamp(min=1.0))
    return PolicyLoss(loss, kl, clip_ratio, int(mask.sum()))
