"""Which of GRPO run 6's answers hold an arithmetic slip: a line `a op b = c` (op one of + - * x / ×) that is false.

Reads this folder's eval.tgz (the SFT model's and the GRPO model's greedy answers to 200 seen-template questions) and
prints, for the questions GRPO broke and fixed, how many carry a slip, and the same over all wrong answers. A check of
the written steps, not of the plan: a slip-free wrong answer is a wrong plan (or a step this pattern does not read).

    python docs/results/grpo/h200_20261204_long/arithmetic_slips.py
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

STEP = re.compile(r"(\d+(?:\.\d+)?)\s*([+\-*/x×])\s*(\d+(?:\.\d+)?)\s*=\s*(\d+(?:\.\d+)?)")
BENCH = "rg_gsm-symbolic"


def slips(text: str) -> int:
    """How many `a op b = c` lines in `text` are false."""
    wrong = 0
    for a, op, b, c in STEP.findall(text):
        x, y, z = float(a), float(b), float(c)
        value = {"+": x + y, "-": x - y, "*": x * y, "x": x * y, "×": x * y}.get(op, x / y if y else None)
        wrong += value is not None and abs(value - z) > 1e-6
    return wrong


def answers(archive: tarfile.TarFile, model: str) -> dict[str, dict]:
    member = archive.extractfile(f"eval/{model}/{BENCH}/predictions.jsonl")
    rows = (json.loads(line) for line in io.TextIOWrapper(member, encoding="utf-8"))
    return {row["id"]: row for row in rows}


def main() -> None:
    with tarfile.open(Path(__file__).with_name("eval.tgz")) as archive:
        sft, grpo = answers(archive, "sft"), answers(archive, "grpo_sft")
    broken = [i for i in sft if sft[i]["correct"] and not grpo[i]["correct"]]
    fixed = [i for i in sft if not sft[i]["correct"] and grpo[i]["correct"]]
    print(f"broken by GRPO: {len(broken)}, of them with a slip in GRPO's answer: "
          f"{sum(slips(grpo[i]['outputs'][0]) > 0 for i in broken)}")
    print(f"fixed by GRPO: {len(fixed)}, of them with a slip in SFT's answer: "
          f"{sum(slips(sft[i]['outputs'][0]) > 0 for i in fixed)}")
    for name, rows in (("sft", sft), ("grpo", grpo)):
        wrong = [i for i in rows if not rows[i]["correct"]]
        print(f"{name}: {len(wrong)} wrong of {len(rows)}, {sum(slips(rows[i]['outputs'][0]) > 0 for i in wrong)} "
              "with a slip")


if __name__ == "__main__":
    main()
