"""scripts/gpu_check.sh --dry-run: every stage of the GPU check (random-weight model, the engine's
exactness tests on it, one `torl train` step of the 1.5B recipe, the generation benchmark) runs on
CPU at a tiny size, so the script is known to work before a GPU is there to run it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_passes_every_stage(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, TORL_GPU_CHECK_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    summary = done.stdout[done.stdout.rindex("=== summary"):] if "=== summary" in done.stdout else done.stdout[-3000:]
    assert done.returncode == 0, summary + done.stderr[-2000:]
    for stage in ("model", "data", "tests", "train", "generate"):
        assert f"PASS {stage}" in summary, summary
    assert "train: exit 0" in summary and "steps logged 1" in summary, summary
    assert "torl / generate" in summary, summary
    # the train step really updated the model: its forward/backward ran without a reward signal
    assert "micro-batches without forward/backward [0]" in summary, summary
