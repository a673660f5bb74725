#!/usr/bin/env bash
# H200 call 3 (carry .whlC; 8.5 min; the machine must still be warm from call 2): GRPO from the best SFT checkpoint
# of call 2's sweep (highest seen-template accuracy), on fresh questions the SFT model gets right sometimes but not
# always (--filter_samples 8 over 6,000, one pass, none repeated), lr 1e-4, KL beta 0.04 to the SFT model; CHAMP too.
source benchmarks/h200/env.sh || exit 3
set -o pipefail
pick=$(python3 - <<'PY'
import json
best = None
for line in open("/tmp/sweep4/sweep2.jsonl"):
    r = json.loads(line)
    if r.get("status") == "ok" and "checkpoint" in r:
        seen = r["results"]["rg:gsm-symbolic"]["accuracy"]
        rows = [int(d.rpartition("#")[2]) for d in r["dataset"] if d.startswith("rg:gsm-symbolic#")][0]
        if best is None or seen > best[0]:
            best = (seen, r["checkpoint"], rows, r["variant"])
print(f"{best[1]} {best[2]} {best[3]}")
PY
) || { echo "no sweep checkpoint on this machine"; exit 3; }
read ckpt rows variant <<< "$pick"
echo "GRPO from $variant: $ckpt (skipping its $rows gsm rows)"
timeout 500 python3 docs/results/grpo/grpo_gain.py --out $OUT/grpo_gain.jsonl --keep_dir /tmp/grpo_keep \
  --work /tmp/grpo_work --sft_checkpoint "$ckpt" --sft_gsm_rows "$rows" --grpo_questions 6000 --filter_samples 8 \
  --epochs 1 --learning_rate 1e-4 --beta 0.04 --no-from_base --budget_s 485 --grpo_max_s 300 2>&1 \
  | tee $OUT/grpo_gain.log | grep -v "it/s\]\|^\s*$" | tail -30
tar czf $OUT/grpo_gain_files.tgz -C /tmp grpo_keep
