"""Built-in reasoning-gym generators: formats, determinism and the held-out guarantee."""

from __future__ import annotations

import json
import math
import re

import pytest

from mathtune.data import generators
from mathtune.data.textmatch import match_text
from mathtune.errors import UserError

TASKS = generators.list_tasks()
SEED = 42  # one seed for most tests: held-out pools are cached per (task, seed), here and in the benchmark tests
BOXED = re.compile(r"The answer is \\boxed\{(.+)\}\.$")


def test_task_list_is_the_working_set():
    assert TASKS == [
        "gsm-symbolic",
        "arithmetic",
        "equations",
        "fractions",
        "knights_knaves",
        "syllogism",
        "propositional_logic",
        "number_sequence",
        "chain_sum",
    ]


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("gsm_symbolic", "gsm-symbolic"),
        ("GSM-Symbolic", "gsm-symbolic"),
        ("knights-knaves", "knights_knaves"),
        ("propositional-logic", "propositional_logic"),
        ("basic_arithmetic", "arithmetic"),
        ("fraction_simplification", "fractions"),
    ],
)
def test_task_spellings(spelling, canonical):
    assert generators.canonical_task(spelling) == canonical


def test_unknown_task_lists_known_ones():
    with pytest.raises(UserError, match="unknown task 'zebra_puzzles'.*gsm-symbolic.*syllogism"):
        generators.generate("zebra_puzzles", 3, 0)


@pytest.mark.parametrize("task", TASKS)
def test_rows_are_prompt_and_boxed_answer(task):
    rows = generators.generate(task, 20, seed=SEED)
    assert len(rows) == 20
    assert len({row.origin for row in rows}) == 20
    for row in rows:
        user, assistant = row.messages
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"].endswith("put your final answer within \\boxed{}.")
        assert row.origin.startswith(f"rg:{task}[")
        assert BOXED.search(assistant["content"]), assistant["content"]
        assert "####" not in assistant["content"]


@pytest.mark.parametrize("task", TASKS)
def test_boxed_answer_is_the_eval_gold(task):
    for item, row in zip(
        generators.eval_items(task, 10, seed=SEED), generators.generate(task, 10, seed=SEED, split="eval"), strict=True
    ):
        assert BOXED.search(row.messages[1]["content"]).group(1) == item["answer"]
        assert item["question"] in row.messages[0]["content"]
        assert row.origin == f"rg:{task}:eval[{item['index']}]"


def test_generation_is_deterministic_per_seed():
    first = generators.generate("arithmetic", 30, seed=11)
    assert first == generators.generate("arithmetic", 30, seed=11)
    assert first[:10] == generators.generate("arithmetic", 10, seed=11)
    assert first != generators.generate("arithmetic", 30, seed=12)


@pytest.mark.parametrize("task", TASKS)
def test_train_never_asks_an_eval_question(task):
    pool = generators.eval_items(task, generators.EVAL_POOL, seed=SEED)
    assert len(pool) == generators.EVAL_POOL
    held_out = {match_text(item["question"]) for item in pool}
    assert len(held_out) == len(pool)
    train = generators.generate(task, 400, seed=SEED)
    assert not {match_text(row.question().split("\n\nPlease reason")[0]) for row in train} & held_out


def test_gsm_symbolic_renamed_copies_are_held_out_too():
    # gsm-symbolic repeats problems with only names or nouns changed: the numbers identify the problem.
    numbers = {
        tuple(re.findall(r"\d+", item["question"])) for item in generators.eval_items("gsm-symbolic", 1000, SEED)
    }
    for row in generators.generate("gsm-symbolic", 400, seed=SEED):
        assert tuple(re.findall(r"\d+", row.question().split("\n\nPlease reason")[0])) not in numbers


def test_eval_items_are_a_fixed_pool_prefix():
    ten = generators.eval_items("syllogism", 10, seed=1)
    assert generators.eval_items("syllogism", 4, seed=1) == ten[:4]
    assert [item["index"] for item in ten] == list(range(10))
    assert ten != generators.eval_items("syllogism", 10, seed=2)
    json.dumps(generators.eval_items("knights_knaves", 5, seed=SEED))  # entries hold numpy strings upstream


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generators.eval_items("arithmetic", generators.EVAL_POOL + 1, 0), "at most 1000"),
        (lambda: generators.generate("arithmetic", -1, 0), ">= 0"),
        (lambda: generators.generate("arithmetic", 3, 0, split="test"), "unknown split"),
    ],
)
def test_bad_arguments_are_user_errors(call, message):
    with pytest.raises(UserError, match=message):
        call()


def test_gsm_response_is_the_worked_solution():
    row = generators.generate("gsm-symbolic", 1, seed=SEED)[0]
    body = row.messages[1]["content"]
    assert body.count("\n") >= 3 and "=" in body
    assert not re.search(r"\d\.0\b", body)  # "14.0 eggs" reads as "14 eggs"


def test_equation_steps_are_correct_arithmetic():
    for row in generators.generate("equations", 50, seed=SEED):
        body = row.messages[1]["content"]
        equation = re.match(r"We solve (.+) for (\w)\.", body)
        answer = int(BOXED.search(body).group(1))
        lhs, rhs = equation.group(1).split(" = ")
        assert eval(lhs.replace(equation.group(2), f"({answer})")) == int(rhs)
        division = re.search(r"= (-?\d+)/\(?(-?\d+)\)? = (-?\d+)\.", body)
        if division:
            assert int(division.group(1)) / int(division.group(2)) == int(division.group(3)) == answer


def test_fraction_steps_use_the_gcd():
    for row in generators.generate("fractions", 30, seed=SEED):
        body = row.messages[1]["content"]
        num, den, gcd = map(int, re.search(r"divisor of (\d+) and (\d+) is (\d+)", body).groups())
        assert gcd == math.gcd(num, den)
        simple = re.search(rf"{num}/{den} = (\d+)/(\d+)", body)
        assert math.gcd(*map(int, simple.groups())) == 1


def test_generation_is_fast():
    import time

    start = time.perf_counter()
    generators.generate("syllogism", 500, seed=99)
    assert time.perf_counter() - start < 10
