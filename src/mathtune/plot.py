"""logging.jsonl -> images/train_loss.png: the raw loss, its smoothed curve, and the eval loss."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import DataError, UserError


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard-style exponential moving average with bias correction, so the curve starts at the data."""
    out, avg = [], 0.0
    for k, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**k))
    return out


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "logging.jsonl"
    if not path.is_file():
        raise UserError(f"'{run_dir}' has no logging.jsonl; pass a run folder written by mathtune sft")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read '{path}': {exc.strerror or exc}") from None
    records = []
    # Decoded line by line, so that a corrupt file is reported at the line that is not UTF-8.
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(str(path), number, "not UTF-8") from None
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(str(path), number, "invalid JSON") from None
            if not isinstance(record, dict):
                raise DataError(str(path), number, "expected a JSON object")
            records.append(record)
    return records


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
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_name(".train_loss.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, out)
    return out
