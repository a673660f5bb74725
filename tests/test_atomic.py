"""The shared helpers: atomic writes, the JSON Lines reader, one-line error reasons."""

import errno
import json
import os

import pytest

from mathtune import atomic
from mathtune.errors import DataError, UserError, first_line
from mathtune.jsonl import read_jsonl


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "out.json"
    atomic.write_json(target, {"a": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "é"}

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "replace", full)
        with pytest.raises(UserError, match=r"cannot write '.*out.json': No space left on device; kept$"):
            atomic.write_lines(target, ["x"], note="; kept")
    with pytest.raises(ZeroDivisionError):  # not a write failure: raised as it is
        with atomic.staged_file(target) as tmp:
            tmp.write_text("half")
            raise ZeroDivisionError
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "é"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"b": 2}\r\n')
    assert read_jsonl(path) == [(1, {"a": 1}), (3, {"b": 2})]
    for data, needle in ((b'{"a": 1}\n{"a": \xe9}\n', "x.jsonl:2: not UTF-8"),
                         (b'{"a": 1}\n{"a"\n', "x.jsonl:2: invalid JSON"),
                         (b"[1]\n", "x.jsonl:1: expected a JSON object")):
        path.write_bytes(data)
        with pytest.raises(DataError, match=needle):
            read_jsonl(path)


def test_first_line():
    assert first_line(ValueError("\n  first  \nsecond")) == "first"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError("x" * 300), 10) == "xxxxxxx..."
    assert first_line(OSError("gone"), typed=True) == "OSError: gone"
    error = RuntimeError("Missing key(s): w\nsize mismatch for w")
    assert first_line(error, prefer="size mismatch") == "size mismatch for w"
