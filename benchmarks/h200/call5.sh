#!/usr/bin/env bash
# H200 call 5 (carry .whl .g1; 1 min): a fresh machine's wheels and GGUF part 1, for call 6.
source benchmarks/h200/env.sh
python3 -c "import reasoning_gym, math_verify; print('imports ok')" 2>&1 | tail -1
