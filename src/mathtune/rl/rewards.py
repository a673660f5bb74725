"""Reward functions: `accuracy` (mathtune's grader in strict mode: one final box that verifies against the gold),
`format` (one final box, not taken back), and the user's own from a file named with --external_plugins.

A reward function takes the completions' texts and their prompts (`Prompt`, gold included) and returns one float
per completion. Plugin functions are called as TRL calls its reward functions: `fn(completions=[...],
prompts=[...], gold=[...])`, prompts as chat messages; ms-swift's `orms = {"name": Class}` registry also works.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError, first_line
from ..evaluate.grading import format_ok, grade


@dataclass(frozen=True)
class Prompt:
    """One training question: what the policy is asked, and what grades its answers."""

    messages: tuple[dict[str, str], ...]
    """The conversation up to the answer (system and user turns)."""
    item: Any
    """An evaluate.benchmarks.BenchItem: question, gold, and for rg tasks the entry its checker needs."""
    checker: str
    """math, rg or choice (evaluate.grading.grade)."""
    origin: str
    """Where the row came from (path:line, rg:task[index]), for messages."""
    language: str = "en"


RewardFn = Callable[[Sequence[str], Sequence[Prompt]], list[float]]


def accuracy(completions: Sequence[str], prompts: Sequence[Prompt]) -> list[float]:
    """1.0 where the single final box is right, else 0.0. Strict mode: hedging (several boxes, a list of every
    number, an answer taken back, the question restated) earns nothing, so the policy cannot learn to game it."""
    return [float(grade(text, p.item, p.checker, p.language, mode="strict").correct)
            for text, p in zip(completions, prompts, strict=True)]


def format_reward(completions: Sequence[str], prompts: Sequence[Prompt]) -> list[float]:
    """1.0 where the completion ends in exactly one distinct final box, not taken back (right or wrong)."""
    return [float(format_ok(text)) for text in completions]


BUILTIN: dict[str, RewardFn] = {"accuracy": accuracy, "format": format_reward}


def load_plugins(files: Sequence[str]) -> dict[str, Any]:
    """The reward functions the named Python files define (top-level callables and ms-swift's `orms` dict), by name.
    A file is run only because the user named it."""
    found: dict[str, Any] = {}
    for index, file in enumerate(files):
        path = Path(file)
        if not path.is_file() or path.suffix != ".py":
            raise UserError(f"--external_plugins '{file}' is not a Python file")
        spec = importlib.util.spec_from_file_location(f"mathtune_reward_plugin_{index}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any error it raises is theirs, said in one line
            raise UserError(f"--external_plugins '{file}' failed to load: {type(exc).__name__}: "
                            f"{first_line(exc, 160)}") from None
        found.update({name: obj for name, obj in vars(module).items()
                      if callable(obj) and not name.startswith("_") and getattr(obj, "__module__", "") == spec.name})
        orms = getattr(module, "orms", None)
        if isinstance(orms, dict):
            found.update({name: obj() if inspect.isclass(obj) else obj for name, obj in orms.items()})
    return found


def resolve_rewards(names: Sequence[str], plugin_files: Sequence[str] = ()) -> list[tuple[str, RewardFn]]:
    """(name, function) for each --reward_funcs name: built in, or defined in one of `plugin_files`."""
    plugins = load_plugins(plugin_files) if plugin_files else {}
    resolved = []
    for name in names:
        if name in BUILTIN:
            resolved.append((name, BUILTIN[name]))
        elif name in plugins:
            resolved.append((name, _plugin_reward(name, plugins[name])))
        else:
            where = f"; the plugins define {', '.join(sorted(plugins)) or 'none'}" if plugin_files else \
                "; a function of your own needs --external_plugins FILE.py"
            raise UserError(f"--reward_funcs '{name}' is not one of {', '.join(BUILTIN)}{where}")
    return resolved


def _plugin_reward(name: str, fn: Callable[..., Any]) -> RewardFn:
    def reward(completions: Sequence[str], prompts: Sequence[Prompt]) -> list[float]:
        try:
            values = fn(completions=list(completions), prompts=[list(p.messages) for p in prompts],
                        gold=[str(p.item.gold) for p in prompts])
        except Exception as exc:  # the user's code: said in one line, naming it
            raise UserError(f"reward function '{name}' raised {type(exc).__name__}: {first_line(exc, 160)}") from None
        return check_values(name, values, len(completions))

    return reward


def check_values(name: str, values: Any, expected: int) -> list[float]:
    """A reward function's output as floats; one line naming it when it is not one finite number per completion
    (None counts as 0.0, as TRL leaves such a completion out of the score)."""
    try:
        floats = [0.0 if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        raise UserError(f"reward function '{name}' must return a list of numbers, got {type(values).__name__}") \
            from None
    if len(floats) != expected:
        raise UserError(f"reward function '{name}' returned {len(floats)} values for {expected} completions")
    if not all(math.isfinite(v) for v in floats):
        raise UserError(f"reward function '{name}' returned a value that is not a finite number")
    return floats
