"""Benchmark registry: named evaluation sets as lists of ``BenchItem``.

Built in, offline:

- ``rg:<task>`` for every task in ``mathtune.data.generators``: the task's held-out pool (1000 items), disjoint from
  the training rows ``generate(task, n, data_seed)`` makes for the same ``data_seed``.
- ``champ``: the 270 competition problems shipped in PyPI ``champ-dataset``. Its answers are free-form English with
  math in plain text ("2^(n-1)", "C(10, 5), or equivalently 252", "No integer solutions"); they are turned into
  LaTeX golds that math-verify can parse, with ``meta["golds"]`` holding every acceptable form and
  ``meta["answer_text"]`` the original. About a quarter are text answers (Yes/No, "The limit does not exist"),
  which only a string comparison can check (``meta["free_form"]`` is True for them).

From the Hugging Face hub (``datasets.load_dataset``): ``gsm8k`` (openai/gsm8k main test, 1319), ``math500``
(HuggingFaceH4/MATH-500 test, 500), ``cmath`` (weitianwen/cmath test, 1098, Chinese), ``svamp`` (ChilleD/SVAMP
test, 300). Without network pass a local copy: ``get_benchmark("gsm8k", local_path=...)`` or the name syntax
``"gsm8k=/data/gsm8k_test.jsonl"``. A local copy is a .jsonl/.json/.parquet/.csv file with the hub's columns, or a
folder holding a clone of the hub repository.

Checkers: ``math`` (gold is a number or LaTeX; math-verify with fallbacks), ``rg`` (``rg_score``), ``choice``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mathtune.data import generators
from mathtune.errors import DataError, UserError, first_line
from mathtune.jsonl import read_jsonl

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
_RG_CHECKER = {"gsm-symbolic": "math", "arithmetic": "math", "equations": "math"}


def _rg_items(task: str, data_seed: int) -> list[BenchItem]:
    return [
        BenchItem(
            id=f"rg:{task}/{item['index']}",
            question=item["question"],
            gold=item["answer"],
            meta={"task": task, "rg_name": item["rg_name"], "entry": item["entry"]},
        )
        for item in generators.eval_items(task, generators.EVAL_POOL, data_seed)
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


def _number(value: Any) -> str:
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
    return BenchItem(f"cmath/{row.get('id', index)}", row["question"], _number(row["golden"]), meta)


def _svamp_item(row: dict[str, Any], index: int) -> BenchItem:
    question = row.get("question_concat") or f"{row['Body'].strip()} {row['Question'].strip()}"
    meta = {k: row[k] for k in ("Equation", "Type") if k in row}
    return BenchItem(str(row.get("ID", f"svamp/{index}")), question.strip(), _number(row["Answer"]), meta)


@dataclass(frozen=True)
class _HubSet:
    repo: str
    config: str | None
    split: str
    language: str
    fields: tuple[str, ...]  # columns every row needs
    to_item: Callable[[dict[str, Any], int], BenchItem]


_HUB: dict[str, _HubSet] = {
    "gsm8k": _HubSet("openai/gsm8k", "main", "test", "en", ("question", "answer"), _gsm8k_item),
    "math500": _HubSet("HuggingFaceH4/MATH-500", None, "test", "en", ("problem", "answer"), _math500_item),
    "cmath": _HubSet("weitianwen/cmath", None, "test", "zh", ("question", "golden"), _cmath_item),
    "svamp": _HubSet("ChilleD/SVAMP", None, "test", "en", ("Body", "Question", "Answer"), _svamp_item),
}


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl file, or of a .json file holding an array of rows (any other .json is read as JSON Lines)."""
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            return [row for row in json.loads(text) if isinstance(row, dict)]
    return [row for _, row in read_jsonl(path)]


def _local_rows(name: str, hub: _HubSet, path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise UserError(f"benchmark '{name}': local copy {path} does not exist")
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        return _read_json_rows(path)
    import datasets

    try:
        if path.is_dir():
            return list(datasets.load_dataset(str(path), hub.config, split=hub.split))
        builder = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if builder is None:
            raise UserError(f"benchmark '{name}': {path} is not .jsonl, .json, .parquet, .csv or a folder")
        return list(datasets.load_dataset(builder, data_files=str(path), split="train"))
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types for a bad local file or folder
        raise UserError(f"benchmark '{name}': cannot read {path}: {first_line(exc)}") from None


def _hub_rows(name: str, hub: _HubSet) -> list[dict[str, Any]]:
    from ..data.hub import load_hf_split

    try:
        return load_hf_split(hub.repo, hub.config, hub.split)
    except Exception as exc:  # offline, gated, renamed: all end the same way for the user
        raise UserError(
            f"benchmark '{name}': cannot load {hub.repo} from the Hugging Face hub ({first_line(exc)}); "
            f"pass a local copy as {name}=PATH (.jsonl/.parquet of the {hub.split} split, or a clone of the repo)"
        ) from None


def _hub_items(name: str, local_path: str | None) -> list[BenchItem]:
    hub = _HUB[name]
    source = str(local_path) if local_path else hub.repo
    rows = _local_rows(name, hub, Path(local_path).expanduser()) if local_path else _hub_rows(name, hub)
    items = []
    for index, row in enumerate(rows):
        missing = [f for f in hub.fields if f not in row]
        if missing:
            need = ", ".join(hub.fields)
            raise DataError(source, index + 1, f"missing field '{missing[0]}' ({name} rows need {need})")
        try:
            items.append(hub.to_item(row, index))
        except (AttributeError, TypeError, ValueError) as exc:
            raise DataError(source, index + 1, f"bad {name} row: {exc}") from None
    return items


# ---- registry ----------------------------------------------------------------------------------------------------


def list_benchmarks() -> list[str]:
    """Every benchmark name: built-in first, then the hub sets."""
    return [f"rg:{task}" for task in generators.list_tasks()] + ["champ", *_HUB]


def _cached(load: Callable[[], list[BenchItem]]) -> Callable[[], list[BenchItem]]:
    cache: list[list[BenchItem]] = []

    def items() -> list[BenchItem]:
        if not cache:
            cache.append(load())
        return list(cache[0])

    return items


def get_benchmark(name: str, data_seed: int = 42, local_path: str | None = None) -> Benchmark:
    """A benchmark by name; ``name=path`` is the same as passing ``local_path``. Nothing is loaded until ``load``."""
    raw = name.strip()
    if "=" in raw:
        raw, _, path = raw.partition("=")
        local_path = local_path or path.strip()
    key = raw.strip().lower()
    if key.startswith("rg:"):
        task = _rg_task(key[3:])
        if task is not None:
            _no_local(raw, local_path)
            checker = _RG_CHECKER.get(task, "rg")
            return Benchmark(f"rg:{task}", "en", checker, PROMPT_EN, _cached(lambda: _rg_items(task, data_seed)))
    if key == "champ":
        _no_local(raw, local_path)
        return Benchmark("champ", "en", "math", PROMPT_EN, _cached(_champ_items))
    if key in _HUB:
        prompt = PROMPT_ZH if _HUB[key].language == "zh" else PROMPT_EN
        return Benchmark(key, _HUB[key].language, "math", prompt, _cached(lambda: _hub_items(key, local_path)))
    raise UserError(f"unknown benchmark '{name}'; known benchmarks: {', '.join(list_benchmarks())}")


def _rg_task(name: str) -> str | None:
    try:
        return generators.canonical_task(name)
    except UserError:
        return None


def _no_local(name: str, local_path: str | None) -> None:
    if local_path:
        raise UserError(f"benchmark '{name}' is built in and takes no local path")
