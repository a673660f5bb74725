"""Mix sources into tokenized train/validation rows, with a per-source report.

Per source, as ms-swift: hold out the validation rows first, then take `#N` training rows from the rest without
replacement (repeating the whole set when N exceeds it, sampling the remainder). Every draw is seeded by
--data_seed and the source's spec, so adding a source does not change what the others contribute.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from mathtune.data.config import DataArgs
from mathtune.data.formats import Messages, with_default_system
from mathtune.data.sources import DEFAULT_GENERATED_ROWS, SourceSpec, load_source, parse_spec
from mathtune.data.tokenize import Encoded, char_limit, encode_conversation
from mathtune.data.types import Conversation
from mathtune.errors import UserError


@dataclass(frozen=True)
class SourceReport:
    """What one source contributed."""

    source: str
    """The --dataset entry."""
    available: int
    """Rows loaded (after skipping bad rows)."""
    val: int
    """Validation rows kept."""
    taken: int
    """Training rows drawn (#N, or all rows left after the validation draw)."""
    too_long: int
    """Drawn rows (train and validation) longer than max_length."""
    dropped: int
    """Drawn rows removed for length: deleted, or left with no trained token after truncation."""
    mean_tokens: float
    """Mean length of the drawn training rows before any truncation."""
    max_tokens: int
    """Longest drawn training row before any truncation."""
    over_chars: int
    """Drawn rows (train and validation) with more characters than `max_length` tokens can hold: counted in
    `too_long` without being tokenized whole (deleted unread, or cut to that many characters first), and left out
    of `mean_tokens` and `max_tokens`, whose true lengths are not known."""
    train_tokens: int
    """Tokens in the training rows kept."""
    share: float
    """This source's share of all training tokens."""
    bad_rows: int
    """Rows skipped as unparsable (--skip_bad_rows, or a named hub set's own filtering)."""
    bad_examples: tuple[str, ...]
    """The first few skipped rows' error messages."""


@dataclass(frozen=True)
class MixReport:
    """The per-source table of a built mix; `to_dict` is what the run dir saves as data_mix.json."""

    sources: tuple[SourceReport, ...]
    max_length: int
    truncation_strategy: str
    data_seed: int
    split_dataset_ratio: float

    def to_dict(self) -> dict:
        return {
            "data_seed": self.data_seed,
            "split_dataset_ratio": self.split_dataset_ratio,
            "max_length": self.max_length,
            "truncation_strategy": self.truncation_strategy,
            "sources": [{**asdict(s), "bad_examples": list(s.bad_examples)} for s in self.sources],
            "total": {
                "val_rows": sum(s.val for s in self.sources),
                "train_rows_drawn": sum(s.taken for s in self.sources),
                "dropped": sum(s.dropped for s in self.sources),
                "train_tokens": sum(s.train_tokens for s in self.sources),
            },
        }

    def to_text(self) -> str:
        header = ("dataset", "rows", "val", "taken", "too long", "dropped", "mean tok", "max tok", "train tok", "share")
        table = [header]
        for s in self.sources:
            table.append(
                (
                    s.source,
                    f"{s.available:,}",
                    f"{s.val:,}",
                    f"{s.taken:,}",
                    f"{s.too_long:,}",
                    f"{s.dropped:,}",
                    f"{s.mean_tokens:.1f}",
                    f"{s.max_tokens:,}",
                    f"{s.train_tokens:,}",
                    f"{s.share:.1%}",
                )
            )
        total = self.to_dict()["total"]
        table.append(
            (
                "total",
                f"{sum(s.available for s in self.sources):,}",
                f"{total['val_rows']:,}",
                f"{total['train_rows_drawn']:,}",
                f"{sum(s.too_long for s in self.sources):,}",
                f"{total['dropped']:,}",
                "",
                "",
                f"{total['train_tokens']:,}",
                "100.0%" if total["train_tokens"] else "",
            )
        )
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in table
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
        handling = {
            "delete": "deleted",
            "truncation_left": "cut from the left",
            "truncation_right": "cut from the right",
        }
        lines.append(
            f"max_length {self.max_length}: longer rows {handling[self.truncation_strategy]}; "
            f"seed {self.data_seed}, validation ratio {self.split_dataset_ratio}"
        )
        for s in self.sources:
            if s.over_chars:
                lines.append(f"{s.over_chars:,} rows in {s.source} have more characters than {self.max_length} tokens "
                             "can hold: counted as too long without tokenizing them whole")
            if s.bad_rows:
                lines.append(f"skipped {s.bad_rows:,} bad rows in {s.source}, e.g.:")
                lines.extend(f"  {example}" for example in s.bad_examples)
        return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class BuiltData:
    """Tokenized rows ready for batching. Training rows are shuffled across sources; validation rows are not."""

    train: list[Encoded]
    val: list[Encoded]
    train_origins: list[str]
    val_origins: list[str]
    report: MixReport
    train_rows: list[Conversation]
    """The distinct training rows kept, as text: for checks on what is trained, such as contamination."""


def val_count(total: int, ratio: float) -> int:
    """Validation rows to hold out of `total`: at least one when ratio > 0, never all of them."""
    if ratio <= 0 or total <= 1:
        return 0
    return min(total - 1, max(1, int(total * ratio)))


def draw(total: int, n: int | None, n_val: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Indices of (validation rows, training rows): validation first, then #N from the rest (see module doc)."""
    order = list(range(total))
    rng.shuffle(order)
    val, rest = sorted(order[:n_val]), order[n_val:]
    if n is None:
        return val, rest
    full, remainder = divmod(n, len(rest))
    return val, rest * full + rng.sample(rest, remainder)


def fit_length(encoded: Encoded, max_length: int, strategy: str) -> Encoded | None:
    """Apply the truncation strategy; None when the row is deleted or keeps no trained token."""
    if len(encoded) <= max_length:
        return encoded
    if strategy == "delete":
        return None
    cut = slice(-max_length, None) if strategy == "truncation_left" else slice(0, max_length)
    out = Encoded(encoded.input_ids[cut], encoded.labels[cut])
    return out if out.num_trained else None


def cut_messages(messages: Messages, limit: int, keep_end: bool) -> Messages:
    """The messages with at most `limit` characters of content in all, kept from the start (or the end with
    `keep_end`): the tokens a truncation keeps lie within that many characters, so tokenizing the rest is waste."""
    out = list(messages)
    budget = limit
    for i in reversed(range(len(out))) if keep_end else range(len(out)):
        content = out[i]["content"]
        keep = min(len(content), budget)
        if keep < len(content):
            out[i] = {**out[i], "content": content[len(content) - keep :] if keep_end else content[:keep]}
        budget -= keep
    return tuple(out)


def build_dataset(args: DataArgs, tokenizer) -> BuiltData:
    """Load, split, sample and tokenize every source of `args.dataset`; deterministic for a given data_seed."""
    if not args.dataset:
        raise UserError("--dataset: no dataset given")
    train: list[tuple[Encoded, str]] = []
    val: list[tuple[Encoded, str]] = []
    rows: list[Conversation] = []
    reports: list[dict] = []
    limit = char_limit(tokenizer, args.max_length)
    for text in args.dataset:
        spec = parse_spec(text)
        src_train, src_val, src_rows, report = _build_source(spec, args, tokenizer, limit)
        train += src_train
        val += src_val
        rows += src_rows
        reports.append(report)
    if not train:
        raise UserError(
            f"no training rows left: every drawn row is longer than --max_length {args.max_length} "
            "(raise --max_length or use --truncation_strategy truncation_left)"
        )
    total_tokens = sum(r["train_tokens"] for r in reports)
    sources = tuple(SourceReport(**r, share=r["train_tokens"] / total_tokens) for r in reports)
    random.Random(f"{args.data_seed}:mix").shuffle(train)
    report = MixReport(sources, args.max_length, args.truncation_strategy, args.data_seed, args.split_dataset_ratio)
    return BuiltData(
        train=[e for e, _ in train],
        val=[e for e, _ in val],
        train_origins=[o for _, o in train],
        val_origins=[o for _, o in val],
        report=report,
        train_rows=rows,
    )


def _build_source(
    spec: SourceSpec, args: DataArgs, tokenizer, limit: int
) -> tuple[list[tuple[Encoded, str]], list[tuple[Encoded, str]], list[Conversation], dict]:
    generated = spec.kind == "generator"
    # Generators make the validation rows on top of #N, so #N stays the number of training rows.
    extra = val_count(spec.n or DEFAULT_GENERATED_ROWS, args.split_dataset_ratio) if generated else 0
    parsed = load_source(
        spec,
        fmt=args.format_or_none,
        columns=args.columns,
        skip_bad_rows=args.skip_bad_rows,
        seed=args.data_seed,
        extra_rows=extra,
    )
    rows = parsed.conversations
    if not rows:
        raise UserError(f"dataset '{spec.text}' has no usable rows")
    n_val = extra if generated else val_count(len(rows), args.split_dataset_ratio)
    val_idx, train_idx = draw(len(rows), spec.n, n_val, random.Random(f"{args.data_seed}:{spec.text}"))

    cache: dict[int, Encoded | None] = {}
    oversized: set[int] = set()

    def encode(i: int) -> Encoded | None:
        """The row's tokens; None for a row deleted unread. Tokenizing a 20 MB row alone takes minutes, so a row
        with more characters than max_length tokens can hold is deleted, or cut to that many characters, first."""
        if i not in cache:
            messages = with_default_system(rows[i].messages, args.system)
            if sum(len(m["content"]) for m in messages) > limit:
                oversized.add(i)
                if args.truncation_strategy == "delete":
                    cache[i] = None
                    return None
                messages = cut_messages(messages, limit, keep_end=args.truncation_strategy == "truncation_left")
            cache[i] = _encode(tokenizer, messages, rows[i].origin)
        return cache[i]

    too_long = dropped = 0
    kept: dict[str, list[tuple[Encoded, str]]] = {"val": [], "train": []}
    kept_rows: dict[int, Conversation] = {}
    raw_lengths: list[int] = []
    for part, indices in (("val", val_idx), ("train", train_idx)):
        for i in indices:
            encoded = encode(i)
            if i in oversized:
                too_long += 1
            else:
                if part == "train":
                    raw_lengths.append(len(encoded))
                too_long += len(encoded) > args.max_length
            fitted = None if encoded is None else fit_length(encoded, args.max_length, args.truncation_strategy)
            if fitted is None:
                dropped += 1
            else:
                kept[part].append((fitted, rows[i].origin))
                if part == "train":
                    kept_rows[i] = rows[i]
    report = {
        "source": spec.text,
        "available": len(rows),
        "val": len(kept["val"]),
        "taken": len(train_idx),
        "too_long": too_long,
        "dropped": dropped,
        "mean_tokens": sum(raw_lengths) / len(raw_lengths) if raw_lengths else 0.0,
        "max_tokens": max(raw_lengths, default=0),
        "over_chars": sum(1 for i in (*val_idx, *train_idx) if i in oversized),
        "train_tokens": sum(len(e) for e, _ in kept["train"]),
        "bad_rows": parsed.bad_rows.count,
        "bad_examples": tuple(parsed.bad_rows.examples),
    }
    return kept["train"], kept["val"], list(kept_rows.values()), report


def _encode(tokenizer, messages: Messages, origin: str) -> Encoded:
    try:
        return encode_conversation(tokenizer, list(messages))
    except ValueError as e:
        raise UserError(f"{origin}: cannot tokenize this row ({e})") from None
