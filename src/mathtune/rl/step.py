"""One GRPO generation batch (sample, reward, with --dynamic_sample keep the groups with reward variance and sample
more, then advantages, the sampling and reference log-probabilities) and one optimizer step on it (micro-batches of
the policy loss, clipping, the --nan_policy)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .loss import group_advantages, policy_loss
from .rewards import Prompt, RewardFn
from .rollout import Rollout, collate, packs, policy_logps, sample


@dataclass
class GenerationBatch:
    rollout: Rollout
    prompts_text: list[str]
    rewards: torch.Tensor
    """[N, F]: each reward function's value per completion."""
    advantages: torch.Tensor
    stats: dict
    """Measures of the batch itself (rewards, accuracy, lengths, zero-std share), logged with each step on it."""
    old_logps: list[torch.Tensor] | None
    """Per micro-batch, the sampling policy's log-probabilities (num_iterations > 1 only)."""
    ref_logps: list[torch.Tensor] | None
    """Per micro-batch, the reference policy's (beta > 0 only)."""

    def completion_lines(self, step: int, names: list[str]) -> list[dict]:
        total = self.rewards.sum(1) if self.rewards.numel() else self.rewards
        return [{"step": step, "prompt": self.prompts_text[k], "completion": self.rollout.texts[k],
                 "rewards": {n: float(self.rewards[k, j]) for j, n in enumerate(names)}, "reward": float(total[k]),
                 "advantage": float(self.advantages[k])} for k in range(len(self.rollout.texts))]

    def to_saved(self) -> dict:
        """Plain data and tensors only (a checkpoint loads with torch.load(weights_only=True))."""
        r = self.rollout
        return {"prompt_ids": r.prompt_ids, "completion_ids": r.completion_ids, "texts": r.texts,
                "truncated": r.truncated, "prompts_text": self.prompts_text, "rewards": self.rewards,
                "advantages": self.advantages, "stats": self.stats, "old_logps": self.old_logps,
                "ref_logps": self.ref_logps}

    @classmethod
    def from_saved(cls, saved: dict) -> GenerationBatch:
        rollout = Rollout(saved["prompt_ids"], saved["completion_ids"], saved["texts"], saved["truncated"])
        return cls(rollout, saved["prompts_text"], saved["rewards"], saved["advantages"], saved["stats"],
                   saved["old_logps"], saved["ref_logps"])


def micro_batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(k, min(k + batch_size, n))) for k in range(0, n, batch_size)]


@dataclass
class Scored:
    """Sampled and rewarded groups (`num_generations` consecutive completions per prompt), before advantages:
    dynamic sampling chooses among such groups before anything is computed from the batch as a whole."""

    rollout: Rollout
    prompts: list[Prompt]
    """Per completion, its prompt."""
    values: torch.Tensor
    """[N, F]: each reward function's value per completion."""
    total: torch.Tensor
    """[N]: the weighted sum over reward functions, what advantages compare."""

    def zero_std(self, num_generations: int) -> list[bool]:
        """Per group, whether its total rewards are all equal (no learning signal), as frac_reward_zero_std says."""
        return group_advantages(self.total, num_generations, "group").zero_std[::num_generations].tolist()

    @staticmethod
    def of_groups(groups: Sequence[tuple[Scored, int]], num_generations: int) -> Scored:
        """The groups named as (scored, group index), in that order, as one."""
        parts = [(s, list(range(k * num_generations, (k + 1) * num_generations))) for s, k in groups]
        return Scored(Rollout.concat([s.rollout.select(rows) for s, rows in parts]),
                      [s.prompts[r] for s, rows in parts for r in rows],
                      torch.cat([s.values[rows] for s, rows in parts]), torch.cat([s.total[rows] for s, rows in parts]))


