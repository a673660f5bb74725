"""--dynamic_sample (ms-swift's name for DAPO's dynamic sampling): a step trains on groups with reward variance,
sampling more questions (drawn reproducibly, for resume) while it has too few, and falls back to the first round's
groups when none turn up; the flags reach GrpoArgs."""

from __future__ import annotations

import re

import pytest
import torch

from mathtune.cli import build_parser, main
from mathtune.generate import Generator
from mathtune.rl.cli import config_from
from mathtune.rl.config import build
from mathtune.rl.prompts import load_prompts
from mathtune.rl.rewards import Prompt
from mathtune.rl.step import make_generation_batch, resample_prompts

VARYING = {3, 5, 6, 7}  # the questions `What is a + (7 - a)?` whose reward varies between completions
SEED = 42


def _a(prompt: Prompt) -> int:
    return int(re.match(r"What is (\d+) \+", prompt.messages[-1]["content"]).group(1))


def _some_vary(completions, prompts) -> list[float]:
    """A reward that varies between completions for the VARYING questions and is constant for the others."""
    return [float(sum(map(ord, text))) if _a(p) in VARYING else 1.0 for text, p in zip(completions, prompts,
                                                                                        strict=True)]


def _none_vary(completions, prompts) -> list[float]:
    return [1.0] * len(completions)


def _cfg(model_dir, tmp_path, **grpo):
    return build({"model": {"model_id_or_path": str(model_dir)}, "run": {"output_dir": str(tmp_path)},
                  "optim": {"batch_size": 4, "gradient_accumulation_steps": 2, "seed": SEED},
                  "grpo": {"num_generations": 2, "max_completion_length": 6, "reward_funcs": ("mine",), **grpo}})


