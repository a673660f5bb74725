# Sourced by calls 12-14: the one GRPO run they share, with its options written once (a resumed run must be given
# exactly the options it started with). `grpo12 SECONDS FLAGS...` runs grpo_gain.py under `timeout SECONDS` with
# those options plus FLAGS (the call's budget, --resume, --no-answer), logging to $OUT/grpo_gain.log.
grpo12() {
  local seconds=$1; shift
  local ckpt; ckpt=$(cat /tmp/grpo12_sft_checkpoint) || { echo "call 12's checkpoint is not on this machine"; return 3; }
  timeout "$seconds" python3 docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl --keep_dir /tmp/grpo_keep12 \
    --work /tmp/grpo_work12 --sft_checkpoint "$ckpt" --sft_gsm_rows 48000 --grpo_questions 3798 \
    --replay_sft_rows 8000 --prompts_per_step 32 --temperature 0.7 --dynamic_sample --max_resample_times 2 \
    --learning_rate 2e-4 --beta 0 --no-from_base "$@" 2>&1 \
    | tee $OUT/grpo_gain.log | grep -v "it/s\]\|^\s*$" | tail -8 | cut -c1-400
}
