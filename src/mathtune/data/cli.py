"""`mathtune data preview|stats|check|list`: look at data the way the model will see it."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path

from mathtune.data.config import DataArgs
from mathtune.data.formats import with_default_system
from mathtune.data.sources import SourceSpec, list_generator_tasks, load_source, parse_spec
from mathtune.data.tokenize import IGNORE_INDEX, Encoded, char_limit, encode_conversation
from mathtune.data.types import Conversation
from mathtune.errors import UserError
from mathtune.flags import Section, add_flags, typed
from mathtune.sets import benchmark_names

_GREEN, _RESET = "\x1b[32m", "\x1b[0m"
_HIST_BINS, _HIST_WIDTH = 10, 40
STATS_TOKENIZE_LIMIT = 200_000  # tokens: rows past this many characters-worth are measured, not tokenized


@dataclass(frozen=True)
class DataToolArgs:
    """What a `data` action looks at; how rows are read is `DataArgs` (the flags `sft` takes for it)."""

    sources: tuple[str, ...] = ()  # preview, stats
    rows: int = 3  # preview: rows shown per source
    color: str = "auto"  # preview: color trained tokens (auto: on a tty)
    model: str | None = None  # whose tokenizer and chat template; None: the embedded model
    train: tuple[str, ...] = ()  # check
    against: tuple[str, ...] = ()  # check
    ngram: int = 13  # check: n-gram length that counts as overlap
    drop: str | None = None  # check: write the training rows without the overlapping ones here

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise UserError(f"-n: must be a positive number of rows, got {self.rows}")
        if self.ngram < 1:
            raise UserError(f"--ngram: must be a positive whole number, got {self.ngram}")


_READING = ("dataset_format", "columns", "skip_bad_rows", "data_seed")
ACTION_FLAGS: dict[str, tuple[Section, ...]] = {
    "preview": (Section("", DataToolArgs, ("sources", "rows", "color", "tokenizer_model")),
                Section("reading", DataArgs, ("system", *_READING))),
    "stats": (Section("", DataToolArgs, ("sources", "tokenizer_model")),
              Section("reading", DataArgs, ("max_length", "system", *_READING))),
    "check": (Section("", DataToolArgs, ("train", "against", "ngram", "drop")), Section("reading", DataArgs, _READING)),
    "list": (),
}
_HELP = {"preview": "show rows as the model sees them, trained tokens marked",
         "stats": "token length distribution per source",
         "check": "find training rows that overlap benchmarks (exit 1 if any)",
         "list": "built-in generator tasks, named hub sets and benchmarks"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `data` actions to the `data` verb's parser."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    for action, sections in ACTION_FLAGS.items():
        add_flags(sub.add_parser(action, help=_HELP[action], description=_doc(_actions()[action])), sections)


def run(args: argparse.Namespace, tokenizer=None) -> int:
    """Run one `data` action; `tokenizer` overrides --model (for tests and callers holding one)."""
    action = getattr(args, "data_command", None)
    if action not in ACTION_FLAGS:
        raise UserError("choose an action: mathtune data preview|stats|check|list (see mathtune data -h)")
    tool, data = typed(args, ACTION_FLAGS[action]) or (DataToolArgs(), DataArgs())
    # The actions read one flat set of options: the checked configs, each field under its flag's name.
    options = argparse.Namespace(**asdict(tool), **asdict(data))
    if action in ("preview", "stats"):
        return _actions()[action](options, tokenizer or _load_tokenizer(tool.model))
    return _actions()[action](options)


def _load_tokenizer(model: str | None):
    from mathtune.model import load_tokenizer

    return load_tokenizer(model)


def _load(text: str, args: argparse.Namespace, limit: int | None = None) -> tuple[SourceSpec, list[Conversation]]:
    spec = parse_spec(text)
    if limit is not None and spec.kind == "generator":
        spec = SourceSpec(spec.text, spec.name, limit)  # generate only what is shown
    fmt = None if args.dataset_format in (None, "auto") else args.dataset_format  # DataArgs.format_or_none
    parsed = load_source(spec, fmt=fmt, columns=args.columns, skip_bad_rows=args.skip_bad_rows, seed=args.data_seed)
    if parsed.bad_rows.count:
        print(f"skipped {parsed.bad_rows.count:,} bad rows in {text}, e.g.:", file=sys.stderr)
        for example in parsed.bad_rows.examples:
            print(f"  {example}", file=sys.stderr)
    return spec, parsed.conversations


def _encode(tokenizer, conversation: Conversation, system: str | None) -> Encoded:
    try:
        return encode_conversation(tokenizer, list(with_default_system(conversation.messages, system)))
    except ValueError as e:
        raise UserError(f"{conversation.origin}: cannot tokenize this row ({e})") from None


def _preview(args: argparse.Namespace, tokenizer) -> int:
    """Print the first rows of each SRC rendered through the chat template, with the trained tokens marked."""
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    for text in args.sources:  # every name checked before any source loads: a typo in the last fails at once
        _ = parse_spec(text).kind
    for text in args.sources:
        if len(args.sources) > 1:
            print(f"== {text} ==")
        _preview_one(text, args, tokenizer, color)
    return 0


def _preview_one(text: str, args: argparse.Namespace, tokenizer, color: bool) -> None:
    _, conversations = _load(text, args, limit=args.rows)
    for number, conversation in enumerate(conversations[: args.rows], start=1):
        encoded = _encode(tokenizer, conversation, args.system)
        print(
            f"── row {number} · {conversation.origin} · {len(encoded)} tokens, {encoded.num_trained} trained ──",
        )
        print(render_marked(tokenizer, encoded, color))
    legend = "green" if color else "[[ ]]"
    print(f"{min(args.rows, len(conversations))} of {len(conversations):,} rows shown; {legend} marks trained tokens")


def render_marked(tokenizer, encoded: Encoded, color: bool = False) -> str:
    """The decoded row with each run of trained tokens wrapped in [[ ]] (or colored)."""
    parts = []
    pairs = zip(encoded.input_ids, encoded.labels, strict=True)
    for trained, run in groupby(pairs, key=lambda pair: pair[1] != IGNORE_INDEX):
        text = tokenizer.decode([token for token, _ in run], skip_special_tokens=False)
        if trained:
            text = f"{_GREEN}{text}{_RESET}" if color else f"[[{text}]]"
        parts.append(text)
    return "".join(parts)


def _stats(args: argparse.Namespace, tokenizer) -> int:
    """Print the token length distribution of each source (and of all together), with a histogram."""
    rows = [("source", "rows", "mean", "p50", "p90", "p99", "max", f"> {args.max_length}")]
    everything: list[int] = []
    limit = char_limit(tokenizer, max(args.max_length, STATS_TOKENIZE_LIMIT))
    longest = max(1, char_limit(tokenizer, 1))
    estimated = 0
    for text in args.sources:
        _, conversations = _load(text, args)
        lengths = []
        for conversation in conversations:
            chars = sum(len(m["content"]) for m in conversation.messages)
            if chars > limit:  # tokenizing 50 MB takes gigabytes; its length is known to be at least chars / longest
                lengths.append(chars // longest)
                estimated += 1
            else:
                lengths.append(len(_encode(tokenizer, conversation, args.system)))
        everything += lengths
        rows.append(_stat_row(text, lengths, args.max_length))
    if len(args.sources) > 1:
        rows.append(_stat_row("all", everything, args.max_length))
    print(_table(rows))
    if estimated:
        print(f"{estimated:,} row(s) of over {limit:,} characters were not tokenized; their lengths are lower bounds "
              "(characters / the longest token)")
    print()
    print(histogram(everything))
    return 0


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _stat_row(name: str, lengths: list[int], max_length: int) -> tuple[str, ...]:
    ordered = sorted(lengths)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    over = sum(1 for n in ordered if n > max_length)
    return (
        name,
        f"{len(ordered):,}",
        f"{mean:.1f}",
        *(f"{percentile(ordered, p):,}" for p in (50, 90, 99)),
        f"{ordered[-1] if ordered else 0:,}",
        f"{over:,}",
    )


def histogram(lengths: Sequence[int], bins: int = _HIST_BINS, width: int = _HIST_WIDTH) -> str:
    """A text histogram of row lengths in tokens: at most `bins` equal-width bins from 0 to the longest row."""
    if not lengths:
        return "(no rows)"
    top = max(lengths)
    step = max(1, math.ceil((top + 1) / bins))
    counts = [0] * math.ceil((top + 1) / step)
    for n in lengths:
        counts[n // step] += 1
    peak = max(counts)
    labels = [f"{i * step:,}-{min((i + 1) * step - 1, top):,}" for i in range(len(counts))]
    pad = max(len(label) for label in labels)
    lines = ["tokens per row"]
    for label, count in zip(labels, counts, strict=True):
        bar = "#" * (max(1, round(count / peak * width)) if count else 0)
        lines.append(f"{label.rjust(pad)} | {bar + ' ' if bar else ''}{count:,}")
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]], numeric: bool = True) -> str:
    """Aligned columns: the first (and all, unless `numeric`) left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if numeric and i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    """Report training rows that share n-grams with benchmark questions; --drop writes the other rows.

    Exits 1 when rows overlap and --drop was not given, so scripts can stop on contaminated data.
    """
    if args.drop:  # before loading and comparing, which take a while
        _check_drop_target(args.drop)
    train: list[Conversation] = []
    for text in args.train:
        train += _load(text, args)[1]
    from mathtune.data import contamination

    questions = contamination.benchmark_questions(args.against, data_seed=args.data_seed)
    report = contamination.check(train, questions, n=args.ngram)
    print(report.to_text())
    if args.drop:
        kept = contamination.drop(train, report)
        contamination.write_jsonl(kept, args.drop)  # a full disk, or a folder changed since the check: one line
        print(f"wrote {len(kept):,} of {len(train):,} rows to {args.drop}")
        return 0
    return 1 if report.overlaps else 0


