from pathlib import Path

import pytest

from mathtune.data.local import find_data_files, load_local, read_rows
from mathtune.errors import DataError, UserError


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_each_fixture_shape_loads(fixtures):
    cases = {"swift.jsonl": 3, "messages.jsonl": 2, "sharegpt.jsonl": 2, "alpaca.json": 3, "response.jsonl": 2}
    for name, count in cases.items():
        parsed = load_local(fixtures / name)
        assert len(parsed.conversations) == count, name
        assert all(c.messages[-1]["role"] == "assistant" for c in parsed.conversations)
        assert parsed.bad_rows.count == 0


def test_jsonl_line_numbers_count_blank_lines(fixtures):
    origins = [c.origin for c in load_local(fixtures / "swift.jsonl").conversations]
    assert origins == [f"{fixtures / 'swift.jsonl'}:{n}" for n in (1, 2, 4)]


def test_json_array_rows_carry_their_real_line(fixtures):
    rows = read_rows(fixtures / "alpaca.json")
    assert [line for line, _ in rows] == [2, 7, 8]
    first = load_local(fixtures / "alpaca.json").conversations[0]
    assert first.messages[0]["content"] == "Simplify the fraction.\n12/18"


def test_csv_with_columns_and_multiline_field(fixtures):
    parsed = load_local(fixtures / "qa.csv", columns={"question": "query", "answer": "response"})
    assert [c.origin.rsplit(":", 1)[1] for c in parsed.conversations] == ["2", "3", "5"]
    assert parsed.conversations[1].messages[0]["content"] == 'A "quoted" question\nover two lines?'


def test_csv_without_columns_names_the_fields(fixtures):
    with pytest.raises(DataError, match=r"qa.csv:2: cannot tell the row format from its fields \(answer, question\)"):
        load_local(fixtures / "qa.csv")


def test_csv_bad_rows(tmp_path):
    path = _write(tmp_path / "x.csv", b"query,response\nq1,r1\nq2,r2,extra\nq3,\xff\xfe\nq4\n")
    with pytest.raises(DataError, match=r"x.csv:3: row has more values than the header has columns"):
        load_local(path)
    parsed = load_local(path, skip_bad_rows=True)
    assert len(parsed.conversations) == 1
    assert parsed.bad_rows.examples == [
        f"{path}:3: row has more values than the header has columns",
        f"{path}:4: not UTF-8",
        f"{path}:5: field 'response' missing",
    ]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"instruction": ["Add 1 and 2.", "Double 4."], "output": ["3", "8"]}), path)
    parsed = load_local(path)
    assert [c.messages[1]["content"] for c in parsed.conversations] == ["3", "8"]
    assert parsed.conversations[1].origin == f"{path}:2"


def test_parquet_errors(tmp_path):
    with pytest.raises(UserError, match=r"x.parquet: cannot read parquet file"):
        load_local(_write(tmp_path / "x.parquet", b"PAR1 not really"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = tmp_path / "e.parquet"
    pq.write_table(pa.table({"query": pa.array([], pa.string())}), empty)
    with pytest.raises(UserError, match=r"e.parquet: file is empty"):
        load_local(empty)


def test_folder_is_sorted_recursive_and_skips_hidden_and_other_files(fixtures):
    files = find_data_files(fixtures / "folder")
    assert [f.relative_to(fixtures / "folder").as_posix() for f in files] == ["a.jsonl", "sub/b.jsonl"]
    parsed = load_local(fixtures / "folder")
    assert len(parsed.conversations) == 3 + 2
    assert parsed.conversations[0].messages[0] == {"role": "system", "content": "You are good at math."}
    assert parsed.conversations[-1].messages == (
        {"role": "assistant", "content": "Every prime greater than 2 is odd."},
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", b"", "empty.jsonl: file is empty (no rows)"),
        ("blank.jsonl", b"\n  \n\n", "blank.jsonl: file is empty (no rows)"),
        ("empty.json", b"[]", "empty.json: file is empty (no rows)"),
        ("empty.csv", b"", "empty.csv: file is empty (no rows)"),
        ("header.csv", b"query,response\n", "header.csv: file is empty (no rows)"),
        (
            "cut.json",
            b'[{"query": "q", "response": "r"},\n {"query": "q2", "resp',
            "cut.json:2: invalid JSON: Unterminated",
        ),
        ("bad.json", b'{"query": "q"\n\n\xff}', "bad.json:3: not UTF-8 (byte 0xff at column 1)"),
        ("scalar.json", b"42", "scalar.json:1: a .json file must hold a list of rows"),
        ("notes.txt", b"hello", "notes.txt: unsupported file type '.txt'"),
    ],
)
def test_file_errors_are_one_line_and_name_the_file(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(UserError) as exc:
        load_local(path, skip_bad_rows=True)
    assert str(exc.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(exc.value)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(UserError, match="dataset path '.*nope.jsonl' does not exist"):
        load_local(tmp_path / "nope.jsonl")
    (tmp_path / "docs").mkdir()
    _write(tmp_path / "docs" / "readme.md", "# hi")
    with pytest.raises(UserError, match="folder '.*docs' holds no .jsonl, .json, .csv, .parquet files"):
        load_local(tmp_path / "docs")


def test_unreadable_file(tmp_path, monkeypatch):
    path = _write(tmp_path / "x.jsonl", '{"response": "r"}\n')

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UserError, match=r"x.jsonl: cannot read file \(Permission denied\)"):
        load_local(path)


def test_jsonl_bad_lines_stop_or_are_skipped_and_reported(tmp_path):
    lines = [
        b'{"query": "q1", "response": "r1"}',
        b'{"query": "q2", "response": "\xe9t\xe9"}',
        b'{"query": "q3", "response": "r3"',
        b"[1, 2]",
        b'{"query": "q5", "response": "r5"}',
        b'{"query": "q6", "resp',
    ]
    path = _write(tmp_path / "x.jsonl", b"\n".join(lines))
    with pytest.raises(DataError) as exc:
        load_local(path)
    assert str(exc.value) == f"{path}:2: not UTF-8 (byte 0xe9 at column 30)"
    parsed = load_local(path, skip_bad_rows=True)
    assert [c.origin for c in parsed.conversations] == [f"{path}:1", f"{path}:5"]
    assert parsed.bad_rows.count == 4
    assert parsed.bad_rows.examples == [
        f"{path}:2: not UTF-8 (byte 0xe9 at column 30)",
        f"{path}:3: invalid JSON: Expecting ',' delimiter (column 33)",
        f"{path}:4: row must be a JSON object, got list",
    ]


def test_bom_crlf_and_json_lines_named_json(tmp_path):
    path = _write(
        tmp_path / "x.json", '\ufeff{"query": "q1", "response": "r1"}\r\n{"query": "q2", "response": "r2"}\r\n'
    )
    parsed = load_local(path)
    assert [c.messages[1]["content"] for c in parsed.conversations] == ["r1", "r2"]
    data = _write(tmp_path / "d.json", '{"data": [{"response": "a"}, {"response": "b"}]}')
    assert [c.origin for c in load_local(data).conversations] == [f"{data}:1", f"{data}:2"]
    one = _write(tmp_path / "one.json", '\n\n{"response": "only"}')
    assert [c.origin for c in load_local(one).conversations] == [f"{one}:3"]


def test_huge_integer_is_a_row_error_not_a_crash(tmp_path):
    path = _write(tmp_path / "x.jsonl", '{"query": "q", "response": "r", "id": ' + "9" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"x.jsonl:1: invalid JSON"):
        load_local(path)
