#!/usr/bin/env bash
# H200 call 1 (carry .whl .whlD .g1; about 5 min with the start): the CUDA tests, then rl_speed.py on the Yi-1.5-6B
# shape (a GRPO step, mathtune against TRL) with time for three timed TRL steps (2026-12-03 had one). Keeps GGUF
# part 1 on the machine for call 2, which must follow within the 30 s the machine stays warm.
source benchmarks/h200/env.sh
t0=$(date +%s); el(){ echo "[$(( $(date +%s) - t0 ))s] $*"; }
python3 -c "import reasoning_gym, math_verify, liger_kernel, trl; print('imports ok')" 2>&1 | tail -1
el "CUDA tests"
timeout 120 python3 -m pytest -q -m "not slow" -p no:cacheprovider tests/test_decode.py tests/test_decode_attention.py \
  tests/test_attention.py tests/test_fastpath.py tests/rl/test_policy_logps.py tests/rl/test_rollout.py \
  tests/test_generate.py 2>&1 | tail -15 | tee $OUT/cuda_tests.log
el "rl_speed"
timeout 340 python3 benchmarks/rl_speed.py --model yi6b --steps 3 --max_seconds 320 --out $OUT/rl_speed.jsonl 2>&1 \
  | tee $OUT/rl_speed.log | tail -10
el "end"
