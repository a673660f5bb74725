"""Local data files: jsonl, json, csv and parquet, or a folder of them.

Readers return `(line, row)` pairs; a row the reader could not decode is a `DataError` in place of the row, so
--skip_bad_rows can skip it. Problems with a whole file (missing, unreadable, empty, broken JSON document) raise.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path

from mathtune.data.formats import BadRows, Parsed, parse_rows
from mathtune.errors import DataError, UserError, first_line
from mathtune.jsonl import parse_lines, read_bytes, strip_bom

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
Rows = list[tuple[int, object]]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile(r"[\udc80-\udcff]")


def load_local(
    path: str | Path,
    *,
    fmt: str | None = None,
    columns: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
) -> Parsed:
    """Read a data file, or every data file under a folder (sorted), into conversations.

    The row shape is `fmt`, or detected per file from its first row.
    """
    conversations = []
    bad = BadRows()
    for file in find_data_files(Path(path)):
        parsed = parse_rows(read_rows(file), str(file), fmt=fmt, columns=columns, skip_bad_rows=skip_bad_rows)
        conversations.extend(parsed.conversations)
        bad.extend(parsed.bad_rows)
    return Parsed(conversations, bad)


def find_data_files(path: Path) -> list[Path]:
    """The data files `path` names: itself, or the files with a known suffix under it, hidden folders skipped."""
    if not path.exists():
        raise UserError(f"dataset path '{path}' does not exist")
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise UserError(f"{path}: unsupported file type '{path.suffix}' (use {', '.join(SUFFIXES)})")
        return [path]
    try:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix.lower() in SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    except OSError as e:
        raise UserError(f"{path}: cannot list folder ({e.strerror or e})") from None
    if not files:
        raise UserError(f"folder '{path}' holds no {', '.join(SUFFIXES)} files")
    return files


_SPLIT_WORDS = frozenset({"train", "test", "validation", "valid", "dev", "eval"})


def find_split_files(path: Path, split: str, subsets: tuple[str | None, ...] = (None,)) -> list[Path]:
    """The data files of one split of a local copy: a file itself, or from a folder (a clone of a hub repository)
    the files of the named subsets (a folder named after one) and the split (a folder or file name word, as in
    ``main/test-00000-of-00001.parquet`` or ``cmath_test.jsonl``). A folder whose files name no split is all one.
    """
    files = find_data_files(path)
    if path.is_file():
        return files

    def words(file: Path) -> set[str]:
        parts = file.relative_to(path).with_suffix("").parts
        return {word for part in parts for word in re.split(r"[^a-z0-9]+", part.lower())}

    named = [s.lower() for s in subsets if s]
    in_subset = [f for f in files if any(s in (p.lower() for p in f.relative_to(path).parts[:-1]) for s in named)]
    files = in_subset or files
    if not any(words(f) & _SPLIT_WORDS for f in files):
        return files
    chosen = [f for f in files if split.lower() in words(f)]
    if not chosen:
        raise UserError(f"folder '{path}' holds no files of the '{split}' split (expected e.g. {split}.jsonl)")
    return chosen


def read_rows(path: Path) -> Rows:
    """All rows of one file as `(line, row)`; json and parquet rows are numbered by position (1-based)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_rows(path)
    data = read_bytes(path)
    if suffix == ".jsonl":
        rows = parse_lines(path, data)
    elif suffix == ".json":
        rows = _json_rows(path, data)
    elif suffix == ".csv":
        rows = _csv_rows(path, data)
    else:
        raise UserError(f"{path}: unsupported file type '{path.suffix}' (use {', '.join(SUFFIXES)})")
    if not rows:
        raise UserError(f"{path}: file is empty (no rows)")
    return rows


def _json_rows(path: Path, data: bytes) -> Rows:
    data = strip_bom(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(str(path), line, f"not UTF-8 (byte 0x{data[e.start]:02x} at column {column})") from None
    if not text.strip():
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            # One JSON object per line under a .json name: read it as JSON Lines, as `datasets` does.
            return parse_lines(path, data)
        raise DataError(str(path), e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise DataError(str(path), None, f"invalid JSON: {first_line(e, 80)}") from None
    if isinstance(document, list):
        return list(zip(_array_lines(text), document, strict=True))
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return [(i, row) for i, row in enumerate(document["data"], start=1)]
    if isinstance(document, dict):
        return [(text.count("\n", 0, _WHITESPACE.match(text).end()) + 1, document)]
    raise DataError(str(path), 1, 'a .json file must hold a list of rows, {"data": [rows]} or one row object')


def _array_lines(text: str) -> list[int]:
    """The line each element of a top-level JSON array starts on (the text is known to be valid JSON)."""
    decoder = json.JSONDecoder()
    lines: list[int] = []
    pos = _WHITESPACE.match(text).end() + 1  # past "["
    line, counted = 1, 0
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        if text[pos] == "]":
            return lines
        line += text.count("\n", counted, pos)
        counted = pos
        lines.append(line)
        _, pos = decoder.raw_decode(text, pos)
        pos = _WHITESPACE.match(text, pos).end()
        if text[pos] == ",":
            pos += 1


def _csv_rows(path: Path, data: bytes) -> Rows:
    # surrogateescape keeps going past bad bytes so each bad row can be reported (and skipped) on its own.
    text = strip_bom(data).decode("utf-8", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: Rows = []
    try:
        start = 1 if reader.fieldnames is None else reader.line_num + 1
        for record in reader:
            number = start
            start = reader.line_num + 1
            rows.append((number, _csv_record(path, number, record)))
    except csv.Error as e:
        raise DataError(str(path), reader.line_num, f"invalid CSV: {e}") from None
    if reader.fieldnames and any(_SURROGATE.search(name) for name in reader.fieldnames if name):
        raise DataError(str(path), 1, "not UTF-8 (header row)")
    return rows


def _csv_record(path: Path, number: int, record: dict) -> object:
    if None in record:
        return DataError(str(path), number, "row has more values than the header has columns")
    if any(isinstance(v, str) and _SURROGATE.search(v) for v in record.values()):
        return DataError(str(path), number, "not UTF-8")
    # A short row leaves trailing columns as None: treat them as absent, not as null values.
    return {k: v for k, v in record.items() if v is not None}


def _parquet_rows(path: Path) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UserError(f"{path}: cannot read parquet file ({first_line(e, 120)})") from None
    rows = table.to_pylist()
    if not rows:
        raise UserError(f"{path}: file is empty (no rows)")
    return list(enumerate(rows, start=1))
