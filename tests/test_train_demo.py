"""The demo recipe, shortened, on the real SmolLM2-135M: the README's main job, same code path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torl.train.config import parse_train_args
from torl.train.trainer import run_training

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-cpu.yaml"


@pytest.mark.slow
def test_demo_recipe_short_form_runs_end_to_end(tmp_path):
    run = tmp_path / "demo"
    overrides = ["--run_dir", str(run), "--max_steps", "1", "--eval_holdout", "2", "--train_task_count", "8",
                 "--train_file_limit", "4", "--num_generations", "2", "--per_device_train_batch_size", "2",
                 "--gradient_accumulation_steps", "1", "--max_response_tokens", "32"]
    assert run_training(*parse_train_args(["--config", str(DEMO), *overrides])) == 0

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 1
    for when in ("eval_before", "eval_after"):
        assert summary[when]["questions"] == 2
        assert 0.0 <= summary[when]["accuracy"] <= 1.0 and 0.0 <= summary[when]["code_ratio"] <= 1.0
        assert len((run / f"{when}.jsonl").read_text().splitlines()) == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 1
    assert len((run / "samples" / "step_000001.jsonl").read_text().splitlines()) == 2
    readme = (run / "README.txt").read_text()
    assert "held-out greedy evaluation" in readme and "before" in readme and "after" in readme