def score(generator, prompts: Sequence[Prompt], rewards: list[tuple[str, RewardFn]], cfg) -> Scored:
    """Sample `num_generations` completions per prompt (one sampling call) and reward them."""
    g = cfg.grpo
    rollout = sample(generator, prompts, num_generations=g.num_generations,
                     max_completion_length=g.max_completion_length, temperature=g.temperature, top_p=g.top_p,
                     batch_size=max(cfg.optim.batch_size, g.num_generations))
    expanded = [p for p in prompts for _ in range(g.num_generations)]
    values = torch.tensor([fn(rollout.texts, expanded) for _, fn in rewards], dtype=torch.float32).T
    return Scored(rollout, expanded, values, (values * torch.tensor(g.weights)).sum(1))


def resample_prompts(pool: Sequence[Prompt], count: int, seed: int, step: int, round_: int) -> list[Prompt]:
    """Dynamic sampling's extra questions for `round_` (1, 2, ...) of `step`: drawn from the whole pool by an RNG
    of their own, seeded by the round, so that a resumed run draws the same ones (the completions come from the
    global RNG, which checkpoints keep)."""
    rng = random.Random(f"grpo-resample:{seed}:{step}:{round_}")
    return [pool[i] for i in rng.sample(range(len(pool)), min(count, len(pool)))]


def dynamic_sample(generator, first: Scored, pool: Sequence[Prompt], rewards: list[tuple[str, RewardFn]], cfg,
                   step: int) -> tuple[Scored, dict]:
    """ms-swift's dynamic_sample (DAPO's dynamic sampling): keep the groups with reward variance, sampling another
    round of as many questions while fewer than the first round's count are kept (at most max_resample_times
    rounds); a batch still short is filled with the first round's zero-std groups, so the step keeps its size.
    Returns the chosen groups and the step's resample_rounds and frac_reward_zero_std_sampled."""
    g = cfg.grpo
    n = g.num_generations
    first_zero = first.zero_std(n)
    wanted = len(first_zero)
    kept = [(first, k) for k, zero in enumerate(first_zero) if not zero]
    rounds = 0
    while len(kept) < wanted and rounds < g.max_resample_times:
        rounds += 1
        more = score(generator, resample_prompts(pool, wanted, cfg.optim.seed, step, rounds), rewards, cfg)
        kept += [(more, k) for k, zero in enumerate(more.zero_std(n)) if not zero]
    fill = [(first, k) for k, zero in enumerate(first_zero) if zero]
    stats = {"resample_rounds": rounds, "frac_reward_zero_std_sampled": sum(first_zero) / max(wanted, 1)}
    return Scored.of_groups((kept + fill)[:wanted], n), stats


def make_generation_batch(generator, prompts: list[Prompt], rewards: list[tuple[str, RewardFn]], cfg, ref_model,
                          step: int, pool: Sequence[Prompt] | None = None) -> GenerationBatch:
    """Sample `num_generations` completions per prompt, reward them, and compute what the steps on them need. With
    --dynamic_sample, extra questions come from `pool` (the whole training set; default: `prompts`)."""
    scored, extra = score(generator, prompts, rewards, cfg), {}
    if cfg.grpo.dynamic_sample:
        scored, extra = dynamic_sample(generator, scored, prompts if pool is None else pool, rewards, cfg, step)
    return build_batch(generator, scored, rewards, cfg, ref_model, extra)


def build_batch(generator, scored: Scored, rewards: list[tuple[str, RewardFn]], cfg, ref_model,
                extra_stats: dict | None = None) -> GenerationBatch:
    """The generation batch of the chosen groups: advantages and stats over them alone, and the sampling and
    reference log-probabilities its steps need."""
    g = cfg.grpo
    rollout, values = scored.rollout, scored.values
    adv = group_advantages(scored.total, g.num_generations, g.scale_rewards)
    stats = {**_batch_stats(scored, adv, [name for name, _ in rewards]), **(extra_stats or {})}
    model, pad = generator.model, generator.pad_id
    rows = micro_batches(len(rollout.texts), cfg.optim.batch_size)
    device = next(model.parameters()).device
    old = ref = None
    with torch.no_grad():
        if g.num_iterations > 1:
            old = [policy_logps(model, collate(rollout, r, pad, device, packs(model)), g.temperature).cpu()
                   for r in rows]
        if g.beta != 0.0:
            context = model.disable_adapter() if ref_model is None else contextlib.nullcontext()
            with context:
                scorer = ref_model or model
                ref = [policy_logps(scorer, collate(rollout, r, pad, device, packs(scorer)), g.temperature).cpu()
                       for r in rows]
    text = [p.messages[-1]["content"] for p in scored.prompts]
    return GenerationBatch(rollout, text, values, adv.values, stats, old, ref)


