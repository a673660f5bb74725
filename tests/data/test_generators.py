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
        "leg_counting",
        "products",
        "gcd",
        "lcm",
        "prime_factorization",
        "count_bits",
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


MIXED_TASKS = ["leg_counting", "products", "gcd", "lcm", "prime_factorization", "count_bits"]


@pytest.mark.parametrize("task", MIXED_TASKS)
def test_reasoning_gyms_checker_accepts_the_boxed_gold(task):
    # What evaluation grades with: the gold boxed in a training reply must score full marks, or training would
    # teach a form the benchmark counts wrong (prime factors are written "2 × 3").
    import reasoning_gym

    from mathtune import sets

    spec = sets.RG_TASKS[task]
    checker = reasoning_gym.create_dataset(spec.rg_name, seed=0, size=1, **dict(spec.config))
    for item in generators.eval_items(task, 20, seed=SEED):
        assert checker.score_answer(item["answer"], item["entry"]) == 1.0, item


def _steps(task: str) -> list[str]:
    return [row.messages[1]["content"] for row in generators.generate(task, 40, seed=SEED)]


def test_every_worked_step_is_true_arithmetic():
    # Each "a * b = c", "a / b = c" and "a = q * b + r" line a worked reply shows is checked by computing it: a
    # wrong step in training data teaches wrong arithmetic.
    checked = 0
    for task in ("leg_counting", "products", "gcd", "lcm", "prime_factorization"):
        for body in _steps(task):
            for a, b, c in re.findall(r"\b(\d+) \* (\d+) = (\d+)(?= legs|\n)", body):
                assert int(a) * int(b) == int(c), body
                checked += 1
            for a, q, b, r in re.findall(r"(?:^|\n|: |; )(\d+) = (\d+) \* (\d+) \+ (\d+)", body):
                assert int(a) == int(q) * int(b) + int(r) and int(r) < int(b), body
                checked += 1
            for a, b, c in re.findall(r"(?<!\* )\b(\d+) / (\d+) = (\d+)", body):
                assert int(a) == int(b) * int(c), body
                checked += 1
    assert checked > 300


def test_worked_replies_reach_their_answer():
    split = 0
    for body in _steps("products"):
        a, b = map(int, re.match(r"(\d+) \* (\d+) = ", body).groups())
        pairs = [tuple(map(int, pair)) for pair in re.findall(r"(\d+) \* (\d+)", body.split(" = ")[1])]
        if len(pairs) > 1:  # a split factor: its parts add up to it and the other factor stays
            split += 1
            xs, ys = zip(*pairs, strict=True)
            assert (set(xs) == {a} and sum(ys) == b) or (set(ys) == {b} and sum(xs) == a), body
        assert body.endswith(f"{{{a * b}}}.")
    assert split > 10
    for body in _steps("leg_counting"):
        legs = [int(n) for n in re.findall(r"have \d+ \* \d+ = (\d+) legs", body)]
        assert re.search(rf"= {sum(legs)} legs\.\n\nThe answer is \\boxed\{{{sum(legs)}\}}", body), body
    for body in _steps("lcm"):
        shown = re.search(r"LCM = (\d+) \* (\d+) / (\d+) = (\d+) / \d+ = (\d+)\.", body)
        a, b, g, product, lcm = map(int, shown.groups())
        assert g == math.gcd(a, b) and product == a * b and lcm == a * b // g, body
    for body in _steps("count_bits"):
        number, binary, ones = re.match(r"(\d+) in binary is ([01]+), which has (\d+) ones", body).groups()
        assert int(binary, 2) == int(number) and binary.count("1") == int(ones)
    for body in _steps("prime_factorization"):
        factors = BOXED.search(body).group(1).split(" × ")
        assert all(sympy_isprime(int(f)) for f in factors), body


def sympy_isprime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))


def test_generation_is_fast():
    import time

    start = time.perf_counter()
    generators.generate("syllogism", 500, seed=99)
    assert time.perf_counter() - start < 10
