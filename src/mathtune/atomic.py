"""Atomic file writes: a file is written beside its target and renamed into place, so a reader sees the old file or
the new one, never half of one, whatever stops the write (a kill, a full disk, a permission).

A failed write is one line (`UserError`); the temporary file is removed. Every file mathtune writes whole goes
through here; a folder written whole (a checkpoint, a merged model) is staged by its own module, which decides what
happens to an existing folder, inside `staging_folder`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError


def write_failure(exc: BaseException) -> str | None:
    """The reason a write failed (disk full, permission denied, ...), or None when `exc` is not a write failure.

    torch.save raises its own RuntimeError with the OSError as its context; safetensors keeps only the message.
    """
    if isinstance(exc, RuntimeError) and isinstance(exc.__context__, OSError):
        exc = exc.__context__
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if type(exc).__name__ == "SafetensorError" and (found := re.search(r"I/O error: (.+?)(?: \(os error \d+\))?$",
                                                                        str(exc))):
        return found.group(1)
    return None


@contextlib.contextmanager
def staged_file(path: str | os.PathLike[str], note: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` (its folder made as needed) to write; on success it replaces `path`.

    On any error the temporary file goes; a write failure becomes `cannot write 'PATH': REASON` plus `note`
    (e.g. "; results written before are intact"), anything else is raised as it is.
    """
    target = Path(path)
    # The process id keeps two processes writing the same file from writing into one temporary file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = write_failure(exc)
        if reason is None:
            raise
        raise UserError(f"cannot write '{target}': {reason}{note}") from None


@contextlib.contextmanager
def staging_folder(staging: Path, failure: str, note: str = "") -> Iterator[None]:
    """Run the block that fills `staging` and renames it into place; if the block fails, `staging` is removed and a
    write failure becomes one line, `FAILURE: REASON` plus `note`; anything else is raised as it is."""
    try:
        yield
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        reason = write_failure(exc)
        if reason is None:
            raise
        raise UserError(f"{failure}: {reason}{note}") from None


def write_text(path: str | os.PathLike[str], text: str, note: str = "") -> None:
    with staged_file(path, note) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_lines(path: str | os.PathLike[str], lines: Iterable[str], note: str = "") -> None:
    """Write each line followed by a newline; `lines` may be a generator, consumed while the file is open."""
    with staged_file(path, note) as tmp, tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def write_json(path: str | os.PathLike[str], data: Any, note: str = "", **dumps: Any) -> None:
    """`data` as indented JSON, non-ASCII text kept as it is; `dumps` go to json.dumps (e.g. default=str)."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, **dumps) + "\n", note)


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Any], note: str = "", **dumps: Any) -> None:
    """One JSON value per line, non-ASCII text kept as it is; `dumps` go to json.dumps."""
    write_lines(path, (json.dumps(r, ensure_ascii=False, **dumps) for r in records), note)


def follow_umask(folder: Path) -> None:
    """Give every file in `folder` the mode the umask gives new files: safetensors writes its files 0600 whatever
    the umask, so a merged model or a checkpoint would be unreadable to the group that reads the rest of it."""
    mask = os.umask(0)
    os.umask(mask)  # reading the umask means setting it; it is set back at once
    for file in Path(folder).rglob("*"):
        if file.is_file() and not file.is_symlink():
            file.chmod(0o666 & ~mask)
