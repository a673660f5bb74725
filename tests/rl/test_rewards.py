"""GRPO's rewards: accuracy and format through strict grading, hedges that must earn nothing, plugins, gold rows."""

from __future__ import annotations

import pytest

from mathtune.errors import DataError, UserError
from mathtune.evaluate.benchmarks import BenchItem
from mathtune.rl.prompts import gold_answer, row_prompt
from mathtune.rl.rewards import Prompt, accuracy, format_reward, resolve_rewards

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
PROMPT = Prompt(({"role": "user", "content": QUESTION},), BenchItem("q", QUESTION, "7"), "math", "test:1")

CASES = [  # (completion, accuracy, format)
    ("3 + 4 = 7. The answer is \\boxed{7}.", 1.0, 1.0),
    ("\\boxed{7} and again \\boxed{7}", 1.0, 1.0),  # the same box repeated is one answer
    ("The answer is \\boxed{8}.", 0.0, 1.0),
    ("\\boxed{7} or \\boxed{8}", 0.0, 0.0),  # several different boxes
    ("\\boxed{1} \\boxed{2} \\boxed{3} \\boxed{4} \\boxed{5} \\boxed{6} \\boxed{7}", 0.0, 0.0),
    ("1 2 3 4 5 6 7 8 9 10", 0.0, 0.0),  # a list of every number, no box
    ("\\boxed{1, 2, 3, 4, 5, 6, 7, 8}", 0.0, 1.0),  # every number inside one box
    ("\\boxed{7}. Wait, no, that is wrong.", 0.0, 0.0),  # a retracted answer
    (QUESTION, 0.0, 0.0),  # the question restated
    (f"{QUESTION} \\boxed{{3}}", 0.0, 1.0),
    ("The answer is 7.", 0.0, 0.0),  # right, but without the box strict mode asks for
    ("", 0.0, 0.0),
]


@pytest.mark.parametrize(("completion", "right", "formatted"), CASES)
def test_accuracy_and_format_rewards(completion, right, formatted):
    assert accuracy([completion], [PROMPT]) == [right]
    assert format_reward([completion], [PROMPT]) == [formatted]


def test_rg_logic_task_uses_reasoning_gyms_checker():
    from mathtune.rl.prompts import load_prompts

    (prompt,) = load_prompts(["rg:syllogism#1"], seed=42)
    assert prompt.checker == "rg" and "entry" in prompt.item.meta
    wrong = "No" if prompt.item.gold == "Yes" else "Yes"
    assert accuracy([f"\\boxed{{{prompt.item.gold}}}", f"\\boxed{{{wrong}}}"], [prompt, prompt]) == [1.0, 0.0]


def test_plugin_rewards_load_only_from_a_named_file(tmp_path):
    plugin = tmp_path / "mine.py"
    plugin.write_text("def length(completions, **kw):\n    return [len(c) for c in completions]\n"
                      "def broken(completions, **kw):\n    return [1.0]\n")
    (name, fn), = resolve_rewards(["length"], [str(plugin)])
    assert name == "length" and fn(["ab", "abcd"], [PROMPT, PROMPT]) == [2.0, 4.0]
    with pytest.raises(UserError, match="needs --external_plugins"):
        resolve_rewards(["length"])
    (_, broken), = resolve_rewards(["broken"], [str(plugin)])
    with pytest.raises(UserError, match="returned 1 values for 2 completions"):
        broken(["a", "b"], [PROMPT, PROMPT])


@pytest.mark.parametrize(("row", "gold"), [
    ({"question": "q", "answer": "Natalia sold 48/2 = 24 clips.\n#### 1,072"}, "1072"),
    ({"problem": "q", "solution": "So it is $\\boxed{\\frac{1}{2}}$."}, "\\frac{1}{2}"),
    ({"query": "q", "response": "The answer is \\boxed{5}."}, "5"),
    ({"question": "q", "answer": 12}, "12"),
    ({"question": "q", "answer": "Yes"}, "Yes"),
    ({"question": "q", "answer": "a long worked solution\nwith no marked final answer at all"}, None),
    ({"question": "q"}, None),
])
def test_gold_answers(row, gold):
    assert gold_answer(row) == gold


def test_row_without_gold_names_file_and_line():
    with pytest.raises(DataError, match=r"^data.jsonl:3: no gold answer"):
        row_prompt({"question": "Tell me a story."}, "data.jsonl", 3)
    prompt = row_prompt({"problem": "What is 2+2?", "solution": "\\boxed{4}"}, "data.jsonl", 1)
    assert prompt.messages[-1] == {"role": "user", "content": "What is 2+2?"} and prompt.item.gold == "4"
