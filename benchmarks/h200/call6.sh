#!/usr/bin/env bash
# H200 call 6 (carry .g2; about 5 min; right after call 5): the CUDA quickstart as a user runs it, now the whole
# default recipe (48,000 gsm rows, 128 a step), timed end to end on a machine that has not converted the model yet.
source benchmarks/h200/env.sh || exit 3
rm -rf /tmp/cache/* /tmp/qs && mkdir -p /tmp/qs
( cd /tmp/qs && /usr/bin/time -v python3 -m mathtune quickstart ) > $OUT/quickstart.log 2>&1
grep -v "it/s\]\|^\s*$" $OUT/quickstart.log | tail -40
cp -r /tmp/qs/output/quickstart*/*.png $OUT/ 2>/dev/null; ls /tmp/qs/output | head
