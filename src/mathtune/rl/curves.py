"""logging.jsonl of a GRPO run -> images/grpo_curves.png (reward per function and total, accuracy, reward std,
share of groups without reward variance, KL, clip ratio, completion length, seconds per step, and with --eval_steps
the held-out accuracy of each --eval_benchmarks benchmark) and sft's images/train_loss.png."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import staged_file
from ..errors import UserError
from ..plot import plot_run, read_log, smooth, smoothing_weight

PANELS = (("reward", "reward (total and per function)"), ("accuracy", "accuracy (sampled, training questions)"),
          ("reward_std", "reward std"),
          ("frac_reward_zero_std", "groups with zero reward std"), ("kl", "KL to reference"),
          ("clip_ratio", "clip ratio"), ("completion_length", "completion length (tokens)"),
          ("step_s", "seconds per step"))
HELD_OUT = ("eval_accuracy", "held-out accuracy (greedy)")  # a panel only when the log has it (--eval_steps)


def draw_curves(run_dir: Path) -> str:
    """Draw the run's curves; a picture that cannot be drawn is said, not raised (the checkpoints are saved)."""
    try:
        records = read_log(run_dir)
        plot_run(run_dir)
        return str(_draw(records, run_dir))
    except (UserError, OSError) as exc:
        return f"not drawn ({exc})"


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def _companions(key: str, records: list[dict]) -> list[str]:
    """Measures drawn in `key`'s panel too: each reward function beside the total, and with --dynamic_sample the
    zero-std share of the first sampling round (what it would have been without resampling) beside the trained one."""
    names = dict.fromkeys(k for r in records for k in r)
    if key == "reward":
        return [k for k in names if k.startswith("rewards/")]
    if key == "frac_reward_zero_std":
        return [k for k in names if k == "frac_reward_zero_std_sampled"]
    if key == HELD_OUT[0]:
        return [k for k in names if k.startswith(f"{HELD_OUT[0]}/")]
    return []


def _before(run_dir: Path, bench: str) -> float | None:
    """`bench`'s accuracy in the run's eval/before, or None when it was not measured there."""
    try:
        summary = json.loads((run_dir / "eval" / "before" / "summary.json").read_text(encoding="utf-8"))
        return float(summary["benchmarks"][bench]["accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _draw(records: list[dict], run_dir: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = PANELS + ((HELD_OUT,) if _companions(HELD_OUT[0], records) else ())
    rows = math.ceil(len(panels) / 4)
    fig = Figure(figsize=(14, 4 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for index, (key, title) in enumerate(panels, start=1):
        ax = fig.add_subplot(rows, 4, index)
        keys = [key] + _companions(key, records)
        drawn = 0
        for name in keys:
            steps, values = _series(records, name)
            if not values:
                continue
            drawn += 1
            if key == HELD_OUT[0]:  # a few points, each a whole evaluation: drawn as they are, not smoothed
                bench = name.split("/", 1)[1]
                start = _before(run_dir, bench)  # step 0: the --eval_benchmarks answers before training
                if start is not None:
                    steps, values = [0, *steps], [start, *values]
                ax.plot(steps, values, marker="o", linewidth=1.5, label=bench)
                continue
            line, = ax.plot(steps, values, linewidth=1, alpha=0.5, label=name)
            if smoothing_weight(len(values)) > 0:
                ax.plot(steps, smooth(values), color=line.get_color(), linewidth=2)
        if not ax.lines:
            ax.text(0.5, 0.5, "not measured" + (" (beta 0)" if key == "kl" else ""), ha="center", va="center",
                    transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if drawn > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f"GRPO {run_dir.name}")
    fig.tight_layout()
    out = run_dir / "images" / "grpo_curves.png"
    out.parent.mkdir(exist_ok=True)
    with staged_file(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
