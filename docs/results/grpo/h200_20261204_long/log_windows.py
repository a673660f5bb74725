"""Means of GRPO run 6's logged measures over its first 20 steps, its last 20 and all 151 (this folder's
logging.jsonl; the held-out records of --eval_steps, absent here, would be skipped).

    python docs/results/grpo/h200_20261204_long/log_windows.py
"""

from __future__ import annotations

import json
from pathlib import Path

KEYS = ("accuracy", "completion_length", "grad_norm", "frac_reward_zero_std_sampled", "step_s", "generation_s")


def mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values)


def main() -> None:
    lines = Path(__file__).with_name("logging.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if "reward" in r]
    for label, part in (("first 20", rows[:20]), ("last 20", rows[-20:]), (f"all {len(rows)}", rows)):
        print(f"{label:>9}: " + ", ".join(f"{k} {mean(part, k):.4g}" for k in KEYS))


if __name__ == "__main__":
    main()
