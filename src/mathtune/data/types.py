"""The one row type every data source produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Conversation:
    """A training row turned into chat messages.

    messages: list of {"role": "system"|"user"|"assistant", "content": str}. Assistant turns are trained on;
        a response-only row is a single assistant message.
    origin: where the row came from, "path:line" or "name[index]", for error messages and contamination reports.
    """

    messages: tuple[dict[str, str], ...]
    origin: str

    def question(self) -> str:
        """The text of the user turns, used for contamination checks."""
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user")
