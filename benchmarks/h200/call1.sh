#!/usr/bin/env bash
# H200 call 1 (carry .whl .whlD .g1; about 4 min with the start): rl_speed.py on the Yi-1.5-6B shape (a GRPO step,
# mathtune against TRL; the 135M shape was 5.0x on 2026-12-03). Keeps GGUF part 1 on the machine for call 2, which
# must follow within the 30 s the machine stays warm. The CUDA tests ran in this session's first call (e67d167).
source benchmarks/h200/env.sh
t0=$(date +%s); el(){ echo "[$(( $(date +%s) - t0 ))s] $*"; }
python3 -c "import reasoning_gym, math_verify, liger_kernel, trl; print('imports ok')" 2>&1 | tail -1
el "rl_speed"
timeout 165 python3 benchmarks/rl_speed.py --model yi6b --max_seconds 150 --out $OUT/rl_speed.jsonl 2>&1 \
  | tee $OUT/rl_speed.log | tail -10
el "end"