def _check_drop_target(target: str) -> None:
    """--drop names a file to write: not a folder, and somewhere a folder can be created (or is)."""
    from mathtune.run_dir import check_output_dir

    path = Path(target)
    if path.is_dir():
        raise UserError(f"--drop '{target}' is a folder; pass a file name such as clean.jsonl")
    check_output_dir(path.parent, "--drop folder")


def _list(args: argparse.Namespace) -> int:
    """Print the built-in generator tasks (rg:TASK), the named hub sets and the benchmarks."""
    from mathtune.data.hub import NAMED_SETS

    try:
        tasks = list_generator_tasks()
    except UserError as e:
        tasks, note = [], str(e)
    else:
        note = ""
    print("built-in generators (offline, unlimited, seeded): --dataset rg:TASK[#N]")
    print("  " + (", ".join(tasks) if tasks else note))
    print()
    print("named hub sets (need the hub, or a local copy): --dataset NAME[#N]")
    rows = [("name", "source", "contents")]
    for hub_set in NAMED_SETS:
        where = f"HF {hub_set.hf_id}" if hub_set.hf_id else f"MS {hub_set.ms_id}"
        rows.append((hub_set.name, where, hub_set.about))
    print(_table(rows, numeric=False))
    print("any other set: HF::org/name[:subset] or MS::org/name[:subset]")
    print()
    print("benchmarks (mathtune eval --benchmarks, data check --against): NAME, or NAME=PATH / LABEL:NAME=PATH")
    print("  " + ", ".join(benchmark_names()))
    print("  rg:TASK-unseen: held-out structures (gsm_symbolic templates) never trained on; not a --dataset")
    return 0


def _doc(function) -> str:
    return (function.__doc__ or "").strip()


def _actions() -> dict[str, Callable[..., int]]:
    return {"preview": _preview, "stats": _stats, "check": _check, "list": _list}
