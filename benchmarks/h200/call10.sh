#!/usr/bin/env bash
# H200 call 10 (nothing carried; 9.5 min; right after call 9): sweep2's `full_fp32`, full fine-tuning of the default
# recipe with fp32 weights at lr 3e-5, the lever issue 13 names for unseen templates that no earlier call could run:
# fp32 has no flash kernel, and packed rows went to SDPA with a dense (L x L) mask; they now run SDPA row by row.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
mkdir -p /tmp/sweep10
timeout 520 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep10 \
  --eval_dir /tmp/sweep10_eval --no-base --variants full_fp32 --budget_s 505 --max_train_s 380 2>&1 \
  | tee $OUT/sweep2.log | grep -v "it/s\]\|^\s*$" | tail -6
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep10_eval
