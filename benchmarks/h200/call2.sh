#!/usr/bin/env bash
# H200 call 2 (carry .g2; 9.5 min): joins the embedded model, then issue 13's recipe sweep (sweep2.py): three times
# the gsm-symbolic rows (data scale), the tutorial's settings replayed on the default recipe's data, and the default
# recipe itself, each trained and answered in this one call (the base model's answers are recorded: --no-base).
# Checkpoints and the JSON lines stay in /tmp/sweep3 for call 3 (GRPO from the best of them).
source benchmarks/h200/env.sh || exit 3
set -o pipefail
mkdir -p /tmp/sweep3
timeout 575 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep3 \
  --eval_dir /tmp/sweep3_eval --no-base --variants rows3x tutorial default --budget_s 555 --max_train_s 240 2>&1 \
  | tee $OUT/sweep2.log | grep -v "it/s\]\|^\s*$" | tail -12
cp $OUT/sweep2.jsonl /tmp/sweep3/sweep2.jsonl
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep3_eval
