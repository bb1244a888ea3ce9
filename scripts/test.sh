#!/usr/bin/env bash
# Set up (idempotent), lint (ruff), and run the whole test suite, slow tests included.
#   .venv       torl + test tools (scripts/setup.sh --dev), Chromium for the report test
#   .venv-vllm  vLLM (CPU build) in its own venv: it pins its own torch/transformers stack
# The vLLM tests (the engine, and training with engine=vllm) run inside .venv-vllm; everything else (the OpenAI-engine tests against a
# real `vllm serve` included) runs in .venv. Extra arguments go to the main pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check src tests
bash scripts/setup_browser.sh
if [ "${TORL_SKIP_VLLM:-0}" != "1" ]; then
    bash scripts/setup_vllm.sh
    .venv-vllm/bin/python -m pytest -p no:cacheprovider tests/test_engine_vllm.py tests/test_train_vllm.py \
        tests/test_train_tis.py::test_vllm_engine_logs_the_mismatch_and_applies_the_correction
fi
exec .venv/bin/python -m pytest "$@"
