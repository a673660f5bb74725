"""Data options (`DataArgs`) and their SWIFT-spelled command-line flags."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from typing import Any

from mathtune.errors import UserError
from mathtune.seeding import check_seed

DATASET_FORMATS = ("auto", "swift", "messages", "sharegpt", "alpaca", "response")
TRUNCATION_STRATEGIES = ("delete", "truncation_left", "truncation_right")


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
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f'--columns: invalid JSON ({e.msg}); expected e.g. \'{{"question": "query"}}\'') from None
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


def parse_bool(text: str | bool) -> bool:
    """SWIFT-style boolean flag values: true/false, 1/0, yes/no."""
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def columns_flag(text: str) -> dict[str, str] | None:
    """argparse type for --columns: a bad value becomes a one-line usage error."""
    try:
        return parse_columns(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--columns: ")) from None


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data flags with ms-swift v2 spellings; parser defaults equal the `DataArgs` defaults."""
    d = DataArgs()
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        nargs="+",
        default=list(d.dataset),
        metavar="SRC[#N]",
        help="datasets to mix: a .jsonl/.json/.csv/.parquet file or folder, rg:TASK (built-in generator), a named hub "
        "set (e.g. AI-ModelScope/blossom-math-v2), HF::org/name[:subset] or MS::org/name[:subset]; "
        "#N takes N training rows",
    )
    group.add_argument(
        "--dataset_format",
        choices=DATASET_FORMATS,
        default=d.dataset_format,
        help="row shape of local files and generic hub sets (default: detect from each file's first row)",
    )
    group.add_argument(
        "--columns",
        type=columns_flag,
        default=d.columns,
        metavar="JSON",
        help='rename source columns first, e.g. \'{"question": "query", "answer": "response"}\'',
    )
    group.add_argument(
        "--split_dataset_ratio",
        type=_ratio,
        default=d.split_dataset_ratio,
        help=f"share of each source held out for validation (default {d.split_dataset_ratio})",
    )
    group.add_argument("--data_seed", type=int, default=d.data_seed, help=f"seed for sampling (default {d.data_seed})")
    group.add_argument(
        "--skip_bad_rows",
        type=parse_bool,
        nargs="?",
        const=True,
        default=d.skip_bad_rows,
        metavar="BOOL",
        help="skip rows that fail to parse and report them, instead of stopping at the first one",
    )
    group.add_argument(
        "--max_length", type=int, default=d.max_length, help=f"longest row in tokens (default {d.max_length})"
    )
    group.add_argument(
        "--truncation_strategy",
        choices=TRUNCATION_STRATEGIES,
        default=d.truncation_strategy,
        help="rows over --max_length: delete them, or cut tokens from the left or right (default delete)",
    )
    group.add_argument("--system", default=d.system, help="system prompt for rows that have none")
