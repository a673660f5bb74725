#!/usr/bin/env bash
# H200 call 11 (carry .whl .whlC .g1; under a minute after the start): installs the wheels and keeps GGUF part 1 on
# the machine for call 12, which must follow within the 30 s the machine stays warm.
source benchmarks/h200/env.sh
python3 -c "import reasoning_gym, math_verify, champ_dataset, torch; print('imports ok', torch.cuda.get_device_name())" \
  2>&1 | tail -1
