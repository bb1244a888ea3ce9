"""One real GRPO step under protocol tool_calls: a tiny model with SmolLM2's tokenizer and chat
template, scripted rollouts that call python and search by tool call, the real local sandbox,
TRL's update and torl's token contract on every batch."""

from __future__ import annotations

import json

from conftest import save_tiny_llama

from torl.engines.scripted import ScriptedEngine
from torl.tir.task import TaskSpec
from torl.train.config import parse_train_args
from torl.train.trainer import run_training

CALL = '<tool_call>\n{"name": "python", "arguments": {"code": "print(2 * 3)"}}\n</tool_call>'
SEARCH = '<tool_call>{"name": "search", "arguments": {"query": "six"}}</tool_call>'


def test_a_training_step_with_tool_calls(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"title": "Six", "text": "Six is two times three."}) + "\n")
    model_dir = save_tiny_llama(tmp_path / "tiny")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"""
model: {model_dir}
template: chat_tools
protocol: tool_calls
tools: [python, search]
search_corpus: {corpus}
max_calls_per_tool: [search=1]
error_marker: true
max_tool_calls: 3
exec_timeout_s: 3.0
exec_memory_mb: 512
sandbox_workers: 1
train_tasks: [arithmetic]
train_task_difficulty: 1
train_task_count: 4
run_dir: {tmp_path / 'run'}
dump_samples: true
use_cpu: true
bf16: false
gradient_checkpointing: false
num_generations: 2
per_device_train_batch_size: 2
max_response_tokens: 160
max_steps: 1
save_steps: 1
save_only_model: true
report_to: [tensorboard]
seed: 0
""")

    def scripted(kind, model, tokenizer, path, args):
        return ScriptedEngine(tokenizer, [CALL, SEARCH, '<tool_call>{"name": "nope"}</tool_call>', "\\boxed{6}"]), False

    assert run_training(*parse_train_args(["--config", str(recipe)]), engine_factory=scripted) == 0
    run = tmp_path / "run"
    spec = TaskSpec.load(run)
    assert (spec.protocol, spec.tools, spec.max_calls_per_tool, spec.error_marker) == (
        "tool_calls", ("python", "search"), {"search": 1}, True)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["tools/python/calls"] == 1.0 and row["tools/search/calls"] == 1.0
    assert row["tools/unknown_tool_ratio"] == 1 / 3 and row["tools/parse_error_ratio"] == 0.0
    assert row["health/void_turn_ratio"] == 0.0  # each turn after a tool message calls a tool or answers
    sample = json.loads(next((run / "samples").glob("step_*.jsonl")).read_text().splitlines()[0])
    # the dump records the prompt the model saw: SmolLM2's template has no tool support, so the schemas
    # are in its system message
    assert "<tools>" in sample["prompt"] and '"name": "search"' in sample["prompt"]
    assert sample["prompt"].endswith(sample["problem"] + "\n\nCall a tool when it helps, and put your final answer "
                                     "within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    calls = sample["trajectory"]["calls"] if "trajectory" in sample else sample["calls"]
    assert [c["tool"] for c in calls] == ["python", "search", "nope"]
    assert calls[0]["observation"] == "6" and "two times three" in calls[1]["observation"]
    assert calls[2]["observation"].startswith("<error>")
