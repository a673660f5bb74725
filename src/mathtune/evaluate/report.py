"""Compare two evaluation folders question by question: accuracy before/after, the paired difference with its 95%
interval, questions fixed and broken, and a bar chart.

The interval is paired because both runs answer the same questions (matched by item id): a question's two
verdicts are correlated, and ignoring that makes the interval far too wide. With one sample per question (0/1
verdicts) we use Newcombe's method 10 (Newcombe 1998, "Improved confidence intervals for the difference between
binomial proportions based on paired data"): it combines the Wilson intervals of both accuracies with the
correlation of the pairs, and keeps good coverage for small n and for accuracies near 0 or 1, where the textbook
Wald interval collapses to a point. With several samples per question the per-question scores are fractions, and
we use the normal interval of the mean paired difference.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import staged_file
from ..errors import UserError
from ..jsonl import read_jsonl
from .runner import Z95, commonest_answer, wilson_interval


@dataclass(frozen=True)
class Comparison:
    """One benchmark in both runs, over the questions both answered."""

    benchmark: str
    n: int  # questions matched by id
    accuracy_a: float
    accuracy_b: float
    diff: float  # accuracy_b - accuracy_a
    diff_low: float
    diff_high: float
    fixed: int  # wrong in A, right in B
    broken: int  # right in A, wrong in B
    unmatched: int  # questions in only one of the runs
    commonest: float | None = None  # accuracy of always giving the matched questions' commonest gold answer


def newcombe_paired_interval(both: int, only_a: int, only_b: int, neither: int,
                             z: float = Z95) -> tuple[float, float]:
    """Newcombe's method-10 interval for p_B - p_A from paired 0/1 outcomes (counts of the four cells)."""
    n = both + only_a + only_b + neither
    if n == 0:
        return -1.0, 1.0
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    low_a, high_a = wilson_interval(both + only_a, n, z)
    low_b, high_b = wilson_interval(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    # Newcombe's phi: a positive cross-product difference is shrunk by n/2 (a continuity correction), to 0 at least.
    cross = both * neither - only_a * only_b
    cross = max(0.0, cross - n / 2) if cross > 0 else cross
    phi = cross / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p_b - low_b) ** 2 - 2 * phi * (p_b - low_b) * (high_a - p_a) + (high_a - p_a) ** 2))
    eps = math.sqrt(max(0.0, (high_b - p_b) ** 2 - 2 * phi * (high_b - p_b) * (p_a - low_a) + (p_a - low_a) ** 2))
    return max(-1.0, p_b - p_a - delta), min(1.0, p_b - p_a + eps)


