import re

import pytest

from mathtune.data.formats import (
    BadRows,
    FormatError,
    apply_columns,
    detect_format,
    parse_rows,
    prompt_messages,
    to_messages,
    with_default_system,
)
from mathtune.errors import DataError

U, A, S = "user", "assistant", "system"


def m(*pairs: tuple[str, str]) -> tuple[dict[str, str], ...]:
    return tuple({"role": r, "content": c} for r, c in pairs)


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": []}, "messages"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"query": "q", "response": "r"}, "swift"),
        ({"query": "q"}, "swift"),
        ({"response": "r"}, "response"),
        ({"text": "t"}, "response"),
        ({"question": "q", "answer": "a"}, None),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row) == fmt


@pytest.mark.parametrize(
    ("row", "fmt", "expected"),
    [
        ({"query": "q", "response": "r"}, "swift", m((U, "q"), (A, "r"))),
        ({"system": "s", "query": "q", "response": "r"}, "swift", m((S, "s"), (U, "q"), (A, "r"))),
        ({"system": None, "query": "q", "response": "r"}, "swift", m((U, "q"), (A, "r"))),
        (
            {"query": "q2", "response": "r2", "history": [["q1", "r1"]]},
            "swift",
            m((U, "q1"), (A, "r1"), (U, "q2"), (A, "r2")),
        ),
        ({"query": "q", "response": "r", "history": None}, "swift", m((U, "q"), (A, "r"))),
        (
            {"messages": [{"role": "human", "content": "q"}, {"role": "bot", "content": "r"}]},
            "messages",
            m((U, "q"), (A, "r")),
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q"},
                    {"role": "GPT", "content": "r"},
                ]
            },
            "messages",
            m((S, "s"), (U, "q"), (A, "r")),
        ),
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}]},
            "sharegpt",
            m((U, "q"), (A, "r")),
        ),
        (
            {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]},
            "sharegpt",
            m((U, "q"), (A, "r")),
        ),
        ({"instruction": "Add.", "input": "2 3", "output": "5"}, "alpaca", m((U, "Add.\n2 3"), (A, "5"))),
        ({"instruction": "Add 2 and 3.", "input": "", "output": "5"}, "alpaca", m((U, "Add 2 and 3."), (A, "5"))),
        ({"instruction": "", "input": "2+3", "output": "5"}, "alpaca", m((U, "2+3"), (A, "5"))),
        ({"system": "s", "instruction": "i", "output": "o"}, "alpaca", m((S, "s"), (U, "i"), (A, "o"))),
        ({"response": "joke"}, "response", m((A, "joke"))),
        ({"text": "joke"}, "response", m((A, "joke"))),
        ({"system": "s", "response": "joke"}, "response", m((S, "s"), (A, "joke"))),
    ],
)
def test_shapes_to_messages(row, fmt, expected):
    assert to_messages(row, fmt, "f.jsonl", 3) == expected


@pytest.mark.parametrize(
    ("row", "fmt", "message"),
    [
        ({"response": "r"}, "swift", "field 'query' missing"),
        ({"query": 5, "response": "r"}, "swift", "field 'query' must be a string, got int"),
        ({"query": "q", "response": None}, "swift", "field 'response' must be a string, got null"),
        ({"query": "q", "response": "  "}, "swift", "field 'response' is empty"),
        ({"query": "q", "response": "r", "system": ["s"]}, "swift", "field 'system' must be a string, got list"),
        ({"query": "q", "response": "r", "history": "x"}, "swift", "field 'history' must be a list"),
        (
            {"query": "q", "response": "r", "history": [["a"]]},
            "swift",
            "field 'history[0]' must be a [query, response]",
        ),
        ({"query": "q", "response": "r", "history": [["a", 1]]}, "swift", "field 'history[0][1]' must be a string"),
        ({"messages": "hi"}, "messages", "field 'messages' must be a list of messages, got str"),
        ({"messages": []}, "messages", "field 'messages' is empty"),
        ({"messages": [5]}, "messages", "field 'messages[0]' must be an object, got int"),
        ({"messages": [{"content": "x"}]}, "messages", "field 'messages[0].role' missing"),
        ({"messages": [{"role": "user"}]}, "messages", "field 'messages[0].content' missing"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "unknown role 'tool'"),
        ({"messages": [{"role": "user", "content": 1}]}, "messages", "field 'messages[0].content' must be a string"),
        ({"messages": [{"role": "user", "content": "q"}]}, "messages", "the last message must be the assistant's"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "r"},
                ]
            },
            "messages",
            "a system message may only come first",
        ),
        ({"messages": [{"role": "assistant", "content": ""}]}, "messages", "field 'messages[0]' is empty"),
        (
            {"conversations": [{"from": "robot", "value": "x"}]},
            "sharegpt",
            "field 'conversations[0].from' has unknown role",
        ),
        ({"conversations": [{"value": "x"}]}, "sharegpt", "field 'conversations[0].from' missing"),
        ({"output": "o"}, "alpaca", "field 'instruction' missing"),
        ({"instruction": "", "input": "", "output": "o"}, "alpaca", "field 'instruction' is empty"),
        ({"instruction": "i", "output": 3}, "alpaca", "field 'output' must be a string, got int"),
        ({"instruction": "i", "input": 2, "output": "o"}, "alpaca", "field 'input' must be a string, got int"),
        ({"response": ""}, "response", "field 'response' is empty"),
        ({"text": 1.5}, "response", "field 'text' must be a string, got float"),
        ([1, 2], "swift", "row must be a JSON object, got list"),
    ],
)
def test_bad_rows_name_file_line_and_field(row, fmt, message):
    with pytest.raises(DataError) as exc:
        to_messages(row, fmt, "data/x.jsonl", 7)
    assert str(exc.value).startswith("data/x.jsonl:7: ")
    assert message in str(exc.value)


