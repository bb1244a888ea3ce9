#!/usr/bin/env bash
# Run every benchmark in bench/ in its --smoke mode (tiny sizes, a few minutes at most), so none can rot unseen.
# Smoke runs check that a bench still works end to end; their ratios are not measurements.
# CI runs this after the tests (.ci/run). It fails when a bench has no --smoke, a smoke fails or runs past
# BENCH_SMOKE_TIMEOUT_S (default 600), or the checkout changes outside its ignored folders meanwhile (git status).
#   bash scripts/bench_smoke.sh                  # every bench
#   bash scripts/bench_smoke.sh verify sandbox   # only these
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src"  # this checkout's torl, not whatever the venv was installed from
# One OpenMP thread unless told otherwise: with two torch threads on a busy 2-core machine a tiny train_step
# smoke took 468 s instead of 66 s (threads wait on each other); smoke numbers mean nothing anyway.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
limit=${BENCH_SMOKE_TIMEOUT_S:-600}
if [ $# -gt 0 ]; then benches=("${@/#/bench/}"); benches=("${benches[@]/%/.py}"); else benches=(bench/*.py); fi
in_git=0; git rev-parse --is-inside-work-tree >/dev/null 2>&1 && in_git=1
untracked() { [ $in_git = 1 ] && git status --porcelain --untracked-files=all | sort || true; }
before=$(untracked)
failed=()
times=()
for bench in "${benches[@]}"; do
    if ! grep -q 'add_argument("--smoke"' "$bench"; then
        echo "bench_smoke: $bench has no --smoke mode" >&2
        failed+=("$bench")
        continue
    fi
    echo "=== $bench --smoke"
    start=$SECONDS
    if ! timeout --kill-after=30 "$limit" .venv/bin/python "$bench" --smoke; then
        echo "bench_smoke: $bench --smoke failed (or ran past ${limit} s)" >&2
        failed+=("$bench")
    fi
    times+=("$(printf '%-22s %4d s' "$bench" $((SECONDS - start)))")
    echo "=== $bench --smoke: $((SECONDS - start)) s"
done
after=$(untracked)
if [ "$before" != "$after" ]; then
    echo "bench_smoke: the checkout changed during the smokes (a smoke must write to a temporary or ignored folder):" >&2
    comm -13 <(echo "$before") <(echo "$after") >&2
    failed+=("(files left in the checkout)")
fi
printf '%s\n' "bench_smoke: wall time per smoke" "${times[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench_smoke: failed: ${failed[*]}" >&2
    exit 1
fi
echo "bench_smoke: every benchmark ran"
