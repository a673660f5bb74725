import json
import random
from collections import Counter

import pytest

from mathtune.data.config import DataArgs
from mathtune.data.mixing import build_dataset, draw, fit_length, val_count
from mathtune.data.tokenize import IGNORE_INDEX, Encoded
from mathtune.errors import UserError


def _rows(tmp_path, name: str, count: int, answer: str = "ok") -> str:
    path = tmp_path / name
    lines = [json.dumps({"query": f"{name} question {i}", "response": f"{answer} {i}"}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _line(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("total", "ratio", "expected"),
    [(100, 0.01, 1), (1000, 0.01, 10), (50, 0.01, 1), (1, 0.5, 0), (2, 0.9, 1), (100, 0.0, 0), (10, 0.25, 2)],
)
def test_val_count(total, ratio, expected):
    assert val_count(total, ratio) == expected


def test_draw_holds_out_validation_then_samples_without_replacement():
    val, train = draw(100, 30, 5, random.Random(0))
    assert len(val) == 5 and len(train) == 30
    assert not set(val) & set(train)
    assert len(set(train)) == 30


def test_draw_repeats_the_set_when_n_exceeds_it():
    val, train = draw(11, 25, 1, random.Random(0))
    counts = Counter(train)
    assert len(train) == 25 and set(counts) == set(range(11)) - set(val)
    assert sorted(counts.values()) == [2] * 5 + [3] * 5  # 10 rows twice, then 5 of them a third time


def test_fit_length_strategies():
    row = Encoded([1, 2, 3, 4, 5, 6], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 4, 5, 6])
    assert fit_length(row, 6, "delete") is row
    assert fit_length(row, 4, "delete") is None
    assert fit_length(row, 4, "truncation_left") == Encoded([3, 4, 5, 6], [IGNORE_INDEX, 4, 5, 6])
    assert fit_length(row, 4, "truncation_right") == Encoded([1, 2, 3, 4], [IGNORE_INDEX] * 3 + [4])
    assert fit_length(row, 3, "truncation_right") is None  # nothing left to train on


def test_build_mix_splits_samples_and_reports(tmp_path, chatml):
    a, b = _rows(tmp_path, "a.jsonl", 200), _rows(tmp_path, "b.jsonl", 30)
    args = DataArgs(dataset=(f"{a}#50", f"{b}#70"), split_dataset_ratio=0.05, max_length=512)
    built = build_dataset(args, chatml)
    report = {s.source: s for s in built.report.sources}
    ra, rb = report[f"{a}#50"], report[f"{b}#70"]
    assert (ra.available, ra.val, ra.taken, rb.available, rb.val, rb.taken) == (200, 10, 50, 30, 1, 70)
    assert len(built.train) == 120 and len(built.val) == 11
    # Validation rows never reach training, even when b's 29 remaining rows are repeated to make 70.
    val_origins = set(built.val_origins)
    assert not val_origins & set(built.train_origins)
    b_counts = Counter(o for o in built.train_origins if o.startswith(b))
    assert len(b_counts) == 29 and sum(b_counts.values()) == 70
    # Training rows of both sources are interleaved, validation rows are grouped per source.
    firsts = [o.startswith(a) for o in built.train_origins[:40]]
    assert any(firsts) and not all(firsts)
    assert all(o.startswith(a) for o in built.val_origins[:10])
    assert ra.train_tokens == sum(
        len(e) for e, o in zip(built.train, built.train_origins, strict=True) if o.startswith(a)
    )
    assert ra.share + rb.share == pytest.approx(1.0)
    for encoded in built.train:
        assert encoded.labels[-2:] == encoded.input_ids[-2:]  # the reply's <|im_end|> and newline are trained
        assert encoded.labels[0] == IGNORE_INDEX


def test_same_seed_same_mix_and_sources_are_independent(tmp_path, chatml):
    a, b = _rows(tmp_path, "a.jsonl", 300), _rows(tmp_path, "b.jsonl", 40)
    one = build_dataset(DataArgs(dataset=(f"{a}#20",)), chatml)
    again = build_dataset(DataArgs(dataset=(f"{a}#20",)), chatml)
    assert one.train == again.train and one.train_origins == again.train_origins
    other_seed = build_dataset(DataArgs(dataset=(f"{a}#20",), data_seed=1), chatml)
    assert set(other_seed.train_origins) != set(one.train_origins)
    with_b = build_dataset(DataArgs(dataset=(f"{a}#20", b)), chatml)
    assert {o for o in with_b.train_origins if o.startswith(a)} == set(one.train_origins)
    assert set(with_b.val_origins) >= set(one.val_origins)


def test_no_split_and_all_rows(tmp_path, chatml):
    a = _rows(tmp_path, "a.jsonl", 7)
    built = build_dataset(DataArgs(dataset=(a,), split_dataset_ratio=0), chatml)
    assert built.val == [] and sorted(map(_line, built.train_origins)) == list(range(1, 8))


def test_length_handling(tmp_path, chatml):
    short = _rows(tmp_path, "short.jsonl", 10)
    long = _rows(tmp_path, "long.jsonl", 10, answer="many words " * 40)
    lengths = [len(e) for e in build_dataset(DataArgs(dataset=(long,), split_dataset_ratio=0), chatml).train]
    limit = min(lengths) - 1

    deleted = build_dataset(DataArgs(dataset=(short, long), split_dataset_ratio=0, max_length=limit), chatml)
    report = {s.source: s for s in deleted.report.sources}
    gone = report[long]
    assert (gone.too_long, gone.dropped, gone.train_tokens, gone.share) == (10, 10, 0, 0)
    assert gone.max_tokens == max(lengths)
    assert len(deleted.train) == 10 and report[short].dropped == 0

    for strategy in ("truncation_left", "truncation_right"):
        cut = build_dataset(
            DataArgs(dataset=(long,), split_dataset_ratio=0, max_length=limit, truncation_strategy=strategy), chatml
        )
        assert len(cut.train) == 10 and all(len(e) == limit for e in cut.train)
        assert cut.report.sources[0].too_long == 10 and cut.report.sources[0].dropped == 0

    with pytest.raises(UserError, match="no training rows left: every drawn row is longer than --max_length 5"):
        build_dataset(DataArgs(dataset=(long,), max_length=5), chatml)


def test_a_row_too_long_in_characters_is_handled_without_tokenizing_it_whole(tmp_path, chatml):
    import time

    path = tmp_path / "huge.jsonl"
    rows = [{"query": "Say 7.", "response": "7 " * 10_000_000}, {"query": "What is 2 + 3?", "response": "5"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for strategy in ("delete", "truncation_left", "truncation_right"):
        start = time.perf_counter()
        built = build_dataset(DataArgs(dataset=(str(path),), split_dataset_ratio=0, max_length=64,
                                       truncation_strategy=strategy), chatml)
        assert time.perf_counter() - start < 10, strategy  # tokenizing the 20 MB row would take minutes
        source = built.report.sources[0]
        assert (source.too_long, source.over_chars) == (1, 1)
        assert source.max_tokens < 64  # only the short row's length is known
        assert "1 rows in" in built.report.to_text() and built.report.to_dict()["sources"][0]["over_chars"] == 1
        if strategy == "delete":
            assert source.dropped == 1 and len(built.train) == 1 and len(built.train_rows) == 1
        else:
            assert source.dropped == 0 and sorted(map(len, built.train)) == [min(map(len, built.train)), 64]


@pytest.mark.parametrize("strategy", ["truncation_left", "truncation_right"])
def test_cutting_the_characters_first_keeps_the_tokens_truncation_keeps(tmp_path, chatml, strategy):
    from mathtune.data.tokenize import char_limit, encode_conversation

    query, long = "Repeat it.", "What is 2 + 3? The answer is 5. " * 200
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"query": query, "response": long}) + "\n")
    max_length = 40
    assert len(long) > char_limit(chatml, max_length)  # so the row goes through the character cut
    built = build_dataset(DataArgs(dataset=(str(path),), split_dataset_ratio=0, max_length=max_length,
                                   truncation_strategy=strategy), chatml)
    whole = encode_conversation(chatml, [{"role": "user", "content": query}, {"role": "assistant", "content": long}])
    assert built.train == [fit_length(whole, max_length, strategy)]


