"""Reading JSON Lines, the same way for every .jsonl mathtune reads (datasets, logs, predictions, infer input).

A UTF-8 byte-order mark is dropped and each line is decoded on its own, so that a bad byte or a line cut short is
reported as `FILE:LINE: reason`, at its own line, and the lines before it still count.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from .errors import DataError, UserError, first_line


def strip_bom(data: bytes) -> bytes:
    return data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read file ({e.strerror or e})") from None


def parse_lines(path: Path, data: bytes) -> list[tuple[int, object]]:
    """`(line, value)` for every non-blank line of `data`, read from `path`; a line that cannot be read gives a
    `DataError` in place of its value, so a caller may skip it (--skip_bad_rows) or raise it."""
    rows: list[tuple[int, object]] = []
    for number, raw in enumerate(strip_bom(data).split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            rows.append((number, DataError(str(path), number, _not_utf8(raw, e))))
            continue
        rows.append((number, _loads(text, path, number)))
    return rows


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """`(line, object)` for every non-blank line of a JSON Lines file; the first line that is not a JSON object
    raises `DataError` naming the file and the line. An empty file gives no rows: what that means is the caller's."""
    rows: list[tuple[int, dict]] = []
    for number, value in parse_lines(path, read_bytes(path)):
        if isinstance(value, DataError):
            raise value
        if not isinstance(value, dict):
            raise DataError(str(path), number, "expected a JSON object")
        rows.append((number, value))
    return rows


def _not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    return f"not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"


def _loads(text: str, path: Path, number: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return DataError(str(path), number, f"invalid JSON: {e.msg} (column {e.colno})")
    except (ValueError, RecursionError) as e:
        # Integers past Python's digit limit and absurd nesting are not JSONDecodeErrors.
        return DataError(str(path), number, f"invalid JSON: {first_line(e, 80)}")
