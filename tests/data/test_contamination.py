"""Contamination check: exact and n-gram overlap, boilerplate, CJK, reports, drop and atomic writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mathtune.data import contamination
from mathtune.data.contamination import ContaminationReport, check, drop, tokens, write_jsonl
from mathtune.data.textmatch import match_text
from mathtune.data.types import Conversation
from mathtune.errors import UserError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"

LONG_Q = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. "
    "How much in dollars does she make every day at the farmers' market?"
)
OTHER_Q = "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?"


def chat(user: str, origin: str, answer: str = "The answer is \\boxed{1}.") -> Conversation:
    return Conversation(({"role": "user", "content": user}, {"role": "assistant", "content": answer}), origin)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Hello,   World!\n", "hello world"),
        ("What is 3 - 4/5?", "what is 3 - 4/5"),
        ("“Quoted” text… here.", "quoted text here"),
        ("Ｆｕｌｌwidth　ＡＢＣ", "fullwidth abc"),
    ],
)
def test_match_text(text, normal):
    assert match_text(text) == normal


def test_cjk_text_is_split_into_characters():
    assert tokens("妈咪买了3盒茶叶，一共多少？") == [
        "妈",
        "咪",
        "买",
        "了",
        "3",
        "盒",
        "茶",
        "叶",
        "一",
        "共",
        "多",
        "少",
    ]
    assert tokens("x+1 等于 5") == ["x+1", "等", "于", "5"]


def test_exact_match_ignores_case_spacing_and_punctuation():
    report = check([chat(LONG_Q.upper().replace(" ", "  "), "a.jsonl:1")], {"gsm8k": [OTHER_Q, LONG_Q]})
    (overlap,) = report.overlaps
    assert (overlap.origin, overlap.benchmark, overlap.item, overlap.kind) == ("a.jsonl:1", "gsm8k", 1, "exact")
    assert overlap.coverage == 1.0


def test_ngram_overlap_inside_longer_text():
    row = chat(f"Here is a problem. {LONG_Q} Please think step by step.", "a.jsonl:3")
    (overlap,) = check([row, chat(OTHER_Q[:40], "a.jsonl:4")], {"gsm8k": [LONG_Q]}).overlaps
    assert overlap.kind == "ngram" and overlap.origin == "a.jsonl:3"
    assert overlap.shared == len(tokens(LONG_Q)) - 13 + 1
    assert overlap.coverage == 1.0


def test_a_shared_13_gram_counts_but_12_words_do_not():
    words = LONG_Q.split()
    assert check([chat(" ".join(["Intro"] + words[5:18] + ["outro"]), "r")], [LONG_Q]).overlaps[0].shared == 1
    assert not check([chat(" ".join(["Intro"] + words[5:17] + ["outro"]), "r")], [LONG_Q]).overlaps
    assert check([chat(" ".join(words[5:17]), "r")], [LONG_Q], n=8).overlaps[0].shared == 5


def test_short_questions_are_matched_whole_but_not_inside_a_formula():
    questions = {"rg:arithmetic": ["Calculate 5 * 0.", "Calculate -3 + 7."]}
    rows = [
        chat("Calculate 5 * 0.\n\nPlease reason step by step.", "inside"),
        chat("Calculate 5 * 0 + 7.", "longer formula"),
        chat("calculate -3 + 7", "exact"),
        chat("Calculate 6 * 0.", "different"),
    ]
    report = check(rows, questions)
    assert {(o.origin, o.kind, o.item) for o in report.overlaps} == {("inside", "ngram", 0), ("exact", "exact", 1)}


def test_boilerplate_shared_by_many_questions_is_ignored():
    preamble = "A very special island is inhabited only by knights and knaves who always tell the truth or lie."
    questions = [f"{preamble} You meet person number {i} who says something quite different today." for i in range(40)]
    row = chat(f"{preamble} You meet a stranger with a brand new puzzle to solve.", "train:1")
    assert not check([row], {"rg:knights_knaves": questions}).overlaps
    # With few questions nothing counts as boilerplate.
    assert check([row], {"tiny": questions[:3]}).overlaps[0].items == 3


def test_chinese_questions_use_character_ngrams():
    question = json.loads((FIXTURES / "cmath.jsonl").read_text(encoding="utf-8").splitlines()[1])["question"]
    copied = chat(f"请回答下面的问题：{question}谢谢", "zh:1")
    unrelated = chat("小明有5个苹果，他又买了3个，现在一共有多少个苹果？", "zh:2")
    report = check([copied, unrelated], {"cmath": [question]})
    assert [(o.origin, o.kind) for o in report.overlaps] == [("zh:1", "ngram")]
    assert report.overlaps[0].coverage == 1.0


def test_response_only_rows_use_their_whole_text():
    row = Conversation(({"role": "assistant", "content": f"Joke: {LONG_Q} Ha."},), "ruozhiba[0]")
    assert check([row], [LONG_Q]).overlaps[0].benchmark == "eval"


def test_report_drop_and_serialisation():
    train = [chat(LONG_Q, "a:1"), chat(OTHER_Q, "a:2"), chat("Unrelated words about nothing much.", "a:3")]
    report = check(train, {"gsm8k": [LONG_Q], "svamp": [OTHER_Q, "Each pack of dvds costs 76 dollars."]})
    assert isinstance(report, ContaminationReport)
    assert report.contaminated_origins == {"a:1", "a:2"}
    assert [row.origin for row in drop(train, report)] == ["a:3"]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["rows_checked"] == 3 and data["contaminated_rows"] == 2
    assert data["questions"] == {"gsm8k": 1, "svamp": 2}
    assert {o["benchmark"] for o in data["overlaps"]} == {"gsm8k", "svamp"}
    text = report.to_text()
    assert "3 training rows" in text and "2 rows overlap: 2 exact" in text and "a:1 ~ gsm8k[0] (exact)" in text
    assert "no overlap found" in check(train[2:], [LONG_Q]).to_text()


def test_rows_per_benchmark_counts_exact_and_ngram_rows_of_each_overlapped_benchmark():
    train = [chat(LONG_Q, "a:1"), chat(f"Asked before: {LONG_Q} Now twice.", "a:2"), chat(OTHER_Q, "a:3"),
             chat("Unrelated words about nothing much.", "a:4")]
    report = check(train, {"gsm8k": [LONG_Q], "svamp": [OTHER_Q], "math500": ["What is the area of a circle?"]})
    assert report.rows_per_benchmark() == {"gsm8k": (1, 1), "svamp": (1, 0)}
    assert check(train[3:], [LONG_Q]).rows_per_benchmark() == {}


def test_one_overlap_per_row_and_benchmark():
    questions = [LONG_Q, LONG_Q.replace("16 eggs", "17 eggs"), OTHER_Q]
    (overlap,) = check([chat(LONG_Q, "r")], {"gsm8k": questions}).overlaps
    assert (overlap.item, overlap.kind, overlap.items) == (0, "exact", 2)


def test_bad_ngram_size():
    with pytest.raises(UserError, match="n-gram size"):
        check([], [LONG_Q], n=0)


def test_fast_enough_for_ten_thousand_rows():
    questions = [
        f"Question {i}: how many apples does farmer number {i} keep after selling {i * 3} of them?" for i in range(1300)
    ]
    train = [
        chat(f"Row {i}: a farmer sells {i} pears and {i + 1} plums at a market stall every Sunday.", f"r{i}")
        for i in range(10000)
    ]
    start = time.perf_counter()
    report = check(train, {"set": questions})
    assert time.perf_counter() - start < 20
    assert not report.overlaps


def test_write_jsonl_is_atomic(tmp_path):
    target = tmp_path / "out" / "clean.jsonl"
    rows = [chat("What is 2 + 3?", "a:1", "5"), chat("算一算", "a:2", "好")]
    write_jsonl(rows, target)
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"messages": list(row.messages)} for row in rows]
    assert "算一算" in lines[1]

    broken = [rows[0], Conversation(({"role": "user", "content": object()},), "bad")]
    with pytest.raises(TypeError):
        write_jsonl(broken, target)
    assert target.read_text(encoding="utf-8").splitlines() == lines  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["clean.jsonl"]


def test_benchmark_questions():
    questions = contamination.benchmark_questions(["rg:syllogism", f"svamp={FIXTURES / 'svamp.jsonl'}"], data_seed=42)
    assert list(questions) == ["rg:syllogism", "svamp"]
    assert len(questions["rg:syllogism"]) == 1000
    assert questions["svamp"][0].startswith("There are 87 oranges")
