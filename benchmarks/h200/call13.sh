#!/usr/bin/env bash
# H200 call 13 (nothing carried; right after call 12): the GRPO run of call 12, continued for the whole call.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
source benchmarks/h200/grpo12.sh
left=$((585 - SECONDS))
grpo12 $left --no-answer --resume --budget_s $((left - 8)) --grpo_max_s 900