def _batch_stats(scored: Scored, adv, names: list[str]) -> dict:
    """Measures of the batch that is trained on (rewards, accuracy, lengths, zero-std share)."""
    from .rewards import accuracy

    rollout, values, total = scored.rollout, scored.values, scored.total
    correct = values[:, names.index("accuracy")] if "accuracy" in names else torch.tensor(accuracy(rollout.texts,
                                                                                                   scored.prompts))
    lengths = torch.tensor([float(len(c)) for c in rollout.completion_ids])
    return {"reward": float(total.mean()), "reward_std": float(adv.std.mean()), "accuracy": float(correct.mean()),
            "frac_reward_zero_std": float(adv.zero_std.float().mean()), "completion_length": float(lengths.mean()),
            "clipped_completions": float(torch.tensor(rollout.truncated, dtype=torch.float32).mean()),
            **{f"rewards/{n}": float(values[:, j].mean()) for j, n in enumerate(names)}}


def take_step(model, batch: GenerationBatch, params: list, optimizer, cfg, tokenizer, step: int) -> dict:
    """One optimizer step over the generation batch's micro-batches; the step's log record (without position)."""
    from ..train import handle_non_finite

    g, optim = cfg.grpo, cfg.optim
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    rows = micro_batches(len(batch.rollout.texts), optim.batch_size)
    step_tokens = sum(len(c) for c in batch.rollout.completion_ids)
    loss_sum, kls, clips, tokens = 0.0, [], [], []
    for k, r in enumerate(rows):
        micro = collate(batch.rollout, r, pad, device, packs(model))
        logps = policy_logps(model, micro, g.temperature)
        out = policy_loss(logps, None if batch.old_logps is None else batch.old_logps[k].to(device),
                          None if batch.ref_logps is None else batch.ref_logps[k].to(device),
                          batch.advantages[r].to(device), micro.completion_mask, loss_type=g.loss_type,
                          epsilon_low=g.epsilon, epsilon_high=g.epsilon_upper, beta=g.beta,
                          max_completion_length=g.max_completion_length, accumulation_steps=len(rows),
                          batch_tokens=step_tokens)
        if not torch.isfinite(out.loss) and handle_non_finite(optim, step, r, None, "loss"):
            optimizer.zero_grad(set_to_none=True)
            return {**batch.stats, "loss": None, "skipped": 1}
        out.loss.backward()
        loss_sum += float(out.loss.detach())
        clips.append(out.clip_ratio * out.tokens)
        tokens.append(out.tokens)
        if out.kl is not None:
            kls.append(out.kl * out.tokens)
    # clip_grad_norm_ in two halves: a non-finite norm would scale every gradient to NaN before the message names
    # the tensors that had one
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    every_row = list(range(len(batch.rollout.texts)))
    skipped = not bool(torch.isfinite(grad_norm)) and handle_non_finite(optim, step, every_row, None,
                                                                        non_finite_gradient(model, params))
    if not skipped:
        torch.nn.utils.clip_grads_with_norm_(params, optim.max_grad_norm, grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    n = max(sum(tokens), 1)
    return {**batch.stats, "loss": loss_sum, "grad_norm": float(grad_norm), "clip_ratio": sum(clips) / n,
            "kl": sum(kls) / n if kls else None, **({"skipped": 1} if skipped else {})}


def non_finite_gradient(model, params: list) -> str:
    """What a non-finite gradient message names: how many of the trained tensors have one, and the first few."""
    names = {id(p): name for name, p in model.named_parameters()}
    bad = [names.get(id(p), "?") for p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    return f"gradient ({len(bad)} of {len(params)} trained tensors, first: {', '.join(bad[:3]) or 'none'})"
