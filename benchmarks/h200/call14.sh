#!/usr/bin/env bash
# H200 call 14 (nothing carried; right after call 13): the GRPO run's last segment, up to 900 s of GRPO training in
# all (what calls 12 and 13 used is read from the run's log), then both models answer the benchmarks and the paired
# differences GRPO - SFT are computed.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
ckpt=$(cat /tmp/grpo12_sft_checkpoint) || { echo "call 12's checkpoint is not on this machine (cold)"; exit 3; }
used=$(python3 -c "import json; print(int(sum(json.loads(l).get('step_s') or 0 for l in open('/tmp/grpo_keep12/grpo_sft/logging.jsonl'))))")
echo "GRPO training so far: $used s"
timeout 400 python3 docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl --keep_dir /tmp/grpo_keep12 \
  --work /tmp/grpo_work12 --sft_checkpoint "$ckpt" --sft_gsm_rows 48000 --grpo_questions 3798 \
  --replay_sft_rows 8000 --prompts_per_step 32 --temperature 0.7 --dynamic_sample --max_resample_times 2 \
  --learning_rate 2e-4 --beta 0 --no-from_base --resume --budget_s 390 --min_train_s 1 --grpo_max_s $(( used < 895 ? 900 - used : 5 )) 2>&1 \
  | tee $OUT/grpo_gain.log | grep -v "it/s\]\|^\s*$" | tail -8 | cut -c1-400
tar czf $OUT/grpo_gain_files.tgz -C /tmp grpo_keep12
