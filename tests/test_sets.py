"""The set registry: one entry per dataset, and the held-out structures (gsm-symbolic's templates,
propositional_logic's 4-variable problems) kept out of every training row."""

from __future__ import annotations

import pytest
import reasoning_gym
from hypothesis import given, settings
from hypothesis import strategies as st

from mathtune import sets
from mathtune.data import generators
from mathtune.data.sources import load_source, parse_spec
from mathtune.errors import UserError

HELD_OUT_DRAWN = [0, 5, 10, 15, 20, 25, 30, 40, 45, 50, 55, 60, 70, 75, 80, 85, 95]  # as documented in mathtune.sets


def test_gsm8k_is_registered_once_with_both_splits():
    assert [named.name for named in sets.NAMED_SETS].count("gsm8k") == 1
    train, test = sets.find_set("openai/gsm8k", "train"), sets.find_set("GSM8K", "test")
    assert train is test and (train.train, train.test, train.hf_id) == ("train", "test", "openai/gsm8k")
    assert sets.find_set("math500", "train") is None  # a benchmark, not a training source
    assert sets.find_set("ruozhiba", "test") is None


def test_benchmark_names_put_each_unseen_split_after_its_task():
    names = sets.benchmark_names()
    assert names[:2] == ["rg:gsm-symbolic", "rg:gsm-symbolic-unseen"]
    assert [n for n in names if n.endswith("-unseen")] == ["rg:gsm-symbolic-unseen", "rg:propositional_logic-unseen"]
    assert names[names.index("rg:propositional_logic") + 1] == "rg:propositional_logic-unseen"
    assert names[-5:] == ["champ", "gsm8k", "math500", "cmath", "svamp"]


def test_rg_names():
    assert sets.rg_benchmark("gsm_symbolic-unseen") == ("gsm-symbolic", True)
    assert sets.rg_benchmark("basic_arithmetic") == ("arithmetic", False)
    assert sets.rg_benchmark("propositional-logic-unseen") == ("propositional_logic", True)
    with pytest.raises(UserError, match="unseen splits exist only for gsm-symbolic, propositional_logic"):
        sets.rg_benchmark("arithmetic-unseen")
    with pytest.raises(UserError, match="unknown task 'zebra'"):
        sets.rg_task("zebra")


def _drawn_templates() -> list[int]:
    dataset = reasoning_gym.create_dataset("gsm_symbolic", seed=0, size=20_000)
    return sorted(set(dataset.task_indices))


def test_held_out_templates_are_a_fifth_of_those_drawn():
    drawn = _drawn_templates()
    held = [t for t in drawn if t in sets.GSM_SYMBOLIC_HELD_OUT]
    assert held == HELD_OUT_DRAWN
    assert 0.15 <= len(held) / len(drawn) <= 0.25


def _templates(split: str, seed: int, indices: list[int]) -> set[int]:
    # Rebuilt from reasoning-gym itself, not from mathtune's filter.
    dataset = reasoning_gym.create_dataset(
        "gsm_symbolic", seed=generators._derived_seed("gsm-symbolic", split, seed), size=100_000
    )
    return {dataset.task_indices[i] for i in indices}


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 2**31 - 1))
def test_no_training_row_comes_from_a_held_out_template(n, seed):
    rows = generators.generate("gsm-symbolic", n, seed)
    dataset = reasoning_gym.create_dataset(
        "gsm_symbolic", seed=generators._derived_seed("gsm-symbolic", "train", seed), size=100_000
    )
    indices = [int(row.origin.rpartition("[")[2].rstrip("]")) for row in rows]
    for row, idx in zip(rows, indices, strict=True):  # the origin really is that item
        assert row.messages[0]["content"].startswith(dataset[idx]["question"])
    assert len(rows) == n
    assert not _templates("train", seed, indices) & sets.GSM_SYMBOLIC_HELD_OUT


@pytest.mark.parametrize("unseen", [False, True])
def test_eval_pools_split_by_template(unseen):
    items = generators.eval_items("gsm-symbolic", 300, seed=7, unseen=unseen)
    indices = [item["entry"]["metadata"]["source_index"] for item in items]
    templates = _templates("eval", 7, indices)
    assert templates == {item["structure"] for item in items}
    assert (templates <= sets.GSM_SYMBOLIC_HELD_OUT) if unseen else not templates & sets.GSM_SYMBOLIC_HELD_OUT
    assert len({item["question"] for item in items}) == 300


def test_an_unseen_split_is_not_a_training_source():
    for attempt in (
        lambda: generators.generate("gsm-symbolic-unseen", 3, 0),
        lambda: load_source(parse_spec("rg:gsm-symbolic-unseen#3")),
    ):
        with pytest.raises(UserError) as caught:
            attempt()
        message = str(caught.value)
        assert "\n" not in message and "cannot be trained on; train on rg:gsm-symbolic" in message
    with pytest.raises(UserError, match="has no held-out structures"):
        generators.eval_items("arithmetic", 1, 0, unseen=True)


def _variables(split: str, seed: int, indices: list[int]) -> list[int]:
    # Rebuilt from reasoning-gym itself, not from mathtune's filter.
    dataset = reasoning_gym.create_dataset(
        "propositional_logic", seed=generators._derived_seed("propositional_logic", split, seed), size=100_000
    )
    return [len(dataset[i]["metadata"]["variables"]) for i in indices]


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**31 - 1))
def test_no_propositional_logic_training_row_has_the_held_out_size(n, seed):
    rows = generators.generate("propositional_logic", n, seed)
    indices = [int(row.origin.rpartition("[")[2].rstrip("]")) for row in rows]
    assert len(rows) == n
    sizes = _variables("train", seed, indices)
    assert set(sizes) <= {2, 3} and not set(sizes) & sets.PROPOSITIONAL_LOGIC_HELD_OUT


@pytest.mark.parametrize("unseen", [False, True])
def test_propositional_logic_pools_split_by_number_of_variables(unseen):
    items = generators.eval_items("propositional_logic", 200, seed=7, unseen=unseen)
    sizes = _variables("eval", 7, [item["entry"]["metadata"]["source_index"] for item in items])
    assert sizes == [item["structure"] for item in items]
    assert set(sizes) == ({4} if unseen else {2, 3})
    assert len({item["question"] for item in items}) == 200
