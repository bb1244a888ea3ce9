"""A LoRA run evaluates and rolls out through `--run` like any other: RUN_DIR/merged when the run
finished, its last (adapter-only) checkpoint merged onto the base otherwise; README.txt says which."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from conftest import save_tiny_llama
from safetensors.torch import load_file

from torl.tir.task import run_model


@pytest.fixture
def lora_run(tmp_path, monkeypatch):
    """A finished 1-step LoRA run of a tiny random Llama (C = 0), rewards spread so the adapter moves."""
    from torl.train.config import parse_train_args
    from torl.train.rewards import TorlReward
    from torl.train.trainer import run_training

    scored = TorlReward.__call__
    monkeypatch.setattr(TorlReward, "__call__",
                        lambda self, *a, **k: [r + (i % 2) for i, r in enumerate(scored(self, *a, **k))])
    model = save_tiny_llama(tmp_path / "base")
    monkeypatch.setenv("TORL_CACHE", str(tmp_path / "cache"))  # merged adapters land here
    recipe = tmp_path / "lora.yaml"
    recipe.write_text(f"""
model: {model}
engine: transformers
template: torl
max_tool_calls: 0
train_tasks: [arithmetic]
train_task_count: 8
run_dir: {tmp_path / 'run'}
lora_r: 4
lora_alpha: 8
use_cpu: true
bf16: false
gradient_checkpointing: false
num_generations: 4
per_device_train_batch_size: 8
gradient_accumulation_steps: 1
max_response_tokens: 16
learning_rate: 1.0e-2
max_steps: 1
save_steps: 1
report_to: []
seed: 0
""")
    assert run_training(*parse_train_args(["--config", str(recipe)])) == 0
    return tmp_path / "run"


def test_a_lora_run_evaluates_and_rolls_out_through_run(lora_run, tmp_path, capsys):
    from torl.eval.commands import register as register_eval
    from torl.tir.commands import register as register_rollout

    merged = lora_run / "merged"
    checkpoint = lora_run / "checkpoints" / "checkpoint-1"
    assert not (checkpoint / "config.json").exists() and (checkpoint / "adapter_config.json").exists()
    assert run_model(lora_run) == str(merged)
    readme = (lora_run / "README.txt").read_text()
    assert f"trained model: {merged}" in readme and "LoRA" in readme and f"torl rollout --run {lora_run}" in readme

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    register_eval(subparsers)
    register_rollout(subparsers)
    bench = tmp_path / "one.jsonl"
    bench.write_text(json.dumps({"id": "a", "problem": "What is 2+2?", "answer": "4"}) + "\n")
    args = parser.parse_args(["eval", "--run", str(lora_run), "--benchmarks", str(bench), "--out",
                              str(tmp_path / "eval"), "--max-tokens", "8", "--quiet"])
    assert args.func(args) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["manifest"]["model"]["path"] == str(merged) and results["benchmarks"][str(bench)]["problems"] == 1
    capsys.readouterr()
    args = parser.parse_args(["rollout", "--run", str(lora_run), "--question", "What is 2+2?", "--max-tokens", "8",
                              "--json"])
    assert args.func(args) == 0
    assert len(json.loads(capsys.readouterr().out)["completion_ids"]) <= 8


def test_without_merged_the_last_checkpoint_loads_as_base_plus_adapter(lora_run):
    from torl.engines.models import resolve_model

    merged_weights = load_file(str(lora_run / "merged" / "model.safetensors"))
    shutil.rmtree(lora_run / "merged")  # e.g. a run stopped before its end
    checkpoint = lora_run / "checkpoints" / "checkpoint-1"
    assert run_model(lora_run) == str(checkpoint)
    loaded = resolve_model(str(checkpoint))
    assert loaded != str(checkpoint) and resolve_model(str(checkpoint)) == loaded  # merged once, then cached
    weights = load_file(f"{loaded}/model.safetensors")
    assert weights.keys() == merged_weights.keys()
    for name, tensor in weights.items():
        assert torch.allclose(tensor, merged_weights[name], atol=1e-6), name
    base = load_file(str(lora_run.parent / "base" / "model.safetensors"))
    assert any(not torch.equal(base[n], weights[n]) for n in base)  # the adapter is in