def test_columns_rename_before_detection():
    row = apply_columns({"question": "q", "answer": "a", "id": 1}, {"question": "query", "answer": "response"})
    assert row == {"query": "q", "response": "a", "id": 1}
    parsed = parse_rows(
        [(1, {"question": "q", "answer": "a"})], "f", columns={"question": "query", "answer": "response"}
    )
    assert parsed.conversations[0].messages == m((U, "q"), (A, "a"))
    assert parsed.conversations[0].origin == "f:1"


def test_parse_rows_detects_from_first_row_and_reports_unknown_shape():
    with pytest.raises(FormatError) as exc:
        parse_rows([(2, {"question": "q", "answer": "a"})], "f.jsonl", skip_bad_rows=True)
    assert str(exc.value).startswith("f.jsonl:2: cannot tell the row format from its fields (answer, question)")
    assert "--columns" in str(exc.value)


def test_forced_format_applies_to_every_row():
    rows = [(1, {"query": "q", "response": "r"})]
    with pytest.raises(DataError, match="field 'instruction' missing"):
        parse_rows(rows, "f", fmt="alpaca")


def test_skip_bad_rows_counts_and_keeps_first_three_messages():
    rows = [(1, {"query": "q", "response": "r"})]
    rows += [(i, {"query": "q", "response": ""}) for i in range(2, 7)]
    rows += [(7, DataError("f", 7, "invalid JSON: Expecting value (column 1)")), (8, "text")]
    with pytest.raises(DataError, match="f:2: field 'response' is empty"):
        parse_rows(rows, "f")
    parsed = parse_rows(rows, "f", skip_bad_rows=True)
    assert len(parsed.conversations) == 1
    assert parsed.bad_rows.count == 7
    assert parsed.bad_rows.examples == [f"f:{i}: field 'response' is empty" for i in (2, 3, 4)]


def test_bad_rows_extend_keeps_three_examples():
    a, b = BadRows(), BadRows()
    for i in range(2):
        a.add(ValueError(f"a{i}"))
        b.add(ValueError(f"b{i}"))
    a.extend(b)
    assert a.count == 4 and a.examples == ["a0", "a1", "b0"]


def test_default_system_only_when_missing():
    plain = m((U, "q"), (A, "r"))
    assert with_default_system(plain, None) == plain
    assert with_default_system(plain, "be exact") == m((S, "be exact"), (U, "q"), (A, "r"))
    own = m((S, "mine"), (U, "q"), (A, "r"))
    assert with_default_system(own, "be exact") == own


@pytest.mark.parametrize(("row", "expected"), [
    ({"query": "q", "system": "s", "history": [["a", "b"]]},
     [("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "q")]),
    ({"query": "q", "response": "an answer is ignored"}, [("user", "q")]),
    ({"question": "q"}, [("user", "q")]),
    ({"instruction": "do", "input": "x"}, [("user", "do\nx")]),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, [("user", "hi")]),
    ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "hi"}]},
     [("system", "s"), ("user", "hi")]),
])
def test_prompt_messages_reads_every_training_shape_without_its_answer(row, expected):
    assert [(m["role"], m["content"]) for m in prompt_messages(row, "in.jsonl", 1)] == expected


@pytest.mark.parametrize(("row", "message"), [
    ({"foo": 1}, "in.jsonl:3: field 'query' missing"),
    ({"query": " "}, "in.jsonl:3: field 'query' is empty"),
    ([1], "in.jsonl:3: row must be a JSON object, got list"),
    ({"messages": []}, "in.jsonl:3: field 'messages' is empty"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "field 'messages' ends without a user turn to answer"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]},
     "a system message may only come first"),
    ({"query": "q", "history": [["only one"]]}, "field 'history[0]' must be a [query, response] pair"),
])
def test_prompt_messages_names_the_bad_field(row, message):
    with pytest.raises(DataError, match=re.escape(message)):
        prompt_messages(row, "in.jsonl", 3)
