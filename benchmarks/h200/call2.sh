#!/usr/bin/env bash
# H200 call 2 (carry .g2; 9.5 min): joins the embedded model, then issue 13's recipe sweep (sweep2.py): the default
# recipe's rows in steps of 128 (a launch-bound 135M step costs little more with 4x the rows), with three times the
# gsm-symbolic rows and with the default's own data. Checkpoints and the JSON lines stay in /tmp/sweep4 for call 3.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
mkdir -p /tmp/sweep4
timeout 575 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep4 \
  --eval_dir /tmp/sweep4_eval --no-base --variants b128_rows3x b128 --budget_s 555 --max_train_s 300 2>&1 \
  | tee $OUT/sweep2.log | grep -v "it/s\]\|^\s*$" | tail -12
cp $OUT/sweep2.jsonl /tmp/sweep4/sweep2.jsonl
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep4_eval
