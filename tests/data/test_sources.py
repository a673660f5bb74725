import sys
import types

import pytest

import mathtune.data
from mathtune.data import sources
from mathtune.data.sources import (
    DEFAULT_GENERATED_ROWS,
    SourceSpec,
    load_source,
    parse_spec,
    source_kind,
)
from mathtune.data.types import Conversation
from mathtune.errors import UserError


@pytest.fixture
def fake_generators(monkeypatch):
    calls = []

    def generate(task, n, seed, split="train"):
        calls.append((task, n, seed, split))
        return [
            Conversation(
                ({"role": "user", "content": f"{task} {i}?"}, {"role": "assistant", "content": str(i)}),
                f"rg:{task}[{i}]",
            )
            for i in range(n)
        ]

    module = types.SimpleNamespace(generate=generate, list_tasks=lambda: ["basic_arithmetic", "gsm-symbolic"])
    monkeypatch.setitem(sys.modules, "mathtune.data.generators", module)
    monkeypatch.setattr(mathtune.data, "generators", module, raising=False)
    return calls


@pytest.mark.parametrize(
    ("text", "name", "n"),
    [
        ("ruozhiba#5000", "ruozhiba", 5000),
        ("AI-ModelScope/blossom-math-v2#5000", "AI-ModelScope/blossom-math-v2", 5000),
        ("/content/HJ_math.jsonl", "/content/HJ_math.jsonl", None),
        ("rg:basic_arithmetic#1", "rg:basic_arithmetic", 1),
        ("  HF::org/name:sub#20 ", "HF::org/name:sub", 20),
        ("odd#name#3", "odd#name", 3),
    ],
)
def test_parse_spec(text, name, n):
    spec = parse_spec(text)
    assert (spec.name, spec.n) == (name, n)
    assert spec.text == text.strip()


@pytest.mark.parametrize("text", ["x#0", "x#-1", "x#abc", "x#", "x#1.5", "x#²"])
def test_bad_count_names_the_spec(text):
    with pytest.raises(UserError) as exc:
        parse_spec(text)
    assert str(exc.value).startswith(f"dataset '{text}': the part after '#' must be a positive whole number")


def test_empty_and_nameless_specs():
    with pytest.raises(UserError, match="--dataset: empty dataset name"):
        parse_spec("  ")
    with pytest.raises(UserError, match="missing the dataset name"):
        parse_spec("#5")


def test_existing_path_with_hash_is_taken_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "set#2.jsonl").write_text('{"response": "r"}\n')
    assert parse_spec("set#2.jsonl") == SourceSpec("set#2.jsonl", "set#2.jsonl", None)
    assert len(load_source(parse_spec("set#2.jsonl")).conversations) == 1


def test_dispatch(fixtures, fake_generators):
    assert parse_spec(str(fixtures / "swift.jsonl")).kind == "local"
    assert parse_spec(f"{fixtures / 'folder'}#2").kind == "local"
    assert parse_spec("rg:basic_arithmetic#5").kind == "generator"
    assert parse_spec("gsm8k").kind == "hub"
    assert parse_spec("HF::org/name").kind == "hub"


def test_unknown_names(tmp_path):
    with pytest.raises(UserError) as exc:
        source_kind(parse_spec("someone/some-set#10").name)
    assert str(exc.value) == (
        "dataset 'someone/some-set' is neither a file, a folder, a built-in set (rg:TASK, see `mathtune data list`) "
        "nor a known hub set (for any other Hugging Face set write HF::org/name)"
    )
    with pytest.raises(UserError, match="dataset path '/content/HJ_math.jsonl' does not exist"):
        source_kind("/content/HJ_math.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        source_kind("data.parquet")


def test_local_source_uses_format_options(fixtures):
    parsed = load_source(parse_spec(str(fixtures / "qa.csv")), columns={"question": "query", "answer": "response"})
    assert len(parsed.conversations) == 3


def test_generator_source(fake_generators):
    parsed = load_source(parse_spec("rg:basic_arithmetic#5"), seed=7, extra_rows=1)
    assert fake_generators == [("basic_arithmetic", 6, 7, "train")]
    assert len(parsed.conversations) == 6 and parsed.bad_rows.count == 0
    load_source(parse_spec("rg:gsm-symbolic"))
    assert fake_generators[-1] == ("gsm-symbolic", DEFAULT_GENERATED_ROWS, 42, "train")
    assert sources.list_generator_tasks() == ["basic_arithmetic", "gsm-symbolic"]
    with pytest.raises(UserError, match="name a task after rg:"):
        load_source(parse_spec("rg:"))


def test_missing_generators_module_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mathtune.data.generators", None)
    monkeypatch.delattr(mathtune.data, "generators", raising=False)
    with pytest.raises(UserError, match=r"built-in generators \(rg:TASK\) are not available"):
        load_source(parse_spec("rg:basic_arithmetic#2"))


def test_named_set_read_from_a_local_copy_uses_its_own_mapping(fixtures):
    copy = fixtures / "hub" / "blossom_math_v2.jsonl"
    spec = parse_spec(f"AI-ModelScope/blossom-math-v2={copy}#2")
    assert (spec.kind, spec.name, spec.n, spec.local_path) == ("hub", "AI-ModelScope/blossom-math-v2", 2, str(copy))
    parsed = sources.load_source(spec)
    first = parsed.conversations[0].messages
    assert first[-1]["content"] == "5 + 3 = 8，所以一共有8个苹果。\n\nAnswer: 8"
    assert parsed.bad_rows.count == 1  # the row without an output, counted, not silently dropped


@pytest.mark.parametrize("text, needle", [
    ("not-a-set={copy}", "is not a named hub set"),
    ("AI-ModelScope/blossom-math-v2=/nowhere/copy.jsonl", "local copy '/nowhere/copy.jsonl' does not exist"),
])
def test_bad_local_copy_specs(fixtures, text, needle):
    with pytest.raises(UserError, match=needle):
        parse_spec(text.format(copy=fixtures / "hub" / "blossom_math_v2.jsonl"))
