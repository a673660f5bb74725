"""Fuzzing the readers and parsers: whatever the input, only a one-line UserError (or DataError) comes out."""

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mathtune.data.formats import FORMATS, parse_rows
from mathtune.data.local import load_local
from mathtune.data.sources import parse_spec
from mathtune.errors import UserError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(
    ["query", "response", "system", "history", "messages", "conversations", "instruction", "input", "output", "text",
     "role", "content", "from", "value"]
)  # fmt: skip
ROW_VALUES = st.recursive(
    st.none() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=10,
)
ROWS = st.dictionaries(KEYS, ROW_VALUES, max_size=5) | JSON


def _load(suffix: str, data: bytes, skip: bool):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{suffix}"
        path.write_bytes(data)
        try:
            return load_local(path, skip_bad_rows=skip)
        except UserError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path))
            return None


def _check_valid(parsed) -> None:
    for conversation in parsed.conversations:
        roles = [m["role"] for m in conversation.messages]
        assert roles[-1] == "assistant" and "system" not in roles[1:]
        assert all(isinstance(m["content"], str) for m in conversation.messages)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=60) | JSON.map(lambda v: json.dumps(v).encode()), max_size=6), skip=st.booleans()
)
def test_jsonl_of_arbitrary_lines(lines, skip):
    parsed = _load(".jsonl", b"\n".join(lines), skip)
    if parsed is not None:
        _check_valid(parsed)


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=200), suffix=st.sampled_from([".json", ".csv", ".jsonl", ".parquet"]), skip=st.booleans()
)
def test_arbitrary_bytes_in_any_file_type(data, suffix, skip):
    parsed = _load(suffix, data, skip)
    if parsed is not None:
        _check_valid(parsed)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(ROWS, min_size=1, max_size=4), fmt=st.sampled_from([None, *FORMATS]), skip=st.booleans())
def test_arbitrary_rows_in_every_format(rows, fmt, skip):
    try:
        parsed = parse_rows(list(enumerate(rows, start=1)), "f.jsonl", fmt=fmt, skip_bad_rows=skip)
    except UserError as e:
        assert str(e).startswith("f.jsonl:") and "\n" not in str(e).split(": ", 1)[0]
        return
    _check_valid(parsed)
    assert len(parsed.conversations) + parsed.bad_rows.count == len(rows)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_any_spec_text(text):
    try:
        spec = parse_spec(text)
    except UserError:
        return
    assert spec.n is None or spec.n >= 1


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=15).filter(str.strip)
TURNS = st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3)


@settings(max_examples=100, deadline=None)
@given(system=st.none() | TEXT, turns=TURNS)
def test_every_shape_round_trips(system, turns):
    expected = ([{"role": "system", "content": system}] if system else []) + [
        m for q, r in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": r})
    ]
    *history, (query, response) = turns
    rows = {
        "messages": {"messages": expected},
        "sharegpt": {"conversations": [{"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]),
                                        "value": m["content"]} for m in expected]},
        "swift": {"system": system, "query": query, "response": response, "history": [list(p) for p in history]},
    }  # fmt: skip
    for name, row in rows.items():
        parsed = parse_rows([(1, json.loads(json.dumps(row)))], "f")
        assert list(parsed.conversations[0].messages) == expected, name


HUB_KEYS = st.sampled_from(["title", "content", "abs", "input", "output", "answer", "question", "instruction", "query"])
HUB_ROWS = st.dictionaries(HUB_KEYS, st.none() | st.integers() | st.booleans() | st.text(max_size=10), max_size=4)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(HUB_ROWS | JSON, min_size=1, max_size=4))
def test_named_hub_mappings_skip_and_count_anything(rows):
    from mathtune.data.hub import NAMED_SETS, map_rows

    for hub_set in (h for h in NAMED_SETS if h.mapper is not None):  # the others detect shapes like local files
        parsed = map_rows(hub_set, list(enumerate(rows, start=1)), hub_set.name)
        assert len(parsed.conversations) + parsed.bad_rows.count == len(rows)
        _check_valid(parsed)
