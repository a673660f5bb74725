"""GRPO's training questions with their gold answers: rg:TASK generators (the gold and, for the logic tasks, the
entry reasoning-gym's checker needs), and local files or hub sets whose rows carry a gold answer (gsm8k's
`#### N`, a single `\\boxed{}` in a `solution`/`answer`/`response`, or a short plain `answer`). A row without one is
a one-line error naming its file and line."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import sets
from ..data import generators
from ..data.formats import prompt_messages, with_default_system
from ..data.sources import GENERATOR_PREFIX, parse_spec
from ..errors import DataError, UserError
from ..evaluate.benchmarks import BenchItem, get_benchmark
from ..evaluate.grading import MAX_ANSWER_CHARS, strict_answer
from .rewards import Prompt

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)
_QUESTION_KEYS = ("question", "problem", "prompt")
_GOLD_KEYS = ("answer", "solution", "response", "output", "gold")
# A plain answer column longer than this is a worked solution without a marked final answer, not a gold.
_PLAIN_GOLD_CHARS = 100


def load_prompts(datasets: Sequence[str], seed: int, system: str | None = None) -> list[Prompt]:
    """Every training question of the --dataset entries, in order (each entry's rows sampled with `seed` when it
    asks for #N of a file or hub set)."""
    if not datasets:
        raise UserError("--dataset is required, e.g. --dataset rg:gsm-symbolic#4000")
    prompts: list[Prompt] = []
    for text in datasets:
        spec = parse_spec(text)
        if spec.name.startswith(GENERATOR_PREFIX) and spec.local_path is None:
            found = _rg_prompts(spec.name[len(GENERATOR_PREFIX):], spec.n or 1000, seed)
        else:
            found = _row_prompts(spec, seed)
        prompts += [Prompt(with_default_system(p.messages, system), p.item, p.checker, p.origin, p.language)
                    for p in found]
    return prompts


def _rg_prompts(task: str, n: int, seed: int) -> list[Prompt]:
    name = generators.canonical_task(task)
    checker = get_benchmark(f"rg:{name}").checker  # the same checker evaluation uses for this task
    prompts = []
    for row in generators.generate(name, n, seed):
        entry = generators.train_entry(row.origin, seed)
        item = BenchItem(row.origin, entry["question"], generators.task_gold(name, entry),
                         {"task": name, "rg_name": sets.RG_TASKS[name].rg_name, "entry": entry})
        prompts.append(Prompt(tuple(m for m in row.messages if m["role"] != "assistant"), item, checker,
                              row.origin))
    return prompts


def _row_prompts(spec, seed: int) -> list[Prompt]:
    from ..data.local import find_data_files, read_rows

    if spec.kind == "local":
        rows = [(str(file), line, row) for file in find_data_files(Path(spec.name)) for line, row in read_rows(file)]
    else:
        from ..data import hub

        hub_set = hub.resolve(spec.name)
        rows = [(hub_set.name, index, row) for subset in hub_set.subsets
                for index, row in enumerate(hub.fetch_rows(hub_set, subset), start=1)]
    if spec.n is not None:
        if spec.n > len(rows):
            raise UserError(f"dataset '{spec.text}' has {len(rows):,} rows, fewer than the {spec.n:,} asked for")
        rows = random.Random(seed).sample(rows, spec.n)
    return [row_prompt(row, where, line) for where, line, row in rows]


def row_prompt(row: object, where: str, line: int | None) -> Prompt:
    """One data row as a question with its gold; a DataError naming where it is when it has no gold answer."""
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, Mapping):
        raise DataError(where, line, "row must be a JSON object")
    question_row = dict(row)
    for key in _QUESTION_KEYS:
        if key in row and "query" not in row and "messages" not in row:
            question_row = {k: v for k, v in row.items() if k not in _GOLD_KEYS}
            question_row["query"] = row[key]
            break
    messages = prompt_messages(question_row, where, line)
    gold = gold_answer(row)
    if gold is None:
        raise DataError(where, line, "no gold answer: GRPO needs one per row (gsm8k's '#### N', a single \\boxed{} "
                                     f"in one of {', '.join(_GOLD_KEYS)}, or a short plain answer)")
    question = "\n".join(m["content"] for m in messages if m["role"] == "user")
    item = BenchItem(f"{where}:{line}", question, gold)
    return Prompt(tuple(messages), item, "math", f"{where}:{line}")


def gold_answer(row: Mapping) -> str | None:
    """The gold answer a row states, or None: `#### N`, else the single final box, else a short plain answer."""
    texts = [row[k] for k in _GOLD_KEYS if isinstance(row.get(k), (str, int, float)) and not isinstance(row[k], bool)]
    chat = row.get("messages") or row.get("conversations")
    if isinstance(chat, list) and chat and isinstance(chat[-1], Mapping) and \
            chat[-1].get("role", chat[-1].get("from")) in ("assistant", "gpt"):
        texts.append(chat[-1].get("content", chat[-1].get("value")))
    for text in texts:
        if not isinstance(text, str):
            return str(text)  # a number column is its own gold
        if (m := _GSM8K_FINAL.search(text)) and len(m.group(1)) <= MAX_ANSWER_CHARS:
            return m.group(1).replace(",", "")
        if (boxed := strict_answer(text)) is not None:
            return boxed
    plain = next((t for t in texts if isinstance(t, str) and 0 < len(t.strip()) <= _PLAIN_GOLD_CHARS
                  and "\n" not in t.strip()), None)
    return plain.strip() if plain is not None else None
