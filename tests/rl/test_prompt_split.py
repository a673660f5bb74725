"""GRPO's rg:gsm-symbolic questions keep the held-out template split exactly as sft's rows do: the same questions as
sft's training rows, none from a held-out template (checked against reasoning-gym itself), none asked by either
evaluation pool, and the unseen split refused as a training source."""

from __future__ import annotations

import re

import pytest
import reasoning_gym

from mathtune import sets
from mathtune.data import generators
from mathtune.data.generators import match_text
from mathtune.errors import UserError
from mathtune.evaluate.benchmarks import get_benchmark
from mathtune.rl.prompts import load_prompts

SEED = 42  # the data seed of the recorded runs; evaluation pools are cached per (task, seed)
N = 300


def _numbers(text: str) -> tuple[str, ...]:
    # gsm-symbolic repeats a problem with only names changed: its numbers identify it (as the generator dedups).
    return tuple(re.findall(r"\d+", text))


@pytest.fixture(scope="module")
def prompts():
    return load_prompts([f"rg:gsm-symbolic#{N}"], SEED)


def test_grpo_questions_are_sfts_training_rows(prompts):
    rows = generators.generate("gsm-symbolic", N, SEED)
    assert [p.messages for p in prompts] == [tuple(m for m in r.messages if m["role"] != "assistant") for r in rows]
    assert [p.origin for p in prompts] == [r.origin for r in rows]
    # The gold is the one sft's reply boxes.
    assert all(f"\\boxed{{{p.item.gold}}}" in r.messages[-1]["content"] for p, r in zip(prompts, rows, strict=True))


def test_no_grpo_question_comes_from_a_held_out_template(prompts):
    dataset = reasoning_gym.create_dataset(  # rebuilt from reasoning-gym, not from mathtune's filter
        "gsm_symbolic", seed=generators._derived_seed("gsm-symbolic", "train", SEED), size=100_000)
    templates = set()
    for prompt in prompts:
        idx = int(re.fullmatch(r"rg:gsm-symbolic\[(\d+)\]", prompt.origin).group(1))
        assert prompt.messages[-1]["content"].startswith(dataset[idx]["question"])  # the origin is that item
        templates.add(int(dataset.task_indices[idx]))
    assert not templates & sets.GSM_SYMBOLIC_HELD_OUT
    assert len(templates) > 20  # many seen templates, so the check above is not vacuous


def test_no_grpo_question_is_asked_by_an_evaluation_pool(prompts):
    trained = [p.messages[-1]["content"].split("\n\nPlease reason")[0] for p in prompts]
    seen = get_benchmark("rg:gsm-symbolic").load(limit=generators.EVAL_POOL, seed=SEED)
    unseen = get_benchmark("rg:gsm-symbolic-unseen").load(limit=generators.EVAL_POOL, seed=SEED)
    for pool in (seen, unseen):
        assert len(pool) == generators.EVAL_POOL
        assert not {match_text(q) for q in trained} & {match_text(item.question) for item in pool}
    # The seen pool shares templates with training: there a renamed copy (same numbers) counts as asked too. (Across
    # templates, equal numbers are a different problem: the unseen pool is kept apart by template, checked above.)
    assert not {_numbers(q) for q in trained} & {_numbers(item.question) for item in seen}


def test_the_unseen_split_is_not_a_grpo_source():
    with pytest.raises(UserError) as caught:
        load_prompts(["rg:gsm-symbolic-unseen#3"], SEED)
    message = str(caught.value)
    assert "\n" not in message and "cannot be trained on; train on rg:gsm-symbolic" in message
