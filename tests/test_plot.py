"""The loss curve: whole-step ticks and a loss axis that does not blow a small change up."""

import json

import pytest

from mathtune.errors import UserError
from mathtune.plot import MIN_SPAN, draw_loss, loss_limits, plot_run


def _steps_shown(fig) -> list[float]:
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    return [tick for tick in ax.get_xticks() if low <= tick <= high]


def test_a_short_run_has_whole_step_ticks():
    fig = draw_loss([{"step": s, "loss": 2.0 - 0.1 * s} for s in (1, 2, 3)], "short")
    ticks = _steps_shown(fig)
    assert ticks and all(tick == int(tick) for tick in ticks)


def test_a_one_percent_change_keeps_a_flat_look():
    records = [{"step": s, "loss": 1.0 - 0.001 * s} for s in range(1, 11)]  # 1.0 -> 0.99
    bottom, top = draw_loss(records, "flat").axes[0].get_ylim()
    assert top - bottom >= MIN_SPAN * 0.999
    moved = records[0]["loss"] - records[-1]["loss"]
    assert moved / (top - bottom) < 0.1  # the change takes under a tenth of the height


def test_a_large_fall_is_drawn_whole_and_not_below_zero():
    losses = [2.5, 1.8, 1.1, 0.6, 0.4]
    bottom, top = loss_limits(losses)
    assert bottom >= 0 and bottom <= min(losses) and top >= max(losses)
    assert loss_limits([0.01, 0.5])[0] == 0.0  # the 5% margin below a near-zero loss stops at 0


def test_eval_points_are_inside_the_axis():
    records = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.99}, {"step": 2, "eval_loss": 1.3}]
    bottom, top = draw_loss(records, "with eval").axes[0].get_ylim()
    assert bottom <= 0.99 and top >= 1.3


def test_plot_run_writes_a_png_and_refuses_a_log_without_losses(tmp_path):
    (tmp_path / "logging.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2)))
    assert plot_run(tmp_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "logging.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    with pytest.raises(UserError, match="no loss values to plot"):
        plot_run(tmp_path)
