"""logging.jsonl -> images/train_loss.png: the raw loss, its smoothed curve, and the eval loss."""

from __future__ import annotations

from pathlib import Path

from .atomic import staged_file
from .errors import UserError
from .jsonl import read_jsonl


def smoothing_weight(points: int) -> float:
    """EMA weight whose memory is about 5% of the curve, at most 0.9 (TensorBoard's default feel for long runs).

    A fixed 0.9 remembers about ten points, a quarter of a run logged 37 times, so its curve lagged far behind a
    falling loss.
    """
    return min(0.9, max(0.0, 1 - 20 / points)) if points else 0.0


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average with bias correction, so the curve starts at the data; by default
    `smoothing_weight(len(values))`."""
    weight = smoothing_weight(len(values)) if weight is None else weight
    out, avg = [], 0.0
    for k, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**k))
    return out


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "logging.jsonl"
    if not path.is_file():
        raise UserError(f"'{run_dir}' has no logging.jsonl; pass a run folder written by mathtune sft")
    return [record for _, record in read_jsonl(path)]


MIN_SPAN = 0.1
"""The loss axis spans at least this fraction of the largest loss shown: matplotlib fits the axis to the data, so
a run whose loss moved 1% filled the whole height and looked dramatic."""


def loss_limits(values: list[float]) -> tuple[float, float]:
    """The loss axis's (bottom, top): the data with 5% margins, widened about its middle to MIN_SPAN of the largest
    value, and never below 0 for losses that are not."""
    low, high = min(values), max(values)
    span = max(high - low, MIN_SPAN * max(abs(high), abs(low)), 1e-6)
    middle = (low + high) / 2
    bottom, top = middle - 0.55 * span, middle + 0.55 * span
    if low >= 0 and bottom < 0:
        bottom, top = 0.0, top - bottom
    return bottom, top


def draw_loss(records: list[dict], title: str):
    """A matplotlib Figure of the raw loss, its smoothed curve and the eval loss, or None with no loss values."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    train = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))]
    evals = [(r["step"], r["eval_loss"]) for r in records if isinstance(r.get("eval_loss"), (int, float))]
    if not train and not evals:
        return None
    fig = Figure(figsize=(8, 4.5), dpi=120)
    FigureCanvasAgg(fig)  # a bare Figure: no pyplot, no global backend switch for a caller that has one
    ax = fig.add_subplot()
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="#9ecae1", linewidth=1, label="train loss")
        if smoothing_weight(len(losses)) > 0:  # a short log is drawn as it is
            ax.plot(steps, smooth(list(losses)), color="#08519c", linewidth=2, label="train loss (smoothed)")
    if evals:
        steps, losses = zip(*evals, strict=True)
        ax.plot(steps, losses, "o-", color="#d94801", label="eval loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: a 3-step run had ticks at 1.5, 2.5
    ax.set_ylim(*loss_limits([loss for _, loss in train + evals]))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_run(run_dir: str | Path) -> Path:
    """Draw the run's loss curve into run_dir/images/train_loss.png and return its path."""
    run = Path(run_dir)
    fig = draw_loss(read_log(run), run.name)
    if fig is None:
        raise UserError(f"{run / 'logging.jsonl'}: no loss values to plot")
    out = run / "images" / "train_loss.png"
    with staged_file(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")  # the format named: the temporary file is not .png
    return out
