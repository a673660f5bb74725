#!/usr/bin/env bash
# H200 call 2 (carry .g2; 8.5 min): joins the embedded model, then GRPO's gain over SFT (docs/results/grpo); GRPO
# from the base model is left out: on 2026-12-03 it sampled no right answer in 36 of 37 steps (docs/results.md).
# CHAMP is answered only if an earlier call on this machine carried .whlC (it does not fit beside .g2).
source benchmarks/h200/env.sh || exit 3
set -o pipefail
champ=$(python3 -c "import champ" 2>/dev/null || echo --no-champ)
timeout 505 python3 docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl --keep_dir /tmp/grpo_keep \
  --work /tmp/grpo_work --no-from_base --budget_s 490 --grpo_max_s 240 $champ 2>&1 | tee $OUT/grpo_gain.log \
  | grep -v "it/s\]\|^\s*$" | tail -40
tar czf $OUT/grpo_gain_files.tgz -C /tmp grpo_keep
