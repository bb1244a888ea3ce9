"""One task spec from training to evaluation: a run records it, `torl eval --run` and `torl rollout
--run` reproduce it field by field, flags override single fields and the results say which."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import tiny_recipe

from torl.cli import UserError
from torl.engines.scripted import ScriptedEngine
from torl.eval.runner import EvalConfig, run_eval
from torl.tir.task import TaskSpec
from torl.train.config import parse_train_args
from torl.train.trainer import run_training


def test_spec_defaults_validation_and_roundtrip(tmp_path):
    spec = TaskSpec(template="torl_fewshot", extra_stop=("\nQ:",), max_tool_calls=2)
    assert spec.stop_strings == ("\nUser:", "\nQ:")  # the template's stop always applies
    assert TaskSpec.load(spec.save(tmp_path).parent) == spec
    with pytest.raises(ValueError, match="unknown template"):
        TaskSpec(template="nope")
    with pytest.raises(ValueError, match="reward_scheme"):
        TaskSpec(reward_scheme="nope")
    with pytest.raises(ValueError, match="not found"):
        TaskSpec.load(tmp_path / "missing")
    changed, diff = spec.override(max_tool_calls=0, template=None)
    assert changed.max_tool_calls == 0 and diff == {"max_tool_calls": {"from": 2, "to": 0}}


def test_eval_without_a_run_uses_the_spec_defaults_and_the_template_stops():
    cfg = EvalConfig(model="m", benchmarks=["b"], out_dir="o", overrides={"template": "torl_fewshot"})
    assert cfg.task == TaskSpec(template="torl_fewshot")
    assert "\nUser:" in cfg.task.rollout_config(temperature=0.0).stop_strings
    with pytest.raises(UserError, match="--run"):
        EvalConfig(model=None, benchmarks=["b"], out_dir="o")


class RecordingEngine(ScriptedEngine):
    """Answers like a few-shot model that runs on past its answer, and records every request."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, ["The answer is \\boxed{6}.\nUser: What is 1+1?\nAssistant: \\boxed{2}"])
        self.params = []

    async def generate(self, prompt_ids, params):
        self.params.append(params)
        return await super().generate(prompt_ids, params)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir):
    """One real GRPO step on a tiny model (scripted rollouts), with a non-default protocol."""
    root = tmp_path_factory.mktemp("spec-run")
    recipe = tiny_recipe(root, tiny_model_dir, template="torl_fewshot", max_tool_calls=2, call_trigger="block_close",
                         extra_stop=["\nQ:"], exec_timeout_s=3.0, exec_memory_mb=512, reward_scheme="binary",
                         train_tasks=["arithmetic"], train_task_difficulty=1, train_task_count=4,
                         gradient_checkpointing=False, num_generations=2, per_device_train_batch_size=2,
                         learning_rate=None, max_steps=1, eval_before_after=False)
    def scripted(kind, model, tokenizer, path, args):
        return ScriptedEngine(tokenizer, ["```python\nprint(2 * 3)\n```\n", "\\boxed{6}"]), False

    assert run_training(*parse_train_args(["--config", str(recipe)]), engine_factory=scripted) == 0
    return root / "run"


def test_eval_run_reproduces_the_training_protocol(trained_run, tmp_path):
    recorded = json.loads((trained_run / "task_spec.json").read_text())
    assert recorded == {"template": "torl_fewshot", "max_tool_calls": 2, "extra_stop": ["\nQ:"],
                        "max_response_tokens": 48, "max_observation_chars": 512, "exec_timeout_s": 3.0,
                        "exec_memory_mb": 512, "session": False, "call_trigger": "block_close",
                        "reward_scheme": "binary"}
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "q1", "problem": "What is 2*3?", "answer": "6"}) + "\n")
    cfg = EvalConfig(model=None, run=str(trained_run), benchmarks=[str(bench)], out_dir=str(tmp_path / "eval"))
    assert cfg.model.endswith("checkpoint-1")
    assert cfg.task == TaskSpec.from_dict(recorded) and cfg.task_overrides == {}
    train_side = TaskSpec.from_dict(recorded).rollout_config(temperature=0.0, logprobs=False)
    eval_side = cfg.task.rollout_config(temperature=cfg.temperature, top_p=cfg.top_p, logprobs=False)
    for field in dataclasses.fields(train_side):  # field by field, decoding aside
        assert getattr(eval_side, field.name) == getattr(train_side, field.name), field.name

    engines = []

    async def engine_factory(c):
        from transformers import AutoTokenizer

        engines.append(RecordingEngine(AutoTokenizer.from_pretrained(c.model)))
        return engines[0]

    summary = run_eval(cfg, engine_factory=engine_factory, progress=False)
    assert all("\nUser:" in p.stop and "\nQ:" in p.stop for p in engines[0].params)
    row = json.loads((tmp_path / "eval" / "trajectories.jsonl").read_text().splitlines()[-1])
    # Scored on the text up to the template's stop: the invented next turn's \boxed{2} never counts.
    assert row["extracted"] == "6" and row["correct"] is True and row["reward"] == 1.0  # binary, from the run
    assert summary is not None


def test_eval_run_flag_overrides_one_field_and_records_it(trained_run, tmp_path):
    cfg = EvalConfig(model=None, run=str(trained_run), benchmarks=["b"], out_dir=str(tmp_path),
                     overrides={"max_tool_calls": 0})
    assert cfg.task.max_tool_calls == 0 and cfg.task.template == "torl_fewshot"
    assert cfg.settings()["task_overrides"] == {"max_tool_calls": {"from": 2, "to": 0}}


def test_eval_run_on_a_directory_without_a_spec_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="task_spec.json not found"):
        EvalConfig(model=None, run=str(tmp_path), benchmarks=["b"], out_dir="o")


def test_rollout_run_uses_the_recorded_spec(trained_run, monkeypatch):
    import argparse

    from torl.tir import commands

    seen = {}

    async def fake_rollout(args, task):
        seen.update(task=task, model=args.model)
        from torl.tir.trajectory import Trajectory

        return Trajectory(prompt_ids=[], completion_ids=[], loss_mask=[], text="\\boxed{6}"), None

    monkeypatch.setattr(commands, "_rollout", fake_rollout)
    monkeypatch.setattr(commands, "_print_readable", lambda *a: None)
    args = argparse.Namespace(run=str(trained_run), model=None, engine="transformers", device="cpu", question="q",
                              answer=None, json=False)  # no task flag given
    assert commands.run_rollout(args) == 0
    assert seen["task"] == TaskSpec.load(trained_run) and Path(seen["model"]).name == "checkpoint-1"
