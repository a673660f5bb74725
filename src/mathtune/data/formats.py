"""Raw rows (dicts) to chat messages, for the row shapes ms-swift accepts.

Shapes: swift `{system?, query, response, history?: [[q, r], ...]}`, messages `{messages: [{role, content}]}`,
sharegpt `{conversations: [{from, value}]}`, alpaca `{system?, instruction, input?, output}` and response-only
`{system?, response}` (or `{text}`). A bad row raises `DataError` naming the file, line and field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mathtune.data.types import Conversation
from mathtune.errors import DataError

FORMATS = ("swift", "messages", "sharegpt", "alpaca", "response")
Messages = tuple[dict[str, str], ...]

_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
}
_MAX_EXAMPLES = 3


class FormatError(DataError):
    """A file whose row shape cannot be told: never skipped, since every row would fail the same way."""


@dataclass
class BadRows:
    """Rows skipped under --skip_bad_rows: how many, and the first few error messages."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, error: Exception) -> None:
        self.count += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(str(error))

    def extend(self, other: BadRows) -> None:
        self.count += other.count
        self.examples.extend(other.examples[: _MAX_EXAMPLES - len(self.examples)])


@dataclass
class Parsed:
    """The conversations parsed from one file or set, and the rows skipped."""

    conversations: list[Conversation]
    bad_rows: BadRows


