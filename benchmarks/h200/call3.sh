#!/usr/bin/env bash
# H200 call 3 (carry .whl .whlC .g1; 1 min): a fresh machine's wheels (CHAMP's too) and GGUF part 1, for call 4.
source benchmarks/h200/env.sh
python3 -c "import reasoning_gym, math_verify, champ_dataset; print('imports ok')" 2>&1 | tail -1
