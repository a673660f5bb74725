"""`mathtune data preview|stats|check|list`: look at data the way the model will see it."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

from mathtune.data.config import DATASET_FORMATS, columns_flag, parse_bool
from mathtune.data.formats import with_default_system
from mathtune.data.sources import SourceSpec, list_generator_tasks, load_source, parse_spec
from mathtune.data.tokenize import IGNORE_INDEX, Encoded, char_limit, encode_conversation
from mathtune.data.types import Conversation
from mathtune.errors import UserError
from mathtune.sets import benchmark_names

_GREEN, _RESET = "\x1b[32m", "\x1b[0m"
_HIST_BINS, _HIST_WIDTH = 10, 40
STATS_TOKENIZE_LIMIT = 200_000  # tokens: rows past this many characters-worth are measured, not tokenized


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `data` actions to the `data` verb's parser."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    preview = sub.add_parser(
        "preview", help="show rows as the model sees them, trained tokens marked", description=_doc(_preview)
    )
    preview.add_argument("source", metavar="SRC[#N]", help="a file, folder, rg:TASK or hub set")
    preview.add_argument("-n", "--rows", type=int, default=3, help="rows to show (default 3)")
    preview.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="color trained tokens (default: on a tty)"
    )
    _add_loading(preview, tokenizer=True)

    stats = sub.add_parser("stats", help="token length distribution per source", description=_doc(_stats))
    stats.add_argument("sources", nargs="+", metavar="SRC[#N]", help="files, folders, rg:TASK or hub sets")
    stats.add_argument("--max_length", type=int, default=1024, help="count rows longer than this (default 1024)")
    _add_loading(stats, tokenizer=True)

    check = sub.add_parser(
        "check", help="find training rows that overlap benchmarks (exit 1 if any)", description=_doc(_check)
    )
    check.add_argument(
        "--train", nargs="+", required=True, metavar="SRC", help="training sources (#N ignored: all rows)"
    )
    check.add_argument(
        "--against", nargs="+", required=True, metavar="BENCH", help="benchmarks to compare with (e.g. rg:gsm-symbolic)"
    )
    check.add_argument("--ngram", type=int, default=13, help="n-gram length that counts as overlap (default 13)")
    check.add_argument(
        "--drop", metavar="OUT.jsonl", help="write the training rows without the overlapping ones (exit 0)"
    )
    _add_loading(check, tokenizer=False)

    sub.add_parser("list", help="built-in generator tasks, named hub sets and benchmarks", description=_doc(_list))


def run(args: argparse.Namespace, tokenizer=None) -> int:
    """Run one `data` action; `tokenizer` overrides --model (for tests and callers holding one)."""
    action = getattr(args, "data_command", None)
    if action == "preview":
        return _preview(args, tokenizer or _load_tokenizer(args.model))
    if action == "stats":
        return _stats(args, tokenizer or _load_tokenizer(args.model))
    if action == "check":
        return _check(args)
    if action == "list":
        return _list(args)
    raise UserError("choose an action: mathtune data preview|stats|check|list (see mathtune data -h)")


def _add_loading(parser: argparse.ArgumentParser, *, tokenizer: bool) -> None:
    if tokenizer:
        parser.add_argument(
            "--model", metavar="PATH_OR_ID", help="whose tokenizer and chat template to use (default: embedded model)"
        )
        parser.add_argument("--system", help="system prompt for rows that have none")
    parser.add_argument("--dataset_format", choices=DATASET_FORMATS, help="row shape (default: detect per file)")
    parser.add_argument("--columns", type=columns_flag, metavar="JSON", help="rename source columns first")
    parser.add_argument("--skip_bad_rows", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL")
    parser.add_argument("--data_seed", type=int, default=42, help="seed for built-in generators (default 42)")


def _load_tokenizer(model: str | None):
    from mathtune.model import load_tokenizer

    return load_tokenizer(model)


def _load(text: str, args: argparse.Namespace, limit: int | None = None) -> tuple[SourceSpec, list[Conversation]]:
    spec = parse_spec(text)
    if limit is not None and spec.kind == "generator":
        spec = SourceSpec(spec.text, spec.name, limit)  # generate only what is shown
    fmt = None if args.dataset_format in (None, "auto") else args.dataset_format
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
    """Print the first rows of SRC rendered through the chat template, with the trained tokens marked."""
    if args.rows < 1:
        raise UserError(f"-n: must be a positive number of rows, got {args.rows}")
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    _, conversations = _load(args.source, args, limit=args.rows)
    for number, conversation in enumerate(conversations[: args.rows], start=1):
        encoded = _encode(tokenizer, conversation, args.system)
        print(
            f"── row {number} · {conversation.origin} · {len(encoded)} tokens, {encoded.num_trained} trained ──",
        )
        print(render_marked(tokenizer, encoded, color))
    legend = "green" if color else "[[ ]]"
    print(f"{min(args.rows, len(conversations))} of {len(conversations):,} rows shown; {legend} marks trained tokens")
    return 0


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
    if args.max_length < 1:
        raise UserError(f"--max_length: must be a positive whole number of tokens, got {args.max_length}")
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
    if args.ngram < 1:
        raise UserError(f"--ngram: must be a positive whole number, got {args.ngram}")
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
