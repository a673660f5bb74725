"""Data options (`DataArgs`) and the section of the flag table (mathtune.flags) that fills them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from mathtune.errors import UserError
from mathtune.flags import DATASET_FORMATS, TRUNCATION_STRATEGIES, Section, add_flags, json_mapping, parse_bool
from mathtune.seeding import check_seed

__all__ = ["DATASET_FORMATS", "DATA_FLAGS", "TRUNCATION_STRATEGIES", "DataArgs", "add_data_arguments", "parse_bool",
           "parse_columns"]



@dataclass(frozen=True)
class DataArgs:
    """What to train on and how rows become token sequences. Defaults follow ms-swift v2."""

    dataset: tuple[str, ...] = ()
    """Sources, each `SRC[#N]`: a file or folder, `rg:TASK`, a named hub set, `HF::org/name[:subset]` or
    `MS::org/name[:subset]`. `#N` takes N training rows (repeating the set when N exceeds it)."""

    dataset_format: str | None = None
    """Row shape of local files and generic hub sets; None or "auto" detects it per file from the first row."""

    columns: dict[str, str] | None = None
    """Renames source columns before the shape is detected, e.g. {"question": "query", "answer": "response"}."""

    split_dataset_ratio: float = 0.01
    """Share of each source held out for validation, drawn before `#N` sampling; 0 disables it."""

    data_seed: int = 42
    """Seed for the validation draw, `#N` sampling and shuffling: the same seed gives the same mix."""

    skip_bad_rows: bool = False
    """Skip rows that fail to parse (counted in the report, first messages shown) instead of stopping."""

    max_length: int = 1024
    """Longest tokenized row; longer rows are handled by `truncation_strategy`."""

    truncation_strategy: str = "delete"
    """"delete" drops rows over max_length; "truncation_left"/"truncation_right" cut tokens from that side."""

    system: str | None = None
    """System prompt inserted into rows that have none; None leaves rows as they are."""

    def __post_init__(self) -> None:
        dataset = self.dataset
        if isinstance(dataset, str):
            dataset = (dataset,)
        if not isinstance(dataset, (list, tuple)) or not all(isinstance(d, str) and d.strip() for d in dataset):
            raise UserError(f"--dataset: expected one or more non-empty names or paths, got {dataset!r}")
        object.__setattr__(self, "dataset", tuple(d.strip() for d in dataset))

        if self.dataset_format is not None and self.dataset_format not in DATASET_FORMATS:
            raise UserError(
                f"--dataset_format: unknown format {self.dataset_format!r}; choose one of {', '.join(DATASET_FORMATS)}"
            )
        object.__setattr__(self, "columns", parse_columns(self.columns))

        ratio = self.split_dataset_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 <= ratio < 1):
            raise UserError(f"--split_dataset_ratio: must be a number in [0, 1), got {ratio!r}")
        check_seed("--data_seed", self.data_seed)
        if not isinstance(self.skip_bad_rows, bool):
            raise UserError(f"--skip_bad_rows: must be true or false, got {self.skip_bad_rows!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise UserError(f"--max_length: must be a positive whole number of tokens, got {self.max_length!r}")
        if self.truncation_strategy not in TRUNCATION_STRATEGIES:
            raise UserError(
                f"--truncation_strategy: unknown strategy {self.truncation_strategy!r}; "
                f"choose one of {', '.join(TRUNCATION_STRATEGIES)}"
            )
        if self.system is not None and not isinstance(self.system, str):
            raise UserError(f"--system: must be text, got {self.system!r}")

    @property
    def format_or_none(self) -> str | None:
        """The forced row format, None when it is detected per file."""
        return None if self.dataset_format in (None, "auto") else self.dataset_format


def parse_columns(value: Any) -> dict[str, str] | None:
    """Accept a mapping or its JSON text (as given to --columns); every key and value must be a string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json_mapping(value)
        except argparse.ArgumentTypeError as e:
            raise UserError(f"--columns: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise UserError(f"--columns: expected a JSON object of column names to names, got {value!r}")
    for source, target in value.items():
        # A column renamed to a name no shape reads is lost, and the row may then parse as another shape (a query
        # renamed away leaves a response-only row): refuse it.
        if target not in ROW_FIELDS:
            raise UserError(f"--columns: '{source}' is renamed to '{target}', which no row shape reads; use one of "
                            f"{', '.join(ROW_FIELDS)}")
    return dict(value)


ROW_FIELDS = ("query", "response", "system", "history", "messages", "conversations", "instruction", "input", "output",
              "text")


DATA_FLAGS = Section("data", DataArgs, ("dataset", "dataset_format", "columns", "split_dataset_ratio", "data_seed",
                                        "skip_bad_rows", "max_length", "truncation_strategy", "system"))


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags (ms-swift v2 spellings), for a parser of one's own; `DataArgs(**vars(parsed))` takes them."""
    add_flags(parser, (DATA_FLAGS,))
