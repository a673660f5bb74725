#!/usr/bin/env bash
# H200 call 6 (carry .g2; about 5 min; right after call 5): the CUDA quickstart as a user runs it, now the whole
# default recipe (48,000 gsm rows, 128 a step), timed end to end on a machine that has not converted the model yet
# (issue 13: at most 5 minutes on one H200, training and both evaluations included).
source benchmarks/h200/env.sh || exit 3
( time timeout 450 python3 -m mathtune quickstart --output_dir /tmp/qs ) 2>&1 | tee $OUT/quickstart.log \
  | grep -v "it/s\]\|^\s*$" | tail -40
cp /tmp/qs/*.png /tmp/qs/*/*.png $OUT/ 2>/dev/null; ls /tmp/qs
