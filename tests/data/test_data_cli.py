import argparse
import json
import sys
import types

import pytest

import mathtune.data
from mathtune.data import cli
from mathtune.data.cli import histogram, percentile, render_marked
from mathtune.data.local import load_local
from mathtune.data.tokenize import IGNORE_INDEX, Encoded
from mathtune.data.types import Conversation
from mathtune.errors import UserError


def _run(argv: list[str], tokenizer=None) -> int:
    parser = argparse.ArgumentParser(prog="mathtune data")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv), tokenizer=tokenizer)


def test_preview_marks_trained_tokens(fixtures, chatml, capsys):
    assert _run(["preview", str(fixtures / "messages.jsonl"), "-n", "1", "--color", "never"], chatml) == 0
    out = capsys.readouterr().out
    assert f"── row 1 · {fixtures / 'messages.jsonl'}:1 · " in out
    assert "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 7 * 6?<|im_end|>\n" in out
    assert "<|im_start|>assistant\n[[42<|im_end|>\n]]" in out
    assert "row 2" not in out
    assert out.strip().endswith("1 of 2 rows shown; [[ ]] marks trained tokens")


def test_preview_header_counts_tokens(fixtures, chatml, capsys):
    _run(["preview", str(fixtures / "response.jsonl"), "--system", "Be kind.", "--color", "always"], chatml)
    out = capsys.readouterr().out
    from mathtune.data.tokenize import encode_conversation

    encoded = encode_conversation(
        chatml,
        [
            {"role": "system", "content": "Be kind."},
            {"role": "assistant", "content": "Every prime greater than 2 is odd."},
        ],
    )
    assert f"{len(encoded)} tokens, {encoded.num_trained} trained ──" in out
    assert "\x1b[32mEvery prime greater than 2 is odd.<|im_end|>\n\x1b[0m" in out


def test_render_marked_groups_runs(chatml):
    ids = chatml("ab cd", add_special_tokens=False)["input_ids"]
    encoded = Encoded(ids, [IGNORE_INDEX] + ids[1:])
    marked = render_marked(chatml, encoded)
    assert marked.count("[[") == 1 and marked.replace("[[", "").replace("]]", "") == "ab cd"


