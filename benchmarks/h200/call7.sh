#!/usr/bin/env bash
# H200 call 7 (carry .whl .whlC .g1; about 2 min with the start): the CUDA tests of attention, the fast path and
# sampling, after packed rows without a kernel moved from a dense mask to per-row SDPA. Keeps GGUF part 1 on the
# machine for call 8, which must follow within the 30 s the machine stays warm.
source benchmarks/h200/env.sh
python3 -c "import reasoning_gym, math_verify, liger_kernel; print('imports ok')" 2>&1 | tail -1
timeout 150 python3 -m pytest -q -m "not slow" -p no:cacheprovider tests/test_decode.py tests/test_decode_attention.py \
  tests/test_attention.py tests/test_fastpath.py tests/rl/test_policy_logps.py tests/rl/test_rollout.py \
  tests/test_generate.py 2>&1 | tail -15 | tee $OUT/cuda_tests.log
