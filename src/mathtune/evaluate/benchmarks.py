"""Benchmark registry: named evaluation sets as lists of ``BenchItem``. The names live in ``mathtune.sets``.

Built in, offline:

- ``rg:<task>`` for every task in ``mathtune.data.generators``: the task's held-out pool (1000 items), disjoint from
  the training rows ``generate(task, n, data_seed)`` makes for the same ``data_seed``.
- ``rg:<task>-unseen`` for a task with held-out structures (``rg:gsm-symbolic-unseen``: only the gsm_symbolic
  templates training never draws from, listed in ``mathtune.sets``); ``rg:<task>`` then asks seen structures only.
- ``champ``: the 270 competition problems shipped in PyPI ``champ-dataset``. Its answers are free-form English with
  math in plain text ("2^(n-1)", "C(10, 5), or equivalently 252", "No integer solutions"); they are turned into
  LaTeX golds that math-verify can parse, with ``meta["golds"]`` holding every acceptable form and
  ``meta["answer_text"]`` the original. About a quarter are text answers (Yes/No, "The limit does not exist"),
  which only a string comparison can check (``meta["free_form"]`` is True for them).

From the Hugging Face hub (``datasets.load_dataset``): ``gsm8k`` (openai/gsm8k main test, 1319), ``math500``
(HuggingFaceH4/MATH-500 test, 500), ``cmath`` (weitianwen/cmath test, 1098, Chinese), ``svamp`` (ChilleD/SVAMP
test, 300). Without network pass a local copy: ``get_benchmark("gsm8k", local_path=...)`` or the name syntax
``"gsm8k=/data/gsm8k_test.jsonl"``; ``"LABEL:gsm8k=PATH"`` also names it LABEL, so several copies can run in one
evaluation. A local copy is a .jsonl/.json/.parquet/.csv file with the hub's columns, or a folder holding a clone of
the hub repository (its test split's files are read); both go through ``mathtune.data.local``'s reader.

Checkers: ``math`` (gold is a number or LaTeX; math-verify with fallbacks), ``rg`` (``rg_score``), ``choice``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mathtune import sets
from mathtune.data import generators
from mathtune.errors import DataError, UserError, first_line
from mathtune.suggest import did_you_mean

PROMPT_EN = generators.PROMPT
PROMPT_ZH = "{question}\n\n请逐步推理，并把最终答案写在 \\boxed{{}} 中。"


@dataclass(frozen=True)
class BenchItem:
    """One evaluation question.

    id: stable identifier within the benchmark.
    question: the question text, without instructions.
    gold: the reference answer (plain number, LaTeX, or text for some logic/champ items).
    meta: extra data: for ``rg`` items ``task``, ``rg_name`` and ``entry`` (for ``rg_score``); for champ ``golds``
        (every acceptable gold; a prediction matching any is right), ``answer_text`` and ``free_form``.
    """

    id: str
    question: str
    gold: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Benchmark:
    """A named evaluation set.

    name: registry name ("gsm8k", "rg:arithmetic", ...).
    language: "en" or "zh".
    checker: "math", "rg" or "choice" (how the grader compares a prediction with ``BenchItem.gold``).
    prompt: str.format template with ``{question}``; zero-shot, asks for the final answer in \\boxed{}.
    _items: returns every item (built lazily on first use, then cached).
    """

    name: str
    language: str
    checker: str
    prompt: str
    _items: Callable[[], list[BenchItem]] = field(repr=False, compare=False)

    def render(self, question: str) -> str:
        """The prompt for one question."""
        return self.prompt.format(question=question)

    def load(self, limit: int | None = None, seed: int = 0) -> list[BenchItem]:
        """All items, or a seeded random subset of ``limit`` items kept in benchmark order."""
        items = self._items()
        if limit is None or limit >= len(items):
            return items
        if limit < 0:
            raise UserError(f"benchmark limit must be >= 0, got {limit}")
        keep = sorted(random.Random(seed).sample(range(len(items)), limit))
        return [items[i] for i in keep]


# ---- reasoning-gym ---------------------------------------------------------------------------------------------

# Numeric tasks go through math-verify (robust to "-4.0", "1,000"); fractions need rg's exact lowest-terms check
# (math-verify would accept an unsimplified equal fraction) and the logic tasks have text answers.
_RG_CHECKER = {"gsm-symbolic": "math", "arithmetic": "math", "equations": "math", "number_sequence": "math",
               "chain_sum": "math"}


def _rg_items(task: str, unseen: bool, data_seed: int) -> list[BenchItem]:
    name = f"rg:{task}{sets.UNSEEN_SUFFIX if unseen else ''}"
    return [
        BenchItem(
            id=f"{name}/{item['index']}",
            question=item["question"],
            gold=item["answer"],
            meta={"task": task, "rg_name": item["rg_name"], "entry": item["entry"], "structure": item["structure"]},
        )
        for item in generators.eval_items(task, generators.EVAL_POOL, data_seed, unseen=unseen)
    ]


@lru_cache(maxsize=16)
def _rg_scorer(rg_name: str) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(rg_name, seed=0, size=1)


_LATEX_LOGIC = {
    r"\lor": "∨",
    r"\vee": "∨",
    r"\land": "∧",
    r"\wedge": "∧",
    r"\leftrightarrow": "↔",
    r"\iff": "↔",
    r"\rightarrow": "→",
    r"\to": "→",
    r"\implies": "→",
    r"\neg": "¬",
    r"\lnot": "¬",
}


def _clean_rg_answer(answer: str, rg_name: str) -> str:
    """Undo LaTeX wrapping a model puts around a plain answer, so reasoning-gym's literal checkers can match it."""
    text = answer.strip().strip("$").strip()
    text = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", text)
    if rg_name == "propositional_logic":
        for latex, symbol in sorted(_LATEX_LOGIC.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(latex, symbol)
        text = text.replace("\\", "")
    text = text.strip().rstrip(".").strip()
    if rg_name == "syllogism":
        text = text.capitalize()
    return text


def rg_score(item: BenchItem, answer: str | None) -> float:
    """reasoning-gym's score for an extracted answer (the content of \\boxed{}): 1.0 right, lower partial or wrong.

    Calls ``dataset.score_answer(answer, entry)`` of the task's dataset after light clean-up: ``\\text{}`` and ``$``
    removed, a trailing period dropped, Yes/No capitalised for syllogism, LaTeX logic operators turned into the
    symbols propositional_logic uses. propositional_logic accepts any valid non-trivial conclusion, not only the gold.
    """
    if answer is None or "rg_name" not in item.meta:
        return 0.0
    rg_name = item.meta["rg_name"]
    return float(_rg_scorer(rg_name).score_answer(_clean_rg_answer(answer, rg_name), item.meta["entry"]))


# ---- champ -----------------------------------------------------------------------------------------------------


def _wrap_calls(text: str, name: str, before: str, after: str) -> str:
    """Rewrite ``name(...)`` (balanced) as ``before...after``."""
    start = text.find(name + "(")
    while start != -1:
        depth, end = 0, start + len(name)
        for end in range(start + len(name), len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        if depth:
            return text
        text = text[:start] + before + text[start + len(name) + 1 : end] + after + text[end + 1 :]
        start = text.find(name + "(", start + len(before))
    return text


def champ_latex(expr: str) -> str:
    """CHAMP's plain-text math ("2^(n-1)", "C(10, 5)", "sqrt(3)/3") as LaTeX math-verify parses."""
    text = expr.strip().replace("−", "-").replace("±", r"\pm ").replace("≥", r"\geq ").replace("≤", r"\leq ")
    text = re.sub(r"\bC\(([^(),]+),\s*([^(),]+)\)", r"\\binom{\1}{\2}", text)
    text = _wrap_calls(text, "sqrt", r"\sqrt{", "}")
    text = _wrap_calls(text, "floor", r"{\lfloor ", r" \rfloor}")  # braced: it can be an exponent
    text = _wrap_calls(text, "^", "^{", "}")
    text = _wrap_calls(text, "_", "_{", "}")
    return re.sub(r"\bsum_", r"\\sum_", text).replace("...", r"\ldots ")


_CHAMP_PHRASES = [
    r"^The limit exists and is equal to (?P<x>.+)$",
    r"^The only possible value for the limit is (?P<x>.+)$",
    r"^(?P<x>-?[\d/]+) is the only possible value$",
    r"^(?P<x>-?\w+) (?:values|pairs|roots|inequalities|times)$",
    r"^(?P<x>[^()]+?) \((?:i\.e\.|none|no )[^()]*\)$",
]


_ENGLISH = re.compile(r"[A-Za-z]{3,}|\b(?:or|no|is|of|if|an|at|to|by|in)\b", re.IGNORECASE)


def _is_math(text: str) -> bool:
    return bool(text) and all(w in {"sqrt", "floor", "sum"} for w in _ENGLISH.findall(text))


def champ_golds(answer: str) -> tuple[list[str], bool]:
    """Acceptable golds for a CHAMP answer (simplest first) and whether it is free-form text."""
    parts = re.split(r",? or (?:equivalently|an equivalent form such as) ", answer)
    parts = [re.sub(r",? or approximately .*$", "", p).strip() for p in parts]
    golds: list[str] = []
    for part in parts:
        for pattern in _CHAMP_PHRASES:
            match = re.match(pattern, part)
            if match:
                part = match.group("x").strip()
                break
        if _is_math(part):
            # "376 and 625", "1, 4 and 9": a set of values
            golds.append(champ_latex(re.sub(r"\s+and\s+", ", ", part)))
        elif re.fullmatch(r"[\d, ]+ and \d+", part):
            golds.append(part.replace(" and ", ", "))
    if golds:
        return list(reversed(golds)), False
    return [answer.strip()], True


def _champ_items() -> list[BenchItem]:
    from champ_dataset import load as champ_load  # parses a 72 MB JSON file: only when asked for

    items = []
    for problem in champ_load("v0").problems.values():
        golds, free_form = champ_golds(problem.answer)
        meta = {"category": problem.category, "answer_text": problem.answer, "golds": golds, "free_form": free_form}
        items.append(BenchItem(problem.identifier, problem.text, golds[0], meta))
    return items


# ---- hub sets ----------------------------------------------------------------------------------------------------


def _plain_number(value: Any) -> str:
    """8.0 -> "8", "1,000" -> "1000"; other text unchanged."""
    text = str(value).strip().replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def _gsm8k_item(row: dict[str, Any], index: int) -> BenchItem:
    gold = row["answer"].split("####")[-1].strip().replace(",", "")
    return BenchItem(f"gsm8k/{index}", row["question"], gold, {"solution": row["answer"]})


def _math500_item(row: dict[str, Any], index: int) -> BenchItem:
    meta = {k: row[k] for k in ("subject", "level", "solution") if k in row}
    return BenchItem(row.get("unique_id", f"math500/{index}"), row["problem"], str(row["answer"]).strip(), meta)


def _cmath_item(row: dict[str, Any], index: int) -> BenchItem:
    meta = {k: row[k] for k in ("grade", "reasoning_step", "num_digits") if k in row}
    return BenchItem(f"cmath/{row.get('id', index)}", row["question"], _plain_number(row["golden"]), meta)


def _svamp_item(row: dict[str, Any], index: int) -> BenchItem:
    question = row.get("question_concat") or f"{row['Body'].strip()} {row['Question'].strip()}"
    meta = {k: row[k] for k in ("Equation", "Type") if k in row}
    return BenchItem(str(row.get("ID", f"svamp/{index}")), question.strip(), _plain_number(row["Answer"]), meta)


_TO_ITEM: dict[str, Callable[[dict[str, Any], int], BenchItem]] = {
    "gsm8k": _gsm8k_item,
    "math500": _math500_item,
    "cmath": _cmath_item,
    "svamp": _svamp_item,
}
"""How a row of each hub test set (mathtune.sets.test_sets) becomes an item."""


def _local_rows(name: str, named: sets.NamedSet, path: Path) -> list[tuple[int, object]]:
    """A local copy's test rows, read like any local data (mathtune.data.local), a cloned repository's test files."""
    from mathtune.data.local import find_split_files, read_rows

    if not path.exists():
        raise UserError(f"benchmark '{name}': local copy {path} does not exist")
    assert named.test is not None
    # Each row keeps its file for error messages: a folder may hold several.
    files = find_split_files(path, named.test, named.subsets)
    return [(line, (str(file), row)) for file in files for line, row in read_rows(file)]


def _hub_rows(name: str, named: sets.NamedSet) -> list[tuple[int, object]]:
    from ..data.hub import load_hf_split

    assert named.hf_id is not None and named.test is not None
    try:
        rows = load_hf_split(named.hf_id, named.subsets[0], named.test)
    except Exception as exc:  # offline, gated, renamed: all end the same way for the user
        raise UserError(
            f"benchmark '{name}': cannot load {named.hf_id} from the Hugging Face hub ({first_line(exc)}); "
            f"pass a local copy as {name}=PATH (.jsonl/.parquet of the {named.test} split, or a clone of the repo)"
        ) from None
    return [(index, (named.hf_id, row)) for index, row in enumerate(rows, start=1)]


def _hub_items(name: str, local_path: str | None) -> list[BenchItem]:
    named = sets.find_set(name, "test")
    assert named is not None
    rows = _local_rows(name, named, Path(local_path).expanduser()) if local_path else _hub_rows(name, named)
    items = []
    for index, (line, (source, row)) in enumerate(rows):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict):
            raise DataError(source, line, f"a {name} row must be an object, got {type(row).__name__}")
        missing = [f for f in named.test_fields if f not in row]
        if missing:
            need = ", ".join(named.test_fields)
            raise DataError(source, line, f"missing field '{missing[0]}' ({name} rows need {need})")
        try:
            items.append(_TO_ITEM[named.name](row, index))
        except (AttributeError, TypeError, ValueError) as exc:
            raise DataError(source, line, f"bad {name} row: {exc}") from None
    return items


# ---- registry ----------------------------------------------------------------------------------------------------


def list_benchmarks() -> list[str]:
    """Every benchmark name: built-in first (each rg task followed by its unseen split, if any), then the hub sets."""
    return sets.benchmark_names()


def _cached(load: Callable[[], list[BenchItem]]) -> Callable[[], list[BenchItem]]:
    cache: list[list[BenchItem]] = []

    def items() -> list[BenchItem]:
        if not cache:
            cache.append(load())
        return list(cache[0])

    return items


_LABEL = re.compile(r"[A-Za-z0-9][\w.-]*")


def parse_name(name: str) -> tuple[str | None, str, str | None]:
    """(label, benchmark, local path) of ``name``, ``name=PATH`` or ``LABEL:name=PATH``.

    A label names one local copy in reports and output folders, so two copies of one benchmark can run together.
    """
    head, sep, path = name.strip().partition("=")
    label = None
    if sep and ":" in head and not head.strip().lower().startswith(sets.GENERATOR_PREFIX):
        label, _, head = head.partition(":")
        label = label.strip()
        if not _LABEL.fullmatch(label):
            raise UserError(f"benchmark '{name}': the label before ':' must be letters, digits, '_', '.' or '-'")
    return label, head.strip(), (path.strip() or None) if sep else None


def get_benchmark(name: str, data_seed: int = 42, local_path: str | None = None) -> Benchmark:
    """A benchmark by name; ``name=PATH`` is the same as passing ``local_path`` and ``LABEL:name=PATH`` also names it
    LABEL. Nothing is loaded until ``load``."""
    label, raw, path = parse_name(name)
    local_path = local_path or path
    key = raw.lower()
    if key.startswith(sets.GENERATOR_PREFIX):
        found = _rg_task(key[len(sets.GENERATOR_PREFIX) :])
        if found is not None:
            _no_local(raw, local_path)
            task, unseen = found
            title = f"rg:{task}{sets.UNSEEN_SUFFIX if unseen else ''}"
            checker = _RG_CHECKER.get(task, "rg")
            return Benchmark(title, "en", checker, PROMPT_EN, _cached(lambda: _rg_items(task, unseen, data_seed)))
    if key == "champ":
        _no_local(raw, local_path)
        return Benchmark("champ", "en", "math", PROMPT_EN, _cached(_champ_items))
    named = sets.find_set(key, "test")
    if named is not None:
        prompt = PROMPT_ZH if named.language == "zh" else PROMPT_EN
        load = _cached(lambda: _hub_items(named.name, local_path))
        return Benchmark(label or named.name, named.language, "math", prompt, load)
    known = list_benchmarks()
    raise UserError(f"unknown benchmark '{name}'; known benchmarks: {', '.join(known)}{did_you_mean(raw, known)}")


def dir_name(name: str) -> str:
    """The output folder of a benchmark name: 'rg:gsm-symbolic' -> 'rg_gsm-symbolic'."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "benchmark"


def resolve_benchmarks(names: Iterable[str], data_seed: int = 42) -> list[Benchmark]:
    """Every named benchmark (nothing loaded yet); two that would share a report entry or an output folder (say
    ``gsm8k=a.jsonl gsm8k=b.jsonl``) are refused, so one never overwrites the other."""
    given = list(names)
    resolved = [get_benchmark(name, data_seed=data_seed) for name in given]
    first: dict[str, str] = {}
    for name, bench in zip(given, resolved, strict=True):
        folder = dir_name(bench.name).lower()  # case-insensitive file systems merge 'A' and 'a'
        if folder in first:
            raise UserError(
                f"benchmarks '{first[folder]}' and '{name}' would both be reported as '{bench.name}'; "
                f"give each local copy its own label, e.g. LABEL:{parse_name(name)[1]}=PATH"
            )
        first[folder] = name
    return resolved


def _rg_task(name: str) -> tuple[str, bool] | None:
    try:
        return sets.rg_benchmark(name)
    except UserError:
        return None


def _no_local(name: str, local_path: str | None) -> None:
    if local_path:
        raise UserError(f"benchmark '{name}' is built in and takes no local path")
