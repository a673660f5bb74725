#!/usr/bin/env bash
# H200 call 2 (carry .g2; 2 min as run): joins the embedded model, then issue 13's recipe sweep (sweep2.py): the
# 18,000-row recipe's data in steps of 128 (a launch-bound 135M step costs little more with 4x the rows). As run at
# 6663659 it also asked for that recipe with 54,000 gsm rows (`b128_rows3x`), which the generator refused (51,798
# distinct questions); that variant is gone, and call 4 ran 48,000 rows instead.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
mkdir -p /tmp/sweep4
timeout 575 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep4 \
  --eval_dir /tmp/sweep4_eval --no-base --variants b128 --budget_s 555 --max_train_s 300 2>&1 \
  | tee $OUT/sweep2.log | grep -v "it/s\]\|^\s*$" | tail -12
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep4_eval
