#!/usr/bin/env bash
# H200 call 4 (carry .g2; 9.5 min; right after call 3): the b128 recipe with 48,000 gsm-symbolic rows (run at 76f98fc as
# sweep2's variant `b128_gsm48k`; it is now the default recipe, so `--variants default` runs it), then
# GRPO from it in the same call: fresh seen-template questions (rows 48,000-50,999 of the stream) that the SFT model
# gets right sometimes but not always (8 samples), one pass, lr 1e-4, KL beta 0.04 to the SFT model; CHAMP too.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
t0=$(date +%s)
mkdir -p /tmp/sweep5
timeout 250 python3 docs/results/recipe_sweep/sweep2.py --out $OUT/sweep2.jsonl --work /tmp/sweep5 \
  --eval_dir /tmp/sweep5_eval --no-base --variants default --budget_s 240 --max_train_s 200 2>&1 \
  | tee $OUT/sweep2.log | grep -v "it/s\]\|^\s*$" | tail -4
tar czf $OUT/sweep2_eval.tgz -C /tmp sweep5_eval
ckpt=$(python3 -c "import json; r=[json.loads(l) for l in open('$OUT/sweep2.jsonl')][-1]; print(r['checkpoint'])") \
  || { echo "no SFT checkpoint"; exit 3; }
left=$(( 560 - ($(date +%s) - t0) ))
echo "GRPO from $ckpt; $left s left"
timeout $left python3 docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl --keep_dir /tmp/grpo_keep \
  --work /tmp/grpo_work --sft_checkpoint "$ckpt" --sft_gsm_rows 48000 --grpo_questions 3000 --filter_samples 8 \
  --epochs 1 --learning_rate 1e-4 --beta 0.04 --no-from_base --budget_s $(( left - 15 )) --grpo_max_s 200 2>&1 \
  | tee $OUT/grpo_gain.log | grep -v "it/s\]\|^\s*$" | tail -14
tar czf $OUT/grpo_gain_files.tgz -C /tmp grpo_keep
