#!/usr/bin/env bash
# H200 call 9 (nothing carried; 9.5 min; right after call 8): GRPO from call 8's two-epoch SFT checkpoint, changed
# from the four runs before it where they pointed: rollouts at temperature 0.7 instead of 1.0 (evaluation is greedy,
# and at 1.0 the SFT model's samples were right 26% of the time against 41% greedy, so GRPO trained on a tail greedy
# decoding never visits), questions filtered at that temperature, and --dynamic_sample on top (groups with equal
# rewards replaced online, up to 2 extra rounds); lr 1e-4, beta 0, two passes over the kept questions at most.
# Questions: rows 48,000-51,797 of the gsm-symbolic stream (every seen-template question SFT did not train on).
source benchmarks/h200/env.sh || exit 3
set -o pipefail
ckpt=$(python3 -c "import json; r=[json.loads(l) for l in open('/tmp/sweep7_out.jsonl')][-1]; print(r['checkpoint'])") \
  || { echo "no SFT checkpoint from call 8"; exit 3; }
timeout 570 python3 docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl --keep_dir /tmp/grpo_keep9 \
  --work /tmp/grpo_work9 --sft_checkpoint "$ckpt" --sft_gsm_rows 48000 --grpo_questions 3798 --filter_samples 8 \
  --temperature 0.7 --dynamic_sample --max_resample_times 2 --epochs 2 --learning_rate 1e-4 --beta 0 \
  --no-from_base --budget_s 555 --grpo_max_s 440 2>&1 | tee $OUT/grpo_gain.log | grep -v "it/s\]\|^\s*$" | tail -14
tar czf $OUT/grpo_gain_files.tgz -C /tmp grpo_keep9
