#!/usr/bin/env bash
# H200 call 13 (nothing carried; right after call 12): the GRPO run of call 12, continued for the whole call.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
ckpt=$(cat /tmp/grpo12_sft_checkpoint) || { echo "call 12's checkpoint is not on this machine (cold)"; exit 3; }
left=$((585 - SECONDS))
timeout $left python3 docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl --keep_dir /tmp/grpo_keep12 \
  --work /tmp/grpo_work12 --sft_checkpoint "$ckpt" --sft_gsm_rows 48000 --grpo_questions 3798 \
  --replay_sft_rows 8000 --prompts_per_step 32 --temperature 0.7 --dynamic_sample --max_resample_times 2 \
  --learning_rate 2e-4 --beta 0 --no-from_base --no-answer --resume --budget_s $((left - 8)) --grpo_max_s 900 2>&1 \
  | tee $OUT/grpo_gain.log | grep -v "it/s\]\|^\s*$" | tail -3 | cut -c1-400
