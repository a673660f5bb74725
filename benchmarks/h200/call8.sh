#!/usr/bin/env bash
# H200 call 8 (carry .g2; about 8 min; right after call 7): joins the embedded model, then sweep2's `2ep`: the default
# recipe (48,000 gsm-symbolic rows + 3,500 arithmetic rows, 128 a step, lr 1e-3) for two epochs (issue 13's seen-
# template target is +45 over the base; one epoch gave +41). Its checkpoint stays in /tmp for call 9's GRPO.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
mkdir -p /tmp/sweep7
timeout 575 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep7 \
  --eval_dir /tmp/sweep7_eval --no-base --variants 2ep --budget_s 560 --max_train_s 430 2>&1 \
  | tee $OUT/sweep2.log | grep -v "it/s\]\|^\s*$" | tail -6
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep7_eval
cp $OUT/sweep2.jsonl /tmp/sweep7_out.jsonl  # for call 9
