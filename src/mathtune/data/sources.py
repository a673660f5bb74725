"""Dataset specs (`SRC[#N]`) and dispatch to local files, built-in generators and hub sets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mathtune import sets
from mathtune.data.formats import BadRows, Parsed
from mathtune.data.hub import is_hub_name, load_hub
from mathtune.data.local import SUFFIXES, load_local
from mathtune.errors import UserError
from mathtune.suggest import did_you_mean

GENERATOR_PREFIX = sets.GENERATOR_PREFIX
DEFAULT_GENERATED_ROWS = 1000
"""Rows a built-in generator makes when the spec gives no #N."""


@dataclass(frozen=True)
class SourceSpec:
    """One --dataset entry."""

    text: str
    """The entry as given, e.g. "AI-ModelScope/blossom-math-v2#5000"."""
    name: str
    """The source without its count: a path, rg:TASK, a named hub set, HF::... or MS::..."""
    n: int | None = None
    """Training rows to take (#N), None for all of them."""
    local_path: str | None = None
    """For `NAME=PATH`: a local copy of the named hub set NAME, read with that set's own mapping."""

    @property
    def kind(self) -> str:
        """ "local", "generator" or "hub"; a UserError when the name is none of them."""
        if self.local_path is not None:
            return "hub"
        return source_kind(self.name)


def parse_spec(text: str) -> SourceSpec:
    """Split `SRC[#N]`; an existing path that contains '#' is taken whole."""
    text = text.strip()
    if not text:
        raise UserError("--dataset: empty dataset name")
    if _exists(text):
        return SourceSpec(text, text, None)
    name, sep, count = text.rpartition("#")
    if not sep:
        return _with_local_copy(SourceSpec(text, text, None))
    if not name:
        raise UserError(f"dataset '{text}': missing the dataset name before '#'")
    if not re.fullmatch(r"[0-9]+", count) or int(count) < 1:
        raise UserError(f"dataset '{text}': the part after '#' must be a positive whole number of rows, got '{count}'")
    return _with_local_copy(SourceSpec(text, name, int(count)))


def _with_local_copy(spec: SourceSpec) -> SourceSpec:
    """`NAME=PATH[#N]`: a named hub set read from a local file or folder in that set's schema."""
    name, sep, path = spec.name.partition("=")
    if not sep or _exists(spec.name):
        return spec
    if not is_hub_name(name):
        raise UserError(f"dataset '{spec.text}': '{name}' is not a named hub set, so '=PATH' cannot apply")
    if not _exists(path):
        raise UserError(f"dataset '{spec.text}': local copy '{path}' does not exist")
    return SourceSpec(spec.text, name, spec.n, path)


def source_kind(name: str) -> str:
    """Which loader serves `name`: an existing path first (as ms-swift), then rg:TASK, then hub sets."""
    if _exists(name):
        return "local"
    if name.startswith(GENERATOR_PREFIX):
        return "generator"
    if is_hub_name(name):
        return "hub"
    if name.lower().endswith(SUFFIXES) or name.startswith(("/", ".", "~")):
        raise UserError(f"dataset path '{name}' does not exist")
    raise UserError(
        f"dataset '{name}' is neither a file, a folder, a built-in set (rg:TASK, see `mathtune data list`) "
        f"nor a known hub set (for any other Hugging Face set write HF::org/name){did_you_mean(name, known_names())}"
    )


def known_names() -> dict[str, str]:
    """Every spelling a --dataset name may take (aliases included), mapped to the name to suggest."""
    names = {f"{GENERATOR_PREFIX}{task}": f"{GENERATOR_PREFIX}{task}" for task in sets.RG_TASKS}
    for named in sets.training_sets():
        names.update(dict.fromkeys((named.name, *named.aliases), named.name))
    return names


def _check_task(spec: SourceSpec, task: str) -> None:
    """An unknown rg task fails here with the closest names; an unseen split is left to the generators to refuse."""
    for lookup in (sets.rg_task, sets.rg_benchmark):
        try:
            lookup(task)
            return
        except UserError:
            pass
    raise UserError(
        f"dataset '{spec.text}': unknown task '{task}'"
        f"{did_you_mean(spec.name, known_names()) or '; see `mathtune data list`'}"
    )


def load_source(
    spec: SourceSpec,
    *,
    fmt: str | None = None,
    columns: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
    seed: int = 42,
    extra_rows: int = 0,
) -> Parsed:
    """Load every row of one source. Generators make `#N` (or DEFAULT_GENERATED_ROWS) plus `extra_rows` rows."""
    kind = spec.kind
    if kind == "local":
        return load_local(_local_path(spec.name), fmt=fmt, columns=columns, skip_bad_rows=skip_bad_rows)
    if kind == "hub":
        return load_hub(spec.name, fmt=fmt, columns=columns, skip_bad_rows=skip_bad_rows, local_path=spec.local_path)
    task = spec.name[len(GENERATOR_PREFIX) :]
    if not task:
        raise UserError(f"dataset '{spec.text}': name a task after rg:, e.g. rg:basic_arithmetic")
    _check_task(spec, task)
    generators = _generators()
    n = (spec.n or DEFAULT_GENERATED_ROWS) + extra_rows
    return Parsed(list(generators.generate(task, n, seed, "train")), BadRows())


def list_generator_tasks() -> list[str]:
    """The built-in generator tasks, addressed as rg:TASK."""
    return list(_generators().list_tasks())


def _generators():
    # Imported here so data loading works, and fails clearly, without the generators module.
    try:
        from mathtune.data import generators
    except ModuleNotFoundError as e:
        if e.name != "mathtune.data.generators":
            raise
        raise UserError("built-in generators (rg:TASK) are not available in this install") from None
    return generators


def _local_path(name: str) -> Path:
    return Path(name).expanduser()


def _exists(name: str) -> bool:
    try:
        return _local_path(name).exists()
    except (OSError, ValueError, RuntimeError):  # too long, holding NUL, or ~unknown_user: not a path
        return False