@pytest.fixture
def setup(tiny_model_dir, tiny_tokenizer, questions):
    """(generator, the eight questions, the step's four: a = 0, 1, 2, 3)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pool = load_prompts((str(questions),), 0)
    chosen = sorted((p for p in pool if _a(p) < 4), key=_a)
    return Generator(model, tiny_tokenizer), pool, chosen


def _group_prompts(batch) -> list[str]:
    texts = batch.prompts_text
    assert all(texts[k] == texts[k + 1] for k in range(0, len(texts), 2))  # groups stay consecutive
    return texts[::2]


def test_only_groups_with_reward_variance_are_kept(tiny_model_dir, tmp_path, setup):
    generator, pool, chosen = setup
    cfg = _cfg(tiny_model_dir, tmp_path, dynamic_sample=True, max_resample_times=20, num_iterations=2)
    assert cfg.prompts_per_step == 4
    torch.manual_seed(0)
    batch = make_generation_batch(generator, chosen, [("mine", _some_vary)], cfg, None, 5, pool=pool)
    # What the rounds should have kept, worked out from the seeded draws: the first round's a = 3, then each
    # round's VARYING questions in order, until four.
    kept, rounds = [p for p in chosen if _a(p) in VARYING], 0
    while len(kept) < 4:
        rounds += 1
        kept += [p for p in resample_prompts(pool, 4, SEED, 5, rounds) if _a(p) in VARYING]
    assert rounds > 0
    assert _group_prompts(batch) == [p.messages[-1]["content"] for p in kept[:4]]
    assert len(batch.rollout.texts) == 8 and batch.rewards.shape == (8, 1)
    assert (batch.rewards.view(4, 2).std(1) > 0).all()
    assert batch.stats["resample_rounds"] == rounds
    assert batch.stats["frac_reward_zero_std"] == 0.0
    assert batch.stats["frac_reward_zero_std_sampled"] == 0.75  # three of the first round's four had no variance
    # The sampling log-probabilities are the final batch's: one row per kept completion.
    assert sum(o.shape[0] for o in batch.old_logps) == 8
    assert [o.shape[1] for o in batch.old_logps] == [max(len(c) for c in batch.rollout.completion_ids[k:k + 4])
                                                     for k in (0, 4)]


def test_without_variance_the_first_round_is_trained_after_every_round(tiny_model_dir, tmp_path, setup):
    generator, pool, chosen = setup
    cfg = _cfg(tiny_model_dir, tmp_path, dynamic_sample=True, max_resample_times=2)
    torch.manual_seed(0)
    batch = make_generation_batch(generator, chosen, [("mine", _none_vary)], cfg, None, 1, pool=pool)
    assert _group_prompts(batch) == [p.messages[-1]["content"] for p in chosen]
    assert batch.stats["resample_rounds"] == 2
    assert batch.stats["frac_reward_zero_std"] == batch.stats["frac_reward_zero_std_sampled"] == 1.0


def test_off_samples_once_and_logs_as_before(tiny_model_dir, tmp_path, setup):
    generator, pool, chosen = setup
    cfg = _cfg(tiny_model_dir, tmp_path)
    torch.manual_seed(0)
    batch = make_generation_batch(generator, chosen, [("mine", _some_vary)], cfg, None, 1, pool=pool)
    assert _group_prompts(batch) == [p.messages[-1]["content"] for p in chosen]
    assert "resample_rounds" not in batch.stats and "frac_reward_zero_std_sampled" not in batch.stats
    assert batch.stats["frac_reward_zero_std"] == 0.75


def test_extra_questions_are_the_same_for_the_same_seed_and_step(tiny_model_dir, tmp_path, setup):
    generator, pool, chosen = setup
    assert resample_prompts(pool, 4, SEED, 3, 1) == resample_prompts(pool, 4, SEED, 3, 1)
    draws = {tuple(map(_a, resample_prompts(pool, 4, seed, step, r))) for seed, step, r in
             [(SEED, 3, 1), (SEED, 3, 2), (SEED, 4, 1), (SEED + 1, 3, 1)]}
    assert len(draws) == 4  # each of seed, step and round changes the draw
    # A whole batch, from the same global RNG state (what a resumed run restores): the same groups and completions.
    cfg = _cfg(tiny_model_dir, tmp_path, dynamic_sample=True, max_resample_times=20)
    batches = []
    for _ in range(2):
        torch.manual_seed(1)
        batches.append(make_generation_batch(generator, chosen, [("mine", _some_vary)], cfg, None, 7, pool=pool))
    assert batches[0].prompts_text == batches[1].prompts_text and batches[0].rollout == batches[1].rollout
    assert batches[0].stats == batches[1].stats


def test_flags_reach_grpo_args(tmp_path):
    argv = ["rlhf", "--dataset", "rg:gsm-symbolic#8", "--dynamic_sample", "true", "--max_resample_times", "2"]
    cfg = config_from(build_parser("rlhf").parse_args(argv))
    assert (cfg.grpo.dynamic_sample, cfg.grpo.max_resample_times) == (True, 2)
    cfg = config_from(build_parser("rlhf").parse_args(["rlhf", "--dataset", "rg:gsm-symbolic#8"]))
    assert (cfg.grpo.dynamic_sample, cfg.grpo.max_resample_times) == (False, 3)
    config = tmp_path / "grpo.yaml"
    config.write_text("dynamic_sample: true\nmax_resample_times: 5\n")
    cfg = config_from(build_parser("rlhf").parse_args(["rlhf", "--config", str(config), "--dynamic_sample", "false"]))
    assert (cfg.grpo.dynamic_sample, cfg.grpo.max_resample_times) == (False, 5)  # the flag beats the file


def test_a_negative_max_resample_times_is_one_line(tiny_model_dir, questions, tmp_path, capsys):
    code = main(["rlhf", "--model", str(tiny_model_dir), "--dataset", str(questions), "--dynamic_sample",
                 "--max_resample_times", "-1", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--max_resample_times must be 0 or a positive whole number, got -1" in err[0], err
    assert not (tmp_path / "out").exists()
