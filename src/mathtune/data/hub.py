"""Hub datasets: named sets with exact schema mappings (as ms-swift v2 registers them) and generic HF::/MS:: sets.

Named sets are fetched with `datasets.load_dataset` (Hugging Face) or, for ModelScope-only sets, the `modelscope`
client when it is installed. Rows a named set's mapping rejects are skipped and counted, as ms-swift filters them:
the user cannot fix the hub's data. Generic sets are parsed like local files and follow --skip_bad_rows.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mathtune import sets
from mathtune.data.formats import BadRows, Messages, Parsed, parse_rows, text_field, to_messages, type_name
from mathtune.errors import DataError, UserError, first_line

Mapper = Callable[[Mapping[str, object], str, int], Messages]

HF_PREFIX = "HF::"
MS_PREFIX = "MS::"


@dataclass(frozen=True)
class HubSet:
    """Where a hub dataset lives and how its rows become messages."""

    name: str
    """The name used in --dataset (and in reports)."""
    hf_id: str | None
    """Hugging Face dataset id, loaded with `datasets.load_dataset`."""
    ms_id: str | None
    """ModelScope dataset id, loaded with the `modelscope` client when it is installed."""
    subsets: tuple[str | None, ...] = (None,)
    """Configs to load and concatenate, in order; None is the default config."""
    split: str = "train"
    """The split to read."""
    mapper: Mapper | None = None
    """row, where, line -> messages; None detects the row shape like a local file (honouring --columns)."""
    aliases: tuple[str, ...] = ()
    """Other names accepted in --dataset."""
    about: str = ""
    """One line for `mathtune data list`."""


_NUMBERING = re.compile(r"^\s*\d+[.,、，\s]\s*(.+)$", re.DOTALL)


def ruozhiba_row(row: Mapping[str, object], where: str, line: int) -> Messages:
    """ms-swift's ruozhiba recipe: the joke title (or the post content), plus its abstract, as a response-only row.

    ms-swift strips a list number with an unanchored search, which can cut a title at any digit; this anchors it.
    """
    title = row.get("title")
    text = title if title is not None else row.get("content")
    if not isinstance(text, str):
        raise DataError(where, line, f"field 'title'/'content' must be a string, got {type_name(text)}")
    abstract = row.get("abs")
    if isinstance(abstract, str) and abstract and abstract != text:
        text = f"{text}，{abstract}"
    match = _NUMBERING.match(text)
    if match:
        text = match.group(1)
    if not text.strip():
        raise DataError(where, line, "field 'title'/'content' is empty")
    return ({"role": "assistant", "content": text},)


def instruction_output_row(row: Mapping[str, object], where: str, line: int) -> Messages:
    """Q&A rows `{instruction, output}` (LooksJuicy/ruozhiba): the alpaca shape."""
    return to_messages(row, "alpaca", where, line)


def blossom_math_row(row: Mapping[str, object], where: str, line: int) -> Messages:
    """blossom-math-v2 `{input, output, answer}`: the worked solution followed by "\\n\\nAnswer: <answer>"."""
    query = text_field(row, "input", where, line)
    output = text_field(row, "output", where, line)
    answer = row.get("answer")
    if "answer" not in row:
        raise DataError(where, line, "field 'answer' missing")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise DataError(where, line, f"field 'answer' must be a string or number, got {type_name(answer)}")
    return ({"role": "user", "content": query}, {"role": "assistant", "content": f"{output}\n\nAnswer: {answer}"})


def gsm8k_row(row: Mapping[str, object], where: str, line: int) -> Messages:
    """GSM8K `{question, answer}`: the answer keeps its worked steps and final `#### N` line."""
    question = text_field(row, "question", where, line)
    answer = text_field(row, "answer", where, line)
    return ({"role": "user", "content": question}, {"role": "assistant", "content": answer})


# The mapping of each named set whose rows are not shaped like a local file; the others detect their shape.
MAPPERS: dict[str, Mapper] = {
    "ruozhiba": ruozhiba_row,
    "LooksJuicy/ruozhiba": instruction_output_row,
    "AI-ModelScope/blossom-math-v2": blossom_math_row,
    "gsm8k": gsm8k_row,
}


def _hub_set(named: sets.NamedSet) -> HubSet:
    assert named.train is not None  # only training sets are hub sources
    return HubSet(
        named.name, named.hf_id, named.ms_id, named.subsets, named.train, MAPPERS.get(named.name), named.aliases,
        named.about,
    )


NAMED_SETS: tuple[HubSet, ...] = tuple(_hub_set(named) for named in sets.training_sets())
"""The named training sets (registered in mathtune.sets) with their mappings, in `mathtune data list` order."""


def find_named(name: str) -> HubSet | None:
    """The named training set called `name` (or one of its aliases), case-insensitively."""
    named = sets.find_set(name, "train")
    return None if named is None else _hub_set(named)


def is_hub_name(name: str) -> bool:
    """Whether `name` addresses a hub set: a named one, or HF::/MS:: followed by a dataset id."""
    return name.startswith((HF_PREFIX, MS_PREFIX)) or find_named(name) is not None


def resolve(name: str) -> HubSet:
    """The `HubSet` for a named set or a generic `HF::org/name[:subset]` / `MS::org/name[:subset]`."""
    named = find_named(name)
    if named is not None:
        return named
    for prefix, hub in ((HF_PREFIX, "hf"), (MS_PREFIX, "ms")):
        if name.startswith(prefix):
            repo, _, subset = name[len(prefix) :].partition(":")
            # org/name, each part starting with a letter or digit: '../dir' or '.' would reach a local folder.
            if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo) or ".." in repo or (_ and not subset):
                raise UserError(f"dataset '{name}': expected {prefix}org/name or {prefix}org/name:subset")
            ids = {"hf_id": repo, "ms_id": None} if hub == "hf" else {"hf_id": None, "ms_id": repo}
            return HubSet(name=name, subsets=(subset or None,), **ids)
    raise UserError(f"dataset '{name}' is not a known hub set; use HF::org/name or MS::org/name for others")


def load_hub(
    name: str,
    *,
    fmt: str | None = None,
    columns: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
    local_path: str | Path | None = None,
) -> Parsed:
    """Fetch a hub set and turn its rows into conversations.

    local_path: read the rows from this file or folder (in the hub set's own schema) instead of the hub; from a
    cloned repository, only the files of the set's subsets and training split.
    """
    hub_set = resolve(name)
    options = {"fmt": fmt, "columns": columns, "skip_bad_rows": skip_bad_rows}
    parts: list[Parsed] = []
    if local_path is not None:
        from mathtune.data.local import find_split_files, read_rows

        for file in find_split_files(Path(local_path), hub_set.split, hub_set.subsets):
            parts.append(map_rows(hub_set, read_rows(file), str(file), local=True, **options))
    else:
        for subset in hub_set.subsets:
            where = f"{hub_set.name}:{subset}" if subset and len(hub_set.subsets) > 1 else hub_set.name
            rows = list(enumerate(fetch_rows(hub_set, subset), start=1))
            parts.append(map_rows(hub_set, rows, where, **options))
    parsed = Parsed([], BadRows())
    for part in parts:
        parsed.conversations.extend(part.conversations)
        parsed.bad_rows.extend(part.bad_rows)
    return parsed


def map_rows(
    hub_set: HubSet,
    rows: Iterable[tuple[int, object]],
    where: str,
    *,
    fmt: str | None = None,
    columns: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
    local: bool = False,
) -> Parsed:
    """Apply a hub set's mapping to `(row number, row)` pairs.

    Origins read `where[index]` (0-based, as `datasets` indexes), or `where:line` for a local copy (`local`).
    """

    def origin(line: int | None) -> str:
        return f"{where}:{line}" if local else f"{where}[{(line or 1) - 1}]"

    skip = skip_bad_rows or find_named(hub_set.name) is not None
    mapper = hub_set.mapper
    return parse_rows(
        rows,
        where,
        fmt=fmt,
        columns=columns,
        skip_bad_rows=skip,
        origin=origin,
        mapper=None if mapper is None else (lambda row, w, n: mapper(row, w, n or 0)),
    )


def fetch_rows(hub_set: HubSet, subset: str | None) -> list[dict]:
    """Download one subset's split; any failure becomes one UserError line suggesting a local copy."""
    reasons: list[str] = []
    if hub_set.hf_id is not None:
        try:
            return load_hf_split(hub_set.hf_id, subset, hub_set.split)
        except Exception as e:  # network, auth, cache and schema failures all mean "not fetched"
            reasons.append(first_line(e, 160, typed=True))
    if hub_set.ms_id is not None:
        if importlib.util.find_spec("modelscope") is None:
            if hub_set.hf_id is None:
                reasons.append(f"{hub_set.ms_id} is on ModelScope and the `modelscope` client is not installed")
        else:
            try:
                return _load_ms(hub_set.ms_id, subset, hub_set.split)
            except Exception as e:  # the same, for ModelScope
                reasons.append(first_line(e, 160, typed=True))
    raise UserError(
        f"could not fetch dataset '{hub_set.name}' from the hub ({'; '.join(reasons)}); "
        f"pass a local copy in its own schema instead: --dataset {hub_set.name}=path/to/file.jsonl"
    )


def load_hf_split(repo: str, subset: str | None, split: str) -> list[dict]:
    """Rows of one split from the Hugging Face hub (or its local cache under HF_HUB_OFFLINE=1).

    Without a network the hub client retries for about 30 s, logging a line per try; a 3-second connection test
    first turns that into one quick error, and the client's retry lines are not shown.
    """
    import logging

    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        host = endpoint.hostname or "huggingface.co"
        try:
            socket.create_connection((host, endpoint.port or 443), timeout=3).close()
        except OSError as exc:
            raise ConnectionError(f"{host} is not reachable ({exc.strerror or type(exc).__name__}); with a local "
                                  "cache of it, set HF_HUB_OFFLINE=1") from None
    import datasets

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return list(datasets.load_dataset(repo, subset, split=split))
    finally:
        hub_logger.setLevel(level)


def _load_ms(repo: str, subset: str | None, split: str) -> list[dict]:
    from modelscope.msdatasets import MsDataset

    kwargs = {"subset_name": subset} if subset else {}
    return [dict(row) for row in MsDataset.load(repo, split=split, **kwargs)]
