"""Find training rows that overlap evaluation questions, and write a cleaned copy.

Texts are normalised (lowercase, whitespace collapsed, sentence punctuation removed) and split into tokens: words for
spaced scripts, single characters for CJK, which has no spaces to split on (so for Chinese the n-grams are character
n-grams). A training row overlaps an evaluation question when the normalised texts are equal ("exact") or when the
row contains one of the question's n-gram token sequences ("ngram"); a question shorter than n tokens is one
sequence, its whole text, which must not sit inside a longer formula in the row.

Generated and templated sets share boilerplate (every knights-and-knaves puzzle starts with the same two sentences),
which would flag every row: an n-gram found in more than ``max(3, 5%)`` of one benchmark's questions is treated as
boilerplate and ignored for that benchmark. Exact matches are always reported.

The row text is its user turns, or all its text for response-only rows. Hashed n-grams keep this fast: 10k rows
against 1.3k questions take 1-2 s on one CPU core.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from mathtune import atomic
from mathtune.data.textmatch import tokens
from mathtune.data.types import Conversation
from mathtune.errors import UserError


def _continues(token: str) -> bool:
    """Whether a token extends a formula (a number or an operator) rather than starting new text."""
    return token[0].isdigit() or token[0] in "+-*/^=<>()[]{}×÷·.,"


def _grams(toks: list[str], n: int) -> set[int]:
    return {hash(" ".join(toks[i : i + n])) for i in range(len(toks) - n + 1)}


@dataclass(frozen=True)
class Overlap:
    """A training row's overlap with one benchmark: its best-matching question and how many questions it touches."""

    origin: str
    benchmark: str
    item: int  # index of the best-matching question in the benchmark's list
    kind: str  # "exact" or "ngram"
    shared: int  # distinct n-grams the row shares with that question (all of them for an exact match)
    coverage: float  # shared / the question's distinct n-grams
    items: int  # questions of this benchmark the row overlaps
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

    def rows_per_benchmark(self) -> dict[str, tuple[int, int]]:
        """(rows matching a question exactly, rows sharing n-grams only) per benchmark that any row overlaps."""
        found: dict[tuple[str, str], set[str]] = defaultdict(set)
        for o in self.overlaps:
            found[(o.benchmark, o.kind)].add(o.origin)
        counts = {name: (len(found[(name, "exact")]), len(found[(name, "ngram")])) for name in self.questions}
        return {name: pair for name, pair in counts.items() if any(pair)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary with every overlap."""
        return {
            "n": self.n,
            "rows_checked": self.rows,
            "questions": dict(self.questions),
            "contaminated_rows": len(self.contaminated_origins),
            "overlaps": [asdict(o) for o in self.overlaps],
        }

    def to_text(self, limit: int = 20) -> str:
        """A short human-readable summary listing up to ``limit`` overlaps, most shared first."""
        sets = ", ".join(f"{name} ({count})" for name, count in self.questions.items())
        lines = [f"contamination check: {self.rows} training rows vs {sets}; {self.n}-gram overlap"]
        if not self.overlaps:
            lines.append("no overlap found")
            return "\n".join(lines)
        exact = sum(o.kind == "exact" for o in self.overlaps)
        lines.append(
            f"{len(self.contaminated_origins)} rows overlap: {exact} exact matches, {len(self.overlaps) - exact} n-gram"
        )
        ranked = sorted(self.overlaps, key=lambda o: (o.kind != "exact", -o.coverage, o.origin))
        for o in ranked[:limit]:
            detail = "exact" if o.kind == "exact" else f"{o.shared} shared {self.n}-grams, {o.coverage:.0%}"
            more = f", +{o.items - 1} more" if o.items > 1 else ""
            snippet = o.question if len(o.question) <= 60 else o.question[:57] + "..."
            lines.append(f"  {o.origin} ~ {o.benchmark}[{o.item}] ({detail}{more}): {snippet!r}")
        if len(ranked) > limit:
            lines.append(f"  ... and {len(ranked) - limit} more")
        return "\n".join(lines)


def _row_text(row: Conversation) -> str:
    question = row.question()
    return question if question.strip() else "\n".join(m["content"] for m in row.messages)


Key = tuple[str, int]


@dataclass
class _Index:
    """Hashed n-grams of every question, boilerplate removed."""

    n: int
    exact: dict[str, list[Key]] = field(default_factory=lambda: defaultdict(list))
    postings: dict[int, list[Key]] = field(default_factory=lambda: defaultdict(list))
    short: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # first token -> lengths
    sizes: dict[Key, int] = field(default_factory=dict)

    def add(self, name: str, questions: list[str]) -> None:
        per_gram: dict[int, list[int]] = defaultdict(list)
        for i, question in enumerate(questions):
            toks = tokens(question)
            if not toks:
                continue
            self.exact[" ".join(toks)].append((name, i))
            if len(toks) < self.n:
                self.short[toks[0]].add(len(toks))
            grams = _grams(toks, min(self.n, len(toks)))
            self.sizes[(name, i)] = len(grams)
            for gram in grams:
                per_gram[gram].append(i)
        boilerplate = max(3, 0.05 * len(questions))
        for gram, items in per_gram.items():
            if len(items) <= boilerplate:
                self.postings[gram].extend((name, i) for i in items)

    def shared(self, toks: list[str]) -> Counter[Key]:
        """Distinct shared n-grams per question."""
        grams = _grams(toks, self.n)
        # Short questions are matched whole, only where a row token can start one (cheap for most rows), and not
        # inside a longer formula: "calculate 5 * 0" is not the question "Calculate 5 * 0." in "Calculate 5 * 0 + 7."
        for i, tok in enumerate(toks):
            for length in self.short.get(tok, ()):
                end = i + length
                if end > len(toks) or (end < len(toks) and _continues(toks[end])) or (i and _continues(toks[i - 1])):
                    continue
                grams.add(hash(" ".join(toks[i:end])))
        counts: Counter[Key] = Counter()
        postings = self.postings
        for gram in grams & postings.keys():
            for key in postings[gram]:
                counts[key] += 1
        return counts


def check(train: list[Conversation], against: dict[str, list[str]] | list[str], n: int = 13) -> ContaminationReport:
    """Compare training rows with evaluation questions (a plain list is named "eval")."""
    if n < 1:
        raise UserError(f"n-gram size must be >= 1, got {n}")
    benchmarks = {"eval": list(against)} if isinstance(against, list) else {k: list(v) for k, v in against.items()}
    index = _Index(n)
    for name, questions in benchmarks.items():
        index.add(name, questions)

    overlaps: list[Overlap] = []
    for row in train:
        toks = tokens(_row_text(row))
        exact = set(index.exact.get(" ".join(toks), ()))
        counts = index.shared(toks)
        for name in benchmarks:
            keys = {k for k in counts if k[0] == name} | {k for k in exact if k[0] == name}
            if not keys:
                continue
            # Exact matches first, then the question with the largest share of its n-grams found in the row.
            best = max(keys, key=lambda k: (k in exact, counts[k] / index.sizes[k], -k[1]))
            shared = index.sizes[best] if best in exact else counts[best]
            overlaps.append(
                Overlap(
                    row.origin,
                    name,
                    best[1],
                    "exact" if best in exact else "ngram",
                    shared,
                    round(shared / index.sizes[best], 4),
                    len(keys),
                    benchmarks[name][best[1]],
                )
            )
    return ContaminationReport(n, len(train), {k: len(v) for k, v in benchmarks.items()}, tuple(overlaps))


def drop(train: list[Conversation], report: ContaminationReport) -> list[Conversation]:
    """A copy of ``train`` without the rows the report flags."""
    bad = report.contaminated_origins
    return [row for row in train if row.origin not in bad]


def benchmark_questions(names: Iterable[str], data_seed: int = 42) -> dict[str, list[str]]:
    """The questions of named benchmarks (``name``, ``name=path`` or ``label:name=path``), for ``check``."""
    # The one import from evaluate: resolving benchmark names is its job. A function-level import, and nothing that
    # evaluate.benchmarks imports comes back here, so it is no cycle (tests/test_imports.py checks).
    from mathtune.evaluate.benchmarks import resolve_benchmarks

    return {bench.name: [item.question for item in bench.load()] for bench in resolve_benchmarks(names, data_seed)}


def write_jsonl(conversations: Iterable[Conversation], path: str | os.PathLike[str]) -> None:
    """Write ``{"messages": [...]}`` lines atomically: a temporary file in the same folder, then a rename."""
    atomic.write_jsonl(path, ({"messages": list(row.messages)} for row in conversations))