def paired_normal_interval(diffs: list[float], z: float = Z95) -> tuple[float, float]:
    """Mean +- z standard errors of paired differences; the widest interval when there are fewer than two."""
    n = len(diffs)
    if n < 2:
        return -1.0, 1.0
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    half = z * math.sqrt(var / n)
    return max(-1.0, mean - half), min(1.0, mean + half)


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]:
    """(summary, {benchmark: {item id: prediction record}}) of an evaluation folder."""
    folder = Path(run_dir)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"'{folder}' is not an evaluation folder: summary.json is missing")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{summary_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    benchmarks = summary.get("benchmarks") if isinstance(summary, dict) else None
    if not isinstance(benchmarks, dict) or not all(isinstance(b, dict) for b in benchmarks.values()):
        raise UserError(f"{summary_path}: not a mathtune evaluation summary (no 'benchmarks' mapping)")
    records: dict[str, dict[str, dict[str, Any]]] = {}
    for name, bench in benchmarks.items():
        path = folder / str(bench.get("dir", name)) / "predictions.jsonl"
        if not path.is_file():
            raise UserError(f"{path} is missing (listed in {summary_path})")
        rows: dict[str, dict[str, Any]] = {}
        for line_no, row in read_jsonl(path):
            try:
                rows[str(row["id"])] = {"id": row["id"], "score": float(row["score"]), "correct": row["correct"],
                                        **({"gold": row["gold"]} if "gold" in row else {})}
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{path}:{line_no}: not a prediction record (needs id, score, correct)") from None
        records[name] = rows
    return summary, records


def compare_runs(dir_a: str | Path, dir_b: str | Path) -> list[Comparison]:
    """A `Comparison` for every benchmark present in both folders."""
    _, records_a = load_run(dir_a)
    _, records_b = load_run(dir_b)
    common = [name for name in records_a if name in records_b]
    if not common:
        raise UserError(f"'{dir_a}' and '{dir_b}' share no benchmark")
    return [_compare_one(name, records_a[name], records_b[name]) for name in common]


def _compare_one(name: str, rows_a: dict[str, dict], rows_b: dict[str, dict]) -> Comparison:
    ids = [i for i in rows_a if i in rows_b]
    unmatched = len(set(rows_a) ^ set(rows_b))
    pairs = [(rows_a[i], rows_b[i]) for i in ids]
    scores = [(float(a["score"]), float(b["score"])) for a, b in pairs]
    n = len(pairs)
    acc_a = sum(s for s, _ in scores) / n if n else 0.0
    acc_b = sum(s for _, s in scores) / n if n else 0.0
    fixed = sum(not a["correct"] and b["correct"] for a, b in pairs)
    broken = sum(a["correct"] and not b["correct"] for a, b in pairs)
    if all(s in (0.0, 1.0) for pair in scores for s in pair):
        both = sum(a == 1.0 and b == 1.0 for a, b in scores)
        only_a = sum(a == 1.0 and b == 0.0 for a, b in scores)
        only_b = sum(a == 0.0 and b == 1.0 for a, b in scores)
        low, high = newcombe_paired_interval(both, only_a, only_b, n - both - only_a - only_b)
    else:
        low, high = paired_normal_interval([b - a for a, b in scores])
    golds = [b["gold"] for _, b in pairs if "gold" in b]
    commonest = commonest_answer(golds)[1] if golds else None
    return Comparison(name, n, acc_a, acc_b, acc_b - acc_a, low, high, fixed, broken, unmatched, commonest)


def format_comparison(rows: list[Comparison], label_a: str, label_b: str) -> str:
    """The comparison as a text table, accuracies and differences in percentage points."""
    table = [("benchmark", "n", f"A: {label_a}", f"B: {label_b}", "B - A [95% CI]", "fixed", "broken",
              "commonest answer")]
    for c in rows:
        table.append((c.benchmark, str(c.n), f"{100 * c.accuracy_a:.1f}%", f"{100 * c.accuracy_b:.1f}%",
                      f"{100 * c.diff:+.1f} [{100 * c.diff_low:+.1f}, {100 * c.diff_high:+.1f}]",
                      str(c.fixed), str(c.broken), "-" if c.commonest is None else f"{100 * c.commonest:.1f}%"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    notes = [f"note: {c.benchmark}: {c.unmatched} question(s) appear in only one run and are left out"
             for c in rows if c.unmatched]
    lines.append("fixed: wrong in A, right in B; broken: right in A, wrong in B; CI: paired, per question; "
                 "commonest answer: the accuracy of always giving the commonest correct answer")
    return "\n".join(lines + notes)


def draw_chart(rows: list[Comparison], label_a: str, label_b: str, path: str | Path) -> Path:
    """Bars of both accuracies per benchmark with Wilson 95% error bars, saved atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 1.6 * len(rows) + 2), 4.2), dpi=110)
    FigureCanvasAgg(fig)  # a bare Figure: no pyplot, no global backend switch for a caller that has one
    ax = fig.add_subplot()
    width = 0.38
    for offset, label, accs in ((-width / 2, label_a, [c.accuracy_a for c in rows]),
                                (width / 2, label_b, [c.accuracy_b for c in rows])):
        xs = [i + offset for i in range(len(rows))]
        intervals = [wilson_interval(a * c.n, c.n) for a, c in zip(accs, rows, strict=True)]
        # clamped: at 0% or 100% float rounding can put the bound a hair past the estimate
        err = [[max(0.0, 100 * (a - lo)) for a, (lo, _) in zip(accs, intervals, strict=True)],
               [max(0.0, 100 * (hi - a)) for a, (_, hi) in zip(accs, intervals, strict=True)]]
        bars = ax.bar(xs, [100 * a for a in accs], width, yerr=err, capsize=3, label=label)
        colour = bars.patches[0].get_facecolor()
        # A 0% bar has no height, so nothing in the plot showed whose it was: a line in its colour marks its base
        # (drawn over the axis) and its value is written in that colour too.
        ax.hlines([0.0] * len(xs), [x - width / 2 for x in xs], [x + width / 2 for x in xs], colors=[colour],
                  linewidth=3, zorder=3, clip_on=False)
        for x, a, (_, hi) in zip(xs, accs, intervals, strict=True):  # above the error bar, not through it
            ax.text(x, 100 * max(a, hi) + 1.5, f"{100 * a:.1f}", ha="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(rows)), [f"{c.benchmark}\n{100 * c.diff:+.1f} pts (n={c.n})" for c in rows], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 112)
    ax.set_title("accuracy per benchmark (95% Wilson intervals)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    target = Path(path)
    with staged_file(target) as tmp:
        fig.savefig(tmp, format="png")  # the format named: the temporary file's suffix is not .png
    return target


def compare(dir_a: str | Path, dir_b: str | Path, out_dir: str | Path | None = None,
            labels: tuple[str, str] | None = None) -> str:
    """Text table comparing two evaluation folders; also writes comparison.png into `out_dir` (default `dir_b`)."""
    rows = compare_runs(dir_a, dir_b)
    label_a, label_b = labels or (Path(dir_a).name, Path(dir_b).name)
    if label_a == label_b:
        label_a, label_b = "A", "B"
    chart = draw_chart(rows, label_a, label_b, Path(out_dir or dir_b) / "comparison.png")
    return f"{format_comparison(rows, label_a, label_b)}\nchart: {chart}"
