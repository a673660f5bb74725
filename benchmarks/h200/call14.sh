#!/usr/bin/env bash
# H200 call 14 (nothing carried; right after call 13): the GRPO run's last segment, up to 900 s of GRPO training in
# all (what calls 12 and 13 used is read from the run's log), then both models answer the benchmarks and the paired
# differences GRPO - SFT are computed.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
source benchmarks/h200/grpo12.sh
used=$(python3 -c "import json; print(int(sum(json.loads(l).get('step_s') or 0 for l in open('/tmp/grpo_keep12/grpo_sft/logging.jsonl'))))")
echo "GRPO training so far: $used s"
grpo12 400 --resume --budget_s 390 --min_train_s 1 --grpo_max_s $(( used < 895 ? 900 - used : 5 ))
tar czf $OUT/grpo_gain_files.tgz -C /tmp grpo_keep12
