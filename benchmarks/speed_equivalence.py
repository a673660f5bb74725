#!/usr/bin/env python
"""Do the speed features change what training learns? The same short fine-tune with every speed feature on (the
CUDA defaults) and with all of them off, same data, seed and steps; prints the eval loss of each side by side.

    python benchmarks/speed_equivalence.py --out results/equivalence.jsonl
    python benchmarks/speed_equivalence.py --dataset rg:gsm-symbolic#1200 --variants on off compile

Each variant is one `mathtune sft` run (the embedded model unless --model); its logging.jsonl gives the eval losses.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "on": [],  # the defaults on CUDA: packing, varlen attention, fused LoRA forward, liger-kernel
    "off": ["--packing", "false", "--attn_impl", "sdpa", "--fast_lora", "false", "--use_liger_kernel", "false"],
    "compile": ["--torch_compile", "true"],
}


def eval_losses(run_root: Path) -> dict[int, float]:
    logs = sorted(run_root.rglob("logging.jsonl"))
    if len(logs) != 1:
        raise SystemExit(f"expected one run under {run_root}, found {len(logs)}")
    records = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    return {r["step"]: r["eval_loss"] for r in records if r.get("eval_loss") is not None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["on", "off"])
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--dataset", default="rg:gsm-symbolic#1200")
    parser.add_argument("--split_dataset_ratio", default="0.1")
    parser.add_argument("--eval_steps", default="25")
    parser.add_argument("--seed", default="42")
    parser.add_argument("--out", default=None, help="append one JSON line per variant to this file")
    opts, extra = parser.parse_known_args(argv)  # anything else goes to every `mathtune sft` run alike
    common = ["--dataset", opts.dataset, "--split_dataset_ratio", opts.split_dataset_ratio,
              "--eval_steps", opts.eval_steps, "--seed", opts.seed, "--save_steps", "100000", *extra]
    if opts.model:
        common += ["--model", opts.model]
    losses, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in opts.variants:
            root = Path(tmp) / name
            command = [sys.executable, "-m", "mathtune", "sft", *common, *VARIANTS[name], "--output_dir", str(root)]
            print("$", " ".join(command[1:]), flush=True)
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            seconds[name] = time.perf_counter() - start
            losses[name] = eval_losses(root)
    steps = sorted(set().union(*(losses[n].keys() for n in opts.variants)))
    print("\n| step | " + " | ".join(f"eval loss ({n})" for n in opts.variants) + " | largest difference |")
    print("|---:|" + "---:|" * (len(opts.variants) + 1))
    for step in steps:
        values = [losses[n].get(step) for n in opts.variants]
        known = [v for v in values if v is not None]
        spread = max(known) - min(known) if len(known) > 1 else float("nan")
        print(f"| {step} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in values) + f" | {spread:.4f} |")
    print("\nwall seconds: " + ", ".join(f"{n} {seconds[n]:.0f}" for n in opts.variants))
    if opts.out:
        with open(opts.out, "a") as f:
            for name in opts.variants:
                f.write(json.dumps({"variant": name, "flags": VARIANTS[name], "common": common,
                                    "eval_loss": losses[name], "seconds": seconds[name],
                                    "date": datetime.date.today().isoformat()}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
