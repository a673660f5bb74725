#!/usr/bin/env bash
# H200 call 1 (carry .whl .g1; about 7 min): CUDA tests; the decoding loop with and without grouped step attention,
# both shapes. Keeps GGUF part 1 on the machine for call 2, which must follow within the 30 s the machine stays warm.
source benchmarks/h200/env.sh
t0=$(date +%s); el(){ echo "[$(( $(date +%s) - t0 ))s] $*"; }
python3 -c "import reasoning_gym, math_verify, liger_kernel, champ; print('imports ok')" 2>&1 | tail -1
el "CUDA tests"
timeout 150 python3 -m pytest -q -m "not slow" -p no:cacheprovider tests/test_decode.py tests/test_decode_attention.py \
  tests/test_attention.py tests/test_fastpath.py tests/rl/test_policy_logps.py tests/rl/test_rollout.py 2>&1 \
  | tail -15 | tee $OUT/cuda_tests.log
el "decoding loop A/B"
timeout 400 python3 benchmarks/generate_speed.py --model smol135m yi6b --configs mathtune_fast mathtune_fast_repeat_kv \
  --fast_rows 64 512 --out $OUT/generate_fast.jsonl 2>&1 | tail -16
el "end"
