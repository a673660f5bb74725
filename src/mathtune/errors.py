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
