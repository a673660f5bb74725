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


def plot_run(run_dir: str | Path) -> Path:
    """Draw the run's loss curve into run_dir/images/train_loss.png and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    records = read_log(run)
    train = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))]
    evals = [(r["step"], r["eval_loss"]) for r in records if isinstance(r.get("eval_loss"), (int, float))]
    if not train and not evals:
        raise UserError(f"{run / 'logging.jsonl'}: no loss values to plot")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="#9ecae1", linewidth=1, label="train loss")
        if smoothing_weight(len(losses)) > 0:  # a short log is drawn as it is
            ax.plot(steps, smooth(list(losses)), color="#08519c", linewidth=2, label="train loss (smoothed)")
    if evals:
        steps, losses = zip(*evals, strict=True)
        ax.plot(steps, losses, "o-", color="#d94801", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(run.name)
    ax.grid(alpha=0.3)
    ax.legend()
    out = run / "images" / "train_loss.png"
    try:
        with staged_file(out) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")  # the format named: the temporary file is not .png
    finally:
        plt.close(fig)
    return out
