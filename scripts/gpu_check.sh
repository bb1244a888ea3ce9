#!/usr/bin/env bash
# The GPU check: one prepared run on one CUDA GPU with no network (about 8 minutes on an H100).
#
#   bash scripts/fetch_gpu_wheels.sh     # here, with network: wheels/ (what a bare GPU box lacks), carried along
#   bash scripts/gpu_check.sh            # there: installs the missing wheels, then the stages below
#   bash scripts/gpu_check.sh --dry-run  # the same stages, tiny, on CPU (tests/test_gpu_check.py runs it in CI)
#
# Stages, each reported PASS/FAIL with its figures; a failed stage does not stop the others, and
# the exit status is non-zero if any failed:
#   1. install: the carried wheels of every distribution python3 lacks (pip --no-index --no-deps)
#   2. model:   Qwen2.5-1.5B's architecture at its real size, random weights, bf16 (scripts/gpu_check.py)
#   3. tests:   the engine's exactness tests on CUDA with that model in float32: sampled tokens'
#               logprobs = the trainer's forward, batched greedy = one at a time. (Not "a seed gives
#               the same tokens with and without each speed-up": that needs bit-equal logits across
#               batch shapes, which CUDA kernels do not promise; the dry run on CPU checks it.)
#   4. train:   one `torl train` step of configs/torl-1.5b.yaml shrunk on the command line:
#               engine transformers, bf16, that model; wall time, step timings, peak GPU memory
#               (zero_signal_updates compute: random weights earn no reward signal, and the
#               forward/backward must run all the same)
#   5. generate: the engine at that size (bench/generate.py: 32 prompts x 128 tokens, torl's engine
#               and plain model.generate side by side): tokens/s, peak GPU memory
# Settings: PYTHON (default python3; dry run: .venv/bin/python), TORL_GPU_CHECK_DIR (work directory,
# default a new temporary one), TORL_GPU_CHECK_DRY_RUN=1 (same as --dry-run).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=${TORL_GPU_CHECK_DRY_RUN:-0}
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ "$DRY" = 1 ]; then
    PY=${PYTHON:-.venv/bin/python}
else
    PY=${PYTHON:-python3}
fi
WORK=${TORL_GPU_CHECK_DIR:-$(mktemp -d -t torl-gpu-check.XXXXXX)}
mkdir -p "$WORK"
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
FAILED=()
SUMMARY=()

stage() {  # stage NAME COMMAND...: run it, keep its log, report PASS/FAIL and the lines that carry figures
    local name=$1; shift
    local start=$SECONDS
    echo "=== $name: $*"
    "$@" > "$WORK/$name.log" 2>&1
    local code=$?
    tail -n 25 "$WORK/$name.log"
    if [ $code -eq 0 ]; then
        SUMMARY+=("PASS $name ($((SECONDS - start)) s)")
    else
        SUMMARY+=("FAIL $name ($((SECONDS - start)) s, exit $code; log $WORK/$name.log)")
        FAILED+=("$name")
    fi
}

install_missing_wheels() {
    if [ ! -d wheels ]; then
        echo "no wheels/ folder: nothing to install (run scripts/fetch_gpu_wheels.sh where there is network)"
        return 0
    fi
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.metadata, pathlib, re
for wheel in sorted(pathlib.Path("wheels").glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
EOF
)
    if [ -z "$missing" ]; then
        echo "every carried distribution is installed already"
        return 0
    fi
    echo "installing: $(echo "$missing" | xargs -n1 basename | tr '\n' ' ')"
    # shellcheck disable=SC2086
    "$PY" -m pip install --no-index --no-deps --disable-pip-version-check ${PIP_FLAGS:-} $missing
}

echo "torl GPU check ($([ "$DRY" = 1 ] && echo "dry run on CPU" || echo CUDA)), work directory $WORK"
"$PY" -c "import sys, torch, transformers; print('python', sys.version.split()[0], '| torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
if [ "$DRY" = 1 ]; then
    SIZE=tiny DEVICE=cpu TRAIN_SIZE=(--bf16 false --use_cpu true --gradient_checkpointing false --num_generations 2
        --per_device_train_batch_size 2 --max_response_tokens 16 --sandbox_workers 1)
    GEN=(--prompts 4 --max-tokens 8 --rounds 1 --dtype float32 --device cpu)
    TESTS="tempered or concurrent or shared_prefix or seed_gives or seeded_request or remembered or mid_batch or weight_change or packed"
else
    SUMMARY+=("$([ -d wheels ] && echo carried || echo no) wheels")
    stage install install_missing_wheels
    SIZE=real DEVICE=cuda TRAIN_SIZE=(--bf16 true --num_generations 8 --per_device_train_batch_size 8
        --max_response_tokens 512)
    GEN=(--prompts 32 --max-tokens 128 --rounds 2 --dtype bfloat16 --device cuda)
    TESTS="tempered or concurrent or shared_prefix or seeded_request or remembered or mid_batch or weight_change"
fi

stage model "$PY" scripts/gpu_check.py model --size "$SIZE" --out "$WORK/model"
stage data "$PY" scripts/gpu_check.py data --out "$WORK/data"
stage tests env TORL_TEST_DEVICE=$DEVICE TORL_TEST_MODEL="$WORK/model" "$PY" -m pytest -x -q -p no:cacheprovider \
    tests/test_engine_transformers.py -k "$TESTS"
stage train "$PY" scripts/gpu_check.py train -- --config configs/torl-1.5b.yaml --model "$WORK/model" \
    --engine transformers --train_files "$WORK/data/train.jsonl" --eval_files "$WORK/data/eval.jsonl" \
    --zero_signal_updates compute --gradient_accumulation_steps 1 --max_steps 1 --save_steps 1000 --report_to none \
    --run_dir "$WORK/run" "${TRAIN_SIZE[@]}"
stage generate "$PY" bench/generate.py --model "$WORK/model" --no-vllm "${GEN[@]}"

echo "=== summary"
printf '%s\n' "${SUMMARY[@]}"
grep -h "^model:\|^train:\|best round\|torl / generate\|peak GPU" "$WORK"/*.log 2>/dev/null
[ ${#FAILED[@]} -eq 0 ]