def test_default_system_prompt(tmp_path, chatml):
    a = _rows(tmp_path, "a.jsonl", 3)
    plain = build_dataset(DataArgs(dataset=(a,), split_dataset_ratio=0), chatml)
    with_system = build_dataset(DataArgs(dataset=(a,), split_dataset_ratio=0, system="Be exact."), chatml)
    assert "Be exact." not in chatml.decode(plain.train[0].input_ids)
    text = chatml.decode(with_system.train[0].input_ids)
    assert text.startswith("<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\n")


def test_generated_sources_get_validation_rows_on_top(tmp_path, chatml, monkeypatch):
    from mathtune.data import sources
    from mathtune.data.formats import Parsed
    from mathtune.data.types import Conversation

    def fake_load(spec, *, extra_rows=0, seed=42, **_):
        n = (spec.n or 1000) + extra_rows
        rows = [
            Conversation(({"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}), f"rg[{i}]")
            for i in range(n)
        ]
        return Parsed(rows, sources.BadRows())

    monkeypatch.setattr("mathtune.data.mixing.load_source", fake_load)
    built = build_dataset(DataArgs(dataset=("rg:basic_arithmetic#300",), split_dataset_ratio=0.01), chatml)
    assert len(built.train) == 300 and len(built.val) == 3
    assert built.report.sources[0].available == 303


def test_bad_rows_reach_the_report(tmp_path, chatml):
    path = tmp_path / "x.jsonl"
    path.write_text('{"query": "q", "response": "r"}\n{"query": 1}\n{"query": "q3", "response": "r3"}\n')
    built = build_dataset(DataArgs(dataset=(str(path),), skip_bad_rows=True), chatml)
    source = built.report.sources[0]
    assert (source.available, source.bad_rows, source.val, source.taken) == (2, 1, 1, 1)
    assert source.bad_examples == (f"{path}:2: field 'query' must be a string, got int",)
    text = built.report.to_text()
    assert f"skipped 1 bad rows in {path}, e.g.:" in text
    assert built.report.to_dict()["sources"][0]["bad_examples"] == [source.bad_examples[0]]


def test_report_text_and_json(tmp_path, chatml):
    a, b = _rows(tmp_path, "a.jsonl", 100), _rows(tmp_path, "b.jsonl", 20)
    report = build_dataset(DataArgs(dataset=(f"{a}#30", b)), chatml).report
    lines = report.to_text().splitlines()
    assert lines[0].split() == "dataset rows val taken too long dropped mean tok max tok train tok share".split()
    assert len({len(line) for line in lines[:6]}) == 1  # aligned columns
    assert lines[2].split()[:4] == [f"{a}#30", "100", "1", "30"]
    assert set(lines[4]) == {"-", " "}
    assert lines[5].split()[0] == "total" and lines[5].split()[1:4] == ["120", "2", "49"]
    assert lines[6].startswith("max_length 1024: longer rows deleted; seed 42")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total"] == {
        "val_rows": 2,
        "train_rows_drawn": 49,
        "dropped": 0,
        "train_tokens": sum(s["train_tokens"] for s in data["sources"]),
    }
    assert data["sources"][1]["source"] == b and data["truncation_strategy"] == "delete"


def test_errors(tmp_path, chatml):
    with pytest.raises(UserError, match="--dataset: no dataset given"):
        build_dataset(DataArgs(), chatml)
    with pytest.raises(UserError, match="does not exist"):
        build_dataset(DataArgs(dataset=(str(tmp_path / "missing.jsonl"),)), chatml)