def type_name(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list", dict: "object"}
    return names.get(type(value), type(value).__name__)


def detect_format(row: Mapping[str, object]) -> str | None:
    """The row shape told by its keys, or None when no known shape fits."""
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "query" in row:
        return "swift"
    if "response" in row or "text" in row:
        return "response"
    return None


def apply_columns(row: Mapping[str, object], columns: Mapping[str, str] | None) -> dict[str, object]:
    """Rename source columns (--columns) so the row matches a known shape."""
    if not columns:
        return dict(row)
    return {columns.get(key, key): value for key, value in row.items()}


def with_default_system(messages: Messages, system: str | None) -> Messages:
    """Prepend `system` unless it is None or the row brings its own system message."""
    if system is None or (messages and messages[0]["role"] == "system"):
        return messages
    return ({"role": "system", "content": system}, *messages)


def to_messages(row: Mapping[str, object], fmt: str, where: str, line: int | None) -> Messages:
    """Turn one row of shape `fmt` into validated messages; raise DataError naming the bad field."""
    if not isinstance(row, Mapping):
        raise DataError(where, line, f"row must be a JSON object, got {type_name(row)}")
    if fmt == "swift":
        return _swift(row, where, line)
    if fmt == "messages":
        return _chat(row, "messages", where, line)
    if fmt == "sharegpt":
        return _chat(row, "conversations", where, line)
    if fmt == "alpaca":
        return _alpaca(row, where, line)
    if fmt == "response":
        return _response(row, where, line)
    raise ValueError(f"unknown row format {fmt!r}")


def prompt_messages(row: Mapping[str, object], where: str, line: int | None) -> Messages:
    """The conversation a row asks to have answered (`infer --input`): the training shapes with the final answer
    optional (a trailing assistant turn is dropped); `question` is read as `query`."""
    if not isinstance(row, Mapping):
        raise DataError(where, line, f"row must be a JSON object, got {type_name(row)}")
    if "messages" in row or "conversations" in row:
        return _chat(row, "messages" if "messages" in row else "conversations", where, line, answered=False)
    if "instruction" in row:
        return _alpaca(row, where, line, answered=False)
    if "question" in row and "query" not in row:
        row = {**row, "query": row["question"]}
    return _swift(row, where, line, answered=False)


def parse_rows(
    rows: Iterable[tuple[int | None, object]],
    where: str,
    *,
    fmt: str | None = None,
    columns: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
    origin: Callable[[int | None], str] | None = None,
    mapper: Callable[[Mapping[str, object], str, int | None], Messages] | None = None,
) -> Parsed:
    """Parse `(line, row)` pairs from one file or set; a row may be a DataError the reader hit on that line.

    The shape is `fmt`, or detected from the first row that is an object; failing to detect it stops the load
    even under skip_bad_rows, since every later row would fail the same way. `mapper` replaces shape handling
    (and --columns) for sets with their own schema.
    """
    origin = origin or (lambda line: f"{where}:{line}" if line is not None else where)
    conversations: list[Conversation] = []
    bad = BadRows()
    for line, raw in rows:
        try:
            if isinstance(raw, DataError):
                raise raw
            if not isinstance(raw, Mapping):
                raise DataError(where, line, f"row must be a JSON object, got {type_name(raw)}")
            if mapper is not None:
                messages = mapper(raw, where, line)
            else:
                row = apply_columns(raw, columns)
                if fmt is None:
                    fmt = _detect_or_fail(row, where, line)
                messages = to_messages(row, fmt, where, line)
        except DataError as e:
            if not skip_bad_rows or isinstance(e, FormatError):
                raise
            bad.add(e)
            continue
        conversations.append(Conversation(messages, origin(line)))
    return Parsed(conversations, bad)


def _detect_or_fail(row: Mapping[str, object], where: str, line: int | None) -> str:
    fmt = detect_format(row)
    if fmt is None:
        keys = ", ".join(k if k.isprintable() else repr(k) for k in sorted(row)[:8]) or "none"
        raise FormatError(
            where,
            line,
            f"cannot tell the row format from its fields ({keys}); expected query/response, messages, "
            "conversations, instruction/output or response; rename fields with --columns "
            '\'{"question": "query", "answer": "response"}\' or set --dataset_format',
        )
    return fmt


def text_field(
    row: Mapping[str, object], key: str, where: str, line: int | None, *, required: bool = True
) -> str | None:
    """A string field: required ones must be present and non-blank, optional ones may be absent or null."""
    if key not in row or (row[key] is None and not required):
        if required:
            raise DataError(where, line, f"field '{key}' missing")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise DataError(where, line, f"field '{key}' must be a string, got {type_name(value)}")
    if required and not value.strip():
        raise DataError(where, line, f"field '{key}' is empty")
    check_text(value, key, where, line)
    return value


def check_text(value: str, key: str, where: str, line: int | None) -> None:
    """Refuse a lone surrogate (JSON allows "\\ud800"): it is not text, and no tokenizer can encode it."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(where, line, f"field '{key}' holds a lone surrogate ({value[exc.start]!r} at character "
                                     f"{exc.start}), which is not text") from None


def _system(row: Mapping[str, object], where: str, line: int | None) -> list[dict[str, str]]:
    system = text_field(row, "system", where, line, required=False)
    return [{"role": "system", "content": system}] if system else []


def _swift(row: Mapping[str, object], where: str, line: int | None, answered: bool = True) -> Messages:
    messages = _system(row, where, line)
    history = row.get("history")
    if history is not None:
        if not isinstance(history, (list, tuple)):
            raise DataError(
                where, line, f"field 'history' must be a list of [query, response] pairs, got {type_name(history)}"
            )
        for i, pair in enumerate(history):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise DataError(where, line, f"field 'history[{i}]' must be a [query, response] pair")
            for j, (role, text) in enumerate(zip(("user", "assistant"), pair, strict=True)):
                if not isinstance(text, str):
                    raise DataError(where, line, f"field 'history[{i}][{j}]' must be a string, got {type_name(text)}")
                messages.append({"role": role, "content": text})
    messages.append({"role": "user", "content": text_field(row, "query", where, line)})
    if answered:
        messages.append({"role": "assistant", "content": text_field(row, "response", where, line)})
    return tuple(messages)


def _alpaca(row: Mapping[str, object], where: str, line: int | None, answered: bool = True) -> Messages:
    if "instruction" not in row:
        raise DataError(where, line, "field 'instruction' missing")
    instruction = text_field(row, "instruction", where, line, required=False) or ""
    extra = text_field(row, "input", where, line, required=False) or ""
    query = "\n".join(part for part in (instruction, extra) if part.strip())
    if not query:
        raise DataError(where, line, "field 'instruction' is empty")
    messages = (*_system(row, where, line), {"role": "user", "content": query})
    if not answered:
        return messages
    return (*messages, {"role": "assistant", "content": text_field(row, "output", where, line)})


def _response(row: Mapping[str, object], where: str, line: int | None) -> Messages:
    key = "response" if "response" in row or "text" not in row else "text"
    response = text_field(row, key, where, line)
    return (*_system(row, where, line), {"role": "assistant", "content": response})


def _chat(row: Mapping[str, object], key: str, where: str, line: int | None, answered: bool = True) -> Messages:
    turns = row.get(key)
    if key not in row:
        raise DataError(where, line, f"field '{key}' missing")
    if not isinstance(turns, (list, tuple)):
        raise DataError(where, line, f"field '{key}' must be a list of messages, got {type_name(turns)}")
    if not turns:
        raise DataError(where, line, f"field '{key}' is empty")
    # sharegpt rows name the keys from/value; tolerate either spelling in both shapes.
    role_key, content_key = ("from", "value") if key == "conversations" else ("role", "content")
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        name = f"{key}[{i}]"
        if not isinstance(turn, Mapping):
            raise DataError(where, line, f"field '{name}' must be an object, got {type_name(turn)}")
        rk = role_key if role_key in turn else ("role" if "role" in turn else "from")
        ck = content_key if content_key in turn else ("content" if "content" in turn else "value")
        if rk not in turn:
            raise DataError(where, line, f"field '{name}.{role_key}' missing")
        if ck not in turn:
            raise DataError(where, line, f"field '{name}.{content_key}' missing")
        role, content = turn[rk], turn[ck]
        if not isinstance(role, str) or role.lower() not in _ROLES:
            shown = repr(role) if isinstance(role, str) else type_name(role)
            raise DataError(
                where, line, f"field '{name}.{rk}' has unknown role {shown} (expected system, user or assistant)"
            )
        if not isinstance(content, str):
            raise DataError(where, line, f"field '{name}.{ck}' must be a string, got {type_name(content)}")
        check_text(content, f"{name}.{ck}", where, line)
        role = _ROLES[role.lower()]
        if role == "system" and i > 0:
            raise DataError(where, line, f"field '{name}': a system message may only come first")
        messages.append({"role": role, "content": content})
    last = len(messages) - 1
    if not answered:
        if messages[last]["role"] == "assistant":
            messages.pop()
        if not messages or messages[-1]["role"] != "user":
            raise DataError(where, line, f"field '{key}' ends without a user turn to answer")
        return tuple(messages)
    if messages[last]["role"] != "assistant":
        raise DataError(
            where,
            line,
            f"field '{key}[{last}]': the last message must be the assistant's, got {messages[last]['role']}",
        )
    if not messages[last]["content"].strip():
        raise DataError(where, line, f"field '{key}[{last}]' is empty")
    return tuple(messages)
