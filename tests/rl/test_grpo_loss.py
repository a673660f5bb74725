"""GRPO's loss, KL, clip ratio and advantages against TRL's GRPOTrainer on the same logits, rewards and masks.

The loss goes through TRL's own `GRPOTrainer._compute_loss`, called on a trainer object that holds only the
attributes that method reads, with its log-probability hook answering from our random logits through TRL's
`selective_log_softmax`. TRL computes advantages inline in `_generate_and_score_completions` (which needs a model,
a tokenizer and generation), so there is no callable for them: `trl_advantages` re-derives them from that source
(sum-then-normalise branch), with TRL's own `nanstd`.
"""

from __future__ import annotations

import types

import pytest
import torch

from mathtune.rl.loss import completion_logps, group_advantages, policy_loss

trl_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
trl_utils = pytest.importorskip("trl.trainer.utils")


class _Accelerator:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_trainer_for(loss_type: str, *, beta: float, eps_low: float, eps_high: float, max_len: int, ga: int,
                    logits: torch.Tensor, temperature: float):
    trainer = trl_trainer.GRPOTrainer.__new__(trl_trainer.GRPOTrainer)
    attrs = dict(
        loss_type=loss_type, beta=beta, epsilon_low=eps_low, epsilon_high=eps_high, max_completion_length=max_len,
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        use_vllm=False, vllm_importance_sampling_correction=False, _entropy_bonus_enabled=False,
        aux_loss_enabled=False, current_gradient_accumulation_steps=ga, accelerator=_Accelerator(),
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=ga),
        model=types.SimpleNamespace(training=True), _metrics={"train": {}, "eval": {}}, temperature=temperature,
    )
    for key, value in attrs.items():
        object.__setattr__(trainer, key, value)
    trainer._metrics = {"train": _Metrics(), "eval": _Metrics()}

    def logps_hook(model, input_ids, attention_mask, logits_to_keep, **kwargs):
        ids = input_ids[:, -logits_to_keep:]
        logps = trl_utils.selective_log_softmax(logits / temperature, ids)
        return logps, trl_utils.entropy_from_logits(logits), None

    object.__setattr__(trainer, "_get_per_token_logps_and_entropies", logps_hook)
    return trainer


class _Metrics(dict):
    def __missing__(self, key):
        self[key] = []
        return self[key]


def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """TRL 1.x `_generate_and_score_completions`, multi_objective_aggregation="sum_then_normalize"."""
    mean = torch.nanmean(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    if scale_rewards in ("group", "none"):
        std = trl_utils.nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    else:
        std = trl_utils.nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return advantages


def _random_batch(seed: int, batch: int = 6, length: int = 7, vocab: int = 11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g) * 2
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    # old and reference policies a little off the current one, so that ratios clip and the KL is not zero
    old = completion_logps(logits + 0.6 * torch.randn(logits.shape, generator=g), ids)
    ref = completion_logps(logits + 0.8 * torch.randn(logits.shape, generator=g), ids)
    advantages = torch.randn(batch, generator=g)
    return logits, ids, mask, old, ref, advantages


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("with_old", [True, False])
def test_loss_gradient_kl_and_clip_ratio_equal_trl(loss_type, beta, with_old):
    temperature, max_len, ga, eps_low, eps_high = 0.7, 9, 2, 0.2, 0.28
    for seed in range(3):
        logits, ids, mask, old, ref, advantages = _random_batch(seed)
        batch_tokens = int(mask.sum()) * 3  # dapo: the step's tokens span other micro-batches too

        ours_logits = logits.clone().requires_grad_(True)
        ours = policy_loss(completion_logps(ours_logits, ids, temperature), old if with_old else None, ref,
                           advantages, mask, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high,
                           beta=beta, max_completion_length=max_len, accumulation_steps=ga,
                           batch_tokens=batch_tokens)
        ours.loss.backward()

        theirs_logits = logits.clone().requires_grad_(True)
        trainer = trl_trainer_for(loss_type, beta=beta, eps_low=eps_low, eps_high=eps_high, max_len=max_len, ga=ga,
                                  logits=theirs_logits, temperature=temperature)
        inputs = {"prompt_ids": torch.zeros(len(ids), 2, dtype=torch.long), "prompt_mask": torch.ones(len(ids), 2),
                  "completion_ids": ids, "completion_mask": mask, "advantages": advantages,
                  "num_items_in_batch": torch.tensor(float(batch_tokens))}
        if with_old:
            inputs["old_per_token_logps"] = old
        if beta:
            inputs["ref_per_token_logps"] = ref
        theirs = trainer._compute_loss(None, inputs)
        theirs.backward()

        torch.testing.assert_close(ours.loss, theirs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours_logits.grad, theirs_logits.grad, rtol=1e-5, atol=1e-7)
        metrics = trainer._metrics["train"]
        assert ours.clip_ratio == pytest.approx(metrics["clip_ratio/region_mean"][0], abs=1e-6)
        if with_old:  # ratios far from 1, so the clip ratio measured something
            assert 0 < ours.clip_ratio < 1
        if beta:
            assert ours.kl == pytest.approx(metrics["kl"][0], rel=1e-5)
            assert ours.kl > 0
        else:
            assert ours.kl is None and "kl" not in metrics


def test_completion_logps_equal_trl_selective_log_softmax():
    logits, ids, *_ = _random_batch(5)
    torch.testing.assert_close(completion_logps(logits, ids, 0.5),
                               trl_utils.selective_log_softmax(logits / 0.5, ids))


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_equal_trl(scale_rewards):
    g = torch.Generator().manual_seed(1)
    rewards = torch.randint(0, 3, (24,), generator=g).float() + 0.5 * torch.rand(24, generator=g)
    rewards[:4] = 1.0  # one group without variance: advantage 0 whatever the scaling
    ours = group_advantages(rewards, 4, scale_rewards)
    torch.testing.assert_close(ours.values, trl_advantages(rewards, 4, scale_rewards))
    assert torch.all(ours.values[:4] == 0)
    if scale_rewards != "batch":
        assert ours.zero_std[:4].all() and not ours.zero_std[4:].all()


def test_advantages_by_hand():
    """Group [0, 1, 1, 0]: mean 0.5, unbiased std 0.5774; [1, 1, 1, 1]: nothing to learn."""
    adv = group_advantages(torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4)
    expected = 0.5 / (0.5773503 + 1e-4)
    torch.testing.assert_close(adv.values, torch.tensor([-expected, expected, expected, -expected, 0, 0, 0, 0]))
    assert adv.zero_std.tolist() == [False] * 4 + [True] * 4


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(torch.zeros(4), 2, "sometimes")
    logits, ids, mask, old, ref, adv = _random_batch(0)
    with pytest.raises(ValueError, match="reference"):
        policy_loss(completion_logps(logits, ids), None, None, adv, mask, loss_type="grpo", epsilon_low=0.2,
                    epsilon_high=0.2, beta=0.1, max_completion_length=8)
