"""Packed attention off CUDA: transformers' dense block-diagonal mask against mathtune's per-row SDPA.

Forward + backward of the embedded model (fp32; full gradients, or with --lora the default recipe's adapter, LoRA r16
on all linear layers) on one pack of equal rows, best of two, on this machine's CPU, with the process's peak resident
memory so far (run one pack per process to read a pack's own peak). Each argument is ROWSxTOKENS; packs of 48 rows or
more run the per-row route only (the dense mask needs (L x L) fp32 scores per head and was killed for memory at
128 x 150 on 24 GiB). Figures: docs/benchmarks.md, "Packed rows without a flash kernel".

    python benchmarks/cpu_packed_attention.py 8x90 32x150 54x150
    python benchmarks/cpu_packed_attention.py --lora --per_row_only 17x240     # and 8x256, 4x256: the CPU pack cap
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from mathtune import embedded, fastpath
from mathtune.config import FastArgs
from mathtune.data.packing import Batch
from mathtune.fastpath.loss import loss_sum
from mathtune.model import attach_lora, load_model

DENSE_UP_TO_ROWS = 48


def pack(rows: int, tokens: int) -> Batch:
    ids = torch.randint(100, 40000, (1, rows * tokens))
    positions = torch.arange(tokens).repeat(rows)[None]
    return Batch(ids, ids.clone(), positions, None, tuple(range(rows)), rows * tokens, rows * tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packs", nargs="+", help="ROWSxTOKENS, e.g. 32x150")
    parser.add_argument("--lora", action="store_true", help="LoRA r16 alpha 32 on all linear layers, as the recipe")
    parser.add_argument("--per_row_only", action="store_true", help="skip the dense mask (memory: one route only)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model_dir, cpu = embedded.embedded_model_dir(), torch.device("cpu")
    for spec in args.packs:
        rows, tokens = map(int, spec.split("x"))
        batch = pack(rows, tokens)
        routes = ["per_row"] if rows >= DENSE_UP_TO_ROWS or args.per_row_only else ["dense_mask", "per_row"]
        for route in routes:
            model = load_model(model_dir, "fp32", "cpu")
            if args.lora:
                model = attach_lora(model, 16, 32, 0.0, ["all-linear"])
            if route == "per_row":
                fastpath.apply(model, FastArgs(), cpu)
            times = []
            for _ in range(2):
                started = time.perf_counter()
                loss_sum(model, batch, cpu).backward()
                times.append(time.perf_counter() - started)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{rows} rows x {tokens} tokens, {route}: {min(times):.2f} s, peak RSS so far {peak:.1f} GiB",
                  flush=True)


if __name__ == "__main__":
    main()
