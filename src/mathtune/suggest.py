""""Did you mean" for mistyped set, task and benchmark names (difflib's closest matches)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

CUTOFF = 0.6  # difflib's default: 'blossom-math' finds 'blossom-math-v2' (0.89), 'someone/some-set' finds nothing


def _spellings(name: str) -> set[str]:
    """The forms a name is compared in: whole, without its org ('AI-ModelScope/x' -> 'x'), without 'rg:'."""
    lowered = name.strip().lower()
    forms = {lowered, lowered.rsplit("/", 1)[-1], lowered.removeprefix("rg:")}
    return {form.replace("_", "-") for form in forms if form}


def close_names(wanted: str, known: Iterable[str] | Mapping[str, str], n: int = 3) -> list[str]:
    """Up to `n` names of `known` closest to `wanted`, best first, case-insensitively.

    `known` may map spellings (aliases) to the name to suggest, so an alias that matches suggests its canonical name.
    """
    targets = dict(known) if isinstance(known, Mapping) else {name: name for name in known}
    by_form: dict[str, str] = {}
    for spelling, name in targets.items():
        for form in _spellings(spelling):
            by_form.setdefault(form, name)
    scored: dict[str, float] = {}
    for form in _spellings(wanted):
        for match in difflib.get_close_matches(form, by_form, n=len(by_form), cutoff=CUTOFF):
            ratio = difflib.SequenceMatcher(None, form, match).ratio()
            name = by_form[match]
            scored[name] = max(scored.get(name, 0.0), ratio)
    return sorted(scored, key=lambda name: -scored[name])[:n]


def did_you_mean(wanted: str, known: Iterable[str] | Mapping[str, str]) -> str:
    """'; did you mean X or Y?' for the closest names, or '' when none is close."""
    names = close_names(wanted, known)
    if not names:
        return ""
    quoted = [f"'{name}'" for name in names]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
    return f"; did you mean {listed}?"