def test_preview_generates_only_the_rows_shown(chatml, capsys, monkeypatch):
    calls = []

    def generate(task, n, seed, split="train"):
        calls.append(n)
        return [Conversation(({"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}), "rg[0]")] * n

    fake = types.SimpleNamespace(generate=generate, list_tasks=lambda: ["basic_arithmetic"])
    monkeypatch.setitem(sys.modules, "mathtune.data.generators", fake)
    monkeypatch.setattr(mathtune.data, "generators", fake, raising=False)
    _run(["preview", "rg:basic_arithmetic#500", "-n", "2"], chatml)
    assert calls == [2]
    assert capsys.readouterr().out.count("── row") == 2
    with pytest.raises(UserError, match="-n: must be a positive number"):
        _run(["preview", "rg:basic_arithmetic", "-n", "0"], chatml)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 90, 4), (list(range(1, 101)), 99, 99), ([], 50, 0)],
)
def test_percentile_nearest_rank(values, p, expected):
    assert percentile(values, p) == expected


def test_histogram():
    text = histogram([0, 1, 2, 10, 10, 10, 19], bins=4, width=6)
    assert text.splitlines() == [
        "tokens per row",
        "  0-4 | ###### 3",
        "  5-9 | 0",
        "10-14 | ###### 3",
        "15-19 | ## 1",
    ]
    assert histogram([]) == "(no rows)"
    assert histogram([3]).splitlines()[1:] == ["0-0 | 0", "1-1 | 0", "2-2 | 0", "3-3 | " + "#" * 40 + " 1"]


def test_stats_table(fixtures, chatml, capsys):
    assert (
        _run(["stats", str(fixtures / "swift.jsonl"), str(fixtures / "response.jsonl"), "--max_length", "70"], chatml)
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["source", "rows", "mean", "p50", "p90", "p99", "max", ">", "70"]
    swift = [len(cli._encode(chatml, c, None)) for c in load_local(fixtures / "swift.jsonl").conversations]
    row = lines[2].split()
    assert row[1] == "3" and float(row[2]) == pytest.approx(sum(swift) / 3, abs=0.05)
    assert row[6] == str(max(swift)) and row[7] == str(sum(n > 70 for n in swift))
    assert lines[4].split()[:2] == ["all", "5"]
    assert "tokens per row" in lines


def test_check_reports_and_drops(fixtures, tmp_path, capsys, monkeypatch):
    from mathtune.data import contamination

    question = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    monkeypatch.setattr(
        contamination, "benchmark_questions", lambda names, data_seed=42: {names[0]: [question, "unrelated words"]}
    )
    train = [str(fixtures / "hub" / "gsm8k.jsonl"), str(fixtures / "swift.jsonl")]
    assert _run(["check", "--dataset_format", "swift", "--columns", '{"question": "query", "answer": "response"}',
                 "--train", *train, "--against", "gsm8k-test", "--ngram", "8"]) == 1  # fmt: skip
    out = capsys.readouterr().out
    assert "contamination check: 5 training rows" in out and "gsm8k.jsonl:1" in out

    dropped = tmp_path / "clean.jsonl"
    code = _run(["check", "--columns", '{"question": "query", "answer": "response"}', "--train", *train,
                 "--against", "gsm8k-test", "--drop", str(dropped)])  # fmt: skip
    assert code == 0
    assert "wrote 4 of 5 rows" in capsys.readouterr().out
    kept = load_local(dropped).conversations
    assert len(kept) == 4 and not any(question in c.question() for c in kept)
    assert json.loads(dropped.read_text().splitlines()[0])["messages"][0]["role"] == "user"
    with pytest.raises(UserError, match="--ngram"):
        _run(["check", "--train", *train, "--against", "x", "--ngram", "0"])


def test_list(capsys, monkeypatch):
    fake = types.SimpleNamespace(list_tasks=lambda: ["basic_arithmetic", "gsm-symbolic"])
    monkeypatch.setattr(mathtune.data, "generators", fake, raising=False)
    monkeypatch.setitem(sys.modules, "mathtune.data.generators", fake)
    assert _run(["list"]) == 0
    out = capsys.readouterr().out
    assert "basic_arithmetic, gsm-symbolic" in out
    assert "AI-ModelScope/blossom-math-v2  HF Azure99/blossom-math-v2" in out


def test_errors_are_user_errors(chatml):
    with pytest.raises(UserError, match="choose an action"):
        _run([])
    with pytest.raises(UserError, match="dataset 'x#0'"):
        _run(["preview", "x#0"], chatml)


def test_preview_takes_several_sources_as_stats_does(fixtures, chatml, capsys):
    messages, response = fixtures / "messages.jsonl", fixtures / "response.jsonl"
    assert _run(["preview", str(messages), str(response), "-n", "1", "--color", "never"], chatml) == 0
    out = capsys.readouterr().out
    first, second = out.index(f"== {messages} =="), out.index(f"== {response} ==")
    assert first < second
    assert f"── row 1 · {messages}:1 · " in out[first:second] and f"── row 1 · {response}:1 · " in out[second:]
    assert out[first:second].strip().endswith("1 of 2 rows shown; [[ ]] marks trained tokens")
    assert "row 2" not in out  # -n counts per source


def test_preview_checks_every_name_before_loading_any(fixtures, chatml, capsys):
    with pytest.raises(UserError, match="did you mean 'AI-ModelScope/blossom-math-v2'"):
        _run(["preview", str(fixtures / "messages.jsonl"), "blossom-math"], chatml)
    assert "row 1" not in capsys.readouterr().out
