#!/usr/bin/env bash
# Run every benchmark in bench/ in its --smoke mode (a couple of minutes each), so none can rot unseen.
# Smoke runs check that a bench still works end to end; their ratios are not measurements.
# CI runs this after the tests (.ci/run). A bench without --smoke fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
failed=()
for bench in bench/*.py; do
    if ! grep -q -- '--smoke' "$bench"; then
        echo "bench_smoke: $bench has no --smoke mode" >&2
        failed+=("$bench")
        continue
    fi
    echo "=== $bench --smoke"
    start=$SECONDS
    if ! .venv/bin/python "$bench" --smoke; then
        failed+=("$bench")
    fi
    echo "=== $bench --smoke: $((SECONDS - start)) s"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "bench_smoke: failed: ${failed[*]}" >&2
    exit 1
fi
echo "bench_smoke: every benchmark ran"
