#!/usr/bin/env bash
# H200 call 12 (carry .g2; the whole 600 s; right after call 11): joins the embedded model, trains the default recipe
# (sweep2's `default`, two epochs, as call 8; it answers the four benchmarks), then starts ONE GRPO run from it
# (grpo12.sh) that calls 13 and 14 continue (grpo_gain.py --resume), so that GRPO gets the GRPO issue's whole 15
# GPU-minutes (earlier runs: 3-7).
# Settings changed from call 9: 32 questions a step instead of 16, lr 2e-4 instead of 1e-4, and questions seen once
# each (the 3,798 fresh ones plus the last 8,000 SFT rows, no epochs over a filtered set), dynamic sampling online.
# The SFT checkpoint (adapter, no optimizer state) comes back in two parts, so a later session can skip the SFT.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
mkdir -p /tmp/sweep12
timeout 410 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep12 \
  --eval_dir /tmp/sweep12_eval --no-base --variants default --budget_s 400 --max_train_s 345 2>&1 \
  | tee $OUT/sweep2.log | grep -v "it/s\]\|^\s*$" | tail -4
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep12_eval
ckpt=$(python3 -c "import json; r=[json.loads(l) for l in open('$OUT/sweep2.jsonl')][-1]; print(r['checkpoint'])") \
  || { echo "no SFT checkpoint"; exit 3; }
echo "$ckpt" > /tmp/grpo12_sft_checkpoint
source benchmarks/h200/grpo12.sh
left=$((578 - SECONDS))
echo "GRPO segment 1: $left s left in the call"
grpo12 $left --no-answer --budget_s $((left - 12)) --grpo_max_s 900
tar cf - -C "$(dirname "$ckpt")" --exclude optimizer.pt --exclude rng_state.pt --exclude scheduler.pt \
  "$(basename "$ckpt")" | split -b 15M - $OUT/sft_2ep_checkpoint.tar.part_
