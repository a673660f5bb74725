"""Find training rows that overlap evaluation questions, and write a cleaned copy.

Texts are normalised (lowercase, whitespace collapsed, sentence punctuation removed) and split into tokens: words for
spaced scripts, single characters for CJK, which has no spaces to split on (so for Chinese the n-grams are character
n-grams). A training row overlaps an evaluation question when the normalised texts are equal ("exact") or when the
row contains one of the question's n-gram token sequences ("ngram"); a question shorter than n tokens is one
sequence, its whole text.

Generated and templated sets share boilerplate (every knights-and-knaves puzzle starts with the same two sentences),
which would flag every row: an n-gram found in more than ``max(3, 5%)`` of one benchmark's questions is treated as
boilerplate and ignored for that benchmark. Exact matches are always reported.

The row text is its user turns, or all its text for response-only rows. Hashed n-grams keep this fast: 10k rows
against 1.3k questions take about a second.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathtune.data.types import Conversation
from mathtune.errors import UserError

# Punctuation that carries meaning in math (minus, division, brackets, powers...) is kept.
_KEEP = set("-/()[]{}*%#&@\\_")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


def _strip_punct(ch: str) -> str:
    return " " if unicodedata.category(ch).startswith("P") and ch not in _KEEP else ch


def tokens(text: str) -> list[str]:
    """Normalised tokens: words, or single characters for CJK scripts."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _TOKEN.findall("".join(_strip_punct(ch) for ch in text))


def normalize(text: str) -> str:
    """The normalised form used for exact matching and de-duplication."""
    return " ".join(tokens(text))


def _grams(toks: list[str], n: int) -> set[int]:
    return {hash(" ".join(toks[i : i + n])) for i in range(len(toks) - n + 1)}


@dataclass(frozen=True)
class Overlap:
    """One training row that overlaps one evaluation question."""

    origin: str
    benchmark: str
    item: int
    kind: str  # "exact" or "ngram"
    shared: int  # distinct shared n-grams (for exact matches, the question's n-gram count)
    question: str


@dataclass(frozen=True)
class ContaminationReport:
    """The result of ``check``."""

    n: int
    rows: int
    questions: dict[str, int]
    overlaps: tuple[Overlap, ...]

    @property
    def contaminated_origins(self) -> frozenset[str]:
        """Origins of the training rows that overlap any question."""
        return frozenset(o.origin for o in self.overlaps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary with every overlap."""
        return {
            "n": self.n,
            "rows_checked": self.rows,
            "questions": dict(self.questions),
            "contaminated_rows": len(self.contaminated_origins),
            "overlaps": [o.__dict__ for o in self.overlaps],
        }

    def to_text(self, limit: int = 20) -> str:
        """A short human-readable summary listing up to ``limit`` overlaps."""
        sets = ", ".join(f"{name} ({count})" for name, count in self.questions.items())
        lines = [f"contamination check: {self.rows} training rows vs {sets}; {self.n}-gram overlap"]
        if not self.overlaps:
            lines.append("no overlap found")
            return "\n".join(lines)
        kinds = Counter(o.kind for o in self.overlaps)
        lines.append(
            f"{len(self.contaminated_origins)} rows overlap: {kinds['exact']} exact, {kinds['ngram']} n-gram matches"
        )
        for o in self.overlaps[:limit]:
            detail = "exact" if o.kind == "exact" else f"{o.shared} shared {self.n}-grams"
            snippet = o.question if len(o.question) <= 70 else o.question[:67] + "..."
            lines.append(f"  {o.origin} ~ {o.benchmark}[{o.item}] ({detail}): {snippet!r}")
        if len(self.overlaps) > limit:
            lines.append(f"  ... and {len(self.overlaps) - limit} more")
        return "\n".join(lines)


def _row_text(row: Conversation) -> str:
    question = row.question()
    return question if question.strip() else "\n".join(m["content"] for m in row.messages)


def check(train: list[Conversation], against: dict[str, list[str]] | list[str], n: int = 13) -> ContaminationReport:
    """Compare training rows with evaluation questions (a list is named "eval")."""
    if n < 1:
        raise UserError(f"n-gram size must be >= 1, got {n}")
    benchmarks = {"eval": list(against)} if isinstance(against, list) else {k: list(v) for k, v in against.items()}
    exact: dict[str, list[tuple[str, int]]] = defaultdict(list)
    postings: dict[int, list[tuple[str, int]]] = defaultdict(list)
    lengths: set[int] = set()  # token lengths of short questions, matched whole
    sizes: dict[tuple[str, int], int] = {}
    for name, questions in benchmarks.items():
        per_gram: dict[int, list[int]] = defaultdict(list)
        for i, question in enumerate(questions):
            toks = tokens(question)
            if not toks:
                continue
            exact[" ".join(toks)].append((name, i))
            size = min(n, len(toks))
            lengths.add(size)
            grams = _grams(toks, size)
            sizes[(name, i)] = len(grams)
            for gram in grams:
                per_gram[gram].append(i)
        boilerplate = max(3, 0.05 * len(questions))
        for gram, items in per_gram.items():
            if len(items) <= boilerplate:
                postings[gram].extend((name, i) for i in items)

    overlaps: list[Overlap] = []
    for row in train:
        toks = tokens(_row_text(row))
        hits = {key: "exact" for key in exact.get(" ".join(toks), [])}
        shared: Counter[tuple[str, int]] = Counter()
        for size in lengths:
            for gram in _grams(toks, size):
                shared.update(postings.get(gram, ()))
        for key in shared:
            hits.setdefault(key, "ngram")
        for (name, i), kind in sorted(hits.items()):
            count = shared[(name, i)] if kind == "ngram" else sizes[(name, i)]
            overlaps.append(Overlap(row.origin, name, i, kind, count, benchmarks[name][i]))
    return ContaminationReport(n, len(train), {k: len(v) for k, v in benchmarks.items()}, tuple(overlaps))


def drop(train: list[Conversation], report: ContaminationReport) -> list[Conversation]:
    """A copy of ``train`` without the rows the report flags."""
    bad = report.contaminated_origins
    return [row for row in train if row.origin not in bad]


def benchmark_questions(names: Iterable[str], data_seed: int = 42) -> dict[str, list[str]]:
    """The questions of named benchmarks (``name`` or ``name=path``), for ``check``."""
    from mathtune.evaluate.benchmarks import get_benchmark  # evaluate depends on data, not the other way round

    out: dict[str, list[str]] = {}
    for name in names:
        bench = get_benchmark(name, data_seed=data_seed)
        out[bench.name] = [item.question for item in bench.load()]
    return out


def write_jsonl(conversations: Iterable[Conversation], path: str | os.PathLike[str]) -> None:
    """Write ``{"messages": [...]}`` lines atomically: a temporary file in the same folder, then a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in conversations:
                f.write(json.dumps({"messages": list(row.messages)}, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
