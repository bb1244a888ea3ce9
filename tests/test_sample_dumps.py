"""dump_samples_max bounds a real run's per-step sample dump to whole GRPO groups."""

from __future__ import annotations

import json

from conftest import save_tiny_llama

from torl.engines.scripted import ScriptedEngine
from torl.train.config import parse_train_args
from torl.train.trainer import run_training


def test_a_run_dumps_at_most_dump_samples_max_responses_per_step(tmp_path):
    model_dir = save_tiny_llama(tmp_path / "tiny")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"""
model: {model_dir}
template: torl
max_tool_calls: 0
train_tasks: [arithmetic]
train_task_count: 8
run_dir: {tmp_path / 'run'}
dump_samples_max: 3
use_cpu: true
bf16: false
gradient_checkpointing: false
num_generations: 2
per_device_train_batch_size: 8
max_response_tokens: 8
max_steps: 1
save_steps: 1
report_to: []
seed: 0
""")

    def scripted(kind, model, tokenizer, path, args):
        return ScriptedEngine(tokenizer, ["\\boxed{6}"]), False

    assert run_training(*parse_train_args(["--config", str(recipe)]), engine_factory=scripted) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples" / "step_000001.jsonl").open()]
    assert len(rows) == 2 and rows[0]["question_id"] == rows[1]["question_id"]  # one whole group of 2 fits in 3
    assert not {"prompt_ids", "completion_ids", "loss_mask"} & set(rows[0]["trajectory"])  # compact by default
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["signal/groups"] == 4  # the step itself saw all 8 responses
