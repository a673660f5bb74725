"""GRPO's curves: each panel draws its measure and the measures that belong beside it."""

from __future__ import annotations

import json

from mathtune.rl import curves


def _records(dynamic: bool) -> list[dict]:
    records = []
    for step in range(1, 13):
        record = {"step": step, "reward": 0.1 * step, "rewards/accuracy": 0.05 * step, "rewards/format": 1.0,
                  "accuracy": 0.05 * step, "frac_reward_zero_std": 0.1, "step_s": 1.0, "loss": 0.5}
        if dynamic:
            record.update(frac_reward_zero_std_sampled=0.6, resample_rounds=2)
        records.append(record)
    return records


def test_panels_name_their_companion_measures():
    assert curves._companions("reward", _records(False)) == ["rewards/accuracy", "rewards/format"]
    assert curves._companions("frac_reward_zero_std", _records(False)) == []
    assert curves._companions("frac_reward_zero_std", _records(True)) == ["frac_reward_zero_std_sampled"]
    assert curves._companions("accuracy", _records(True)) == []


def test_curves_are_drawn_with_dynamic_sampling_measures(tmp_path):
    (tmp_path / "logging.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(True)))
    out = curves.draw_curves(tmp_path)
    assert out == str(tmp_path / "images" / "grpo_curves.png")
    assert (tmp_path / "images" / "grpo_curves.png").stat().st_size > 10_000
