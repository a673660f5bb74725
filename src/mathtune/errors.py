"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with something the user passed (a path, a row, a flag). The message is one line."""


class DataError(UserError):
    """A bad row or file: the message names the file, the line and the field."""

    def __init__(self, where: str, line: int | None, message: str) -> None:
        self.where = where
        self.line = line
        self.detail = message
        prefix = f"{where}:{line}" if line is not None else where
        super().__init__(f"{prefix}: {message}")


def first_line(exc: BaseException, limit: int = 200, *, typed: bool = False, prefer: str | None = None) -> str:
    """One short line out of a library's error, for a one-line message: the first non-blank line of its text (or the
    first line starting with `prefer`, where there is one), cut to `limit` characters with "..." marking the cut.

    With `typed` the error's type comes first ("OSError: ..."): for errors whose text alone does not say what failed.
    An error without text gives its type's name.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = next((x for x in lines if prefer and x.startswith(prefer)), lines[0] if lines else "")
    if len(line) > limit:
        line = line[: max(0, limit - 3)] + "..."
    name = type(exc).__name__
    if not line:
        return name
    return f"{name}: {line}" if typed else line
