"""`torl train --model RUN_DIR`: which weights and which task spec RL starts from (no model loaded)."""

from __future__ import annotations

import json

import pytest

from torl.errors import UserError
from torl.tir.task import TaskSpec
from torl.train.config import TorlConfig
from torl.train.start import resolve_start


def _run(tmp_path, spec: TaskSpec, steps=(2, 10)):
    root = tmp_path / "sft-run"
    for step in steps:
        (root / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (root / "checkpoints" / f"checkpoint-{step}" / "config.json").write_text("{}")
    (root / "task_spec.json").write_text(json.dumps(spec.to_dict()))
    return root


def test_a_run_directory_gives_its_last_checkpoint_and_its_task_spec(tmp_path):
    spec = TaskSpec(template="torl", max_tool_calls=2, extra_stop=("\nUser:",), exec_timeout_s=7.0,
                    call_trigger="block_close", reward_scheme="binary")
    root = _run(tmp_path, spec)
    cfg = TorlConfig(model=str(root), template="torl_fewshot", max_tool_calls=1)
    start = resolve_start(cfg)
    assert cfg.model == str(root / "checkpoints" / "checkpoint-10")
    assert (cfg.template, cfg.max_tool_calls, cfg.extra_stop, cfg.call_trigger, cfg.exec_timeout_s,
            cfg.reward_scheme) == ("torl", 2, ["\nUser:"], "block_close", 7.0, "binary")
    assert start["run"] == str(root) and start["given"] == str(root) and start["task_spec"] == spec.to_dict()
    assert start["changed"]["template"] == {"from": "torl_fewshot", "to": "torl"}
    assert "exec_memory_mb" not in start["changed"]  # unchanged fields are not reported


def test_a_checkpoint_of_a_run_keeps_that_checkpoint_and_takes_the_runs_spec(tmp_path):
    root = _run(tmp_path, TaskSpec(template="torl"))
    cfg = TorlConfig(model=str(root / "checkpoints" / "checkpoint-2"))
    assert resolve_start(cfg)["model"] == cfg.model == str(root / "checkpoints" / "checkpoint-2")
    assert cfg.template == "torl"


def test_a_lora_runs_merged_model_is_preferred(tmp_path):
    root = _run(tmp_path, TaskSpec(template="torl"))
    (root / "merged").mkdir()
    (root / "merged" / "config.json").write_text("{}")
    cfg = TorlConfig(model=str(root))
    resolve_start(cfg)
    assert cfg.model == str(root / "merged")


def test_plain_models_are_left_alone_and_every_task_field_is_adopted(tmp_path):
    cfg = TorlConfig(model="smollm2-135m")
    assert resolve_start(cfg) is None and cfg.model == "smollm2-135m"
    spec = TaskSpec(template="torl", session=True, max_observation_chars=200, max_response_tokens=64)
    cfg = TorlConfig(model=str(_run(tmp_path, spec)))
    start = resolve_start(cfg)
    assert cfg.task() == spec  # one vocabulary: the recipe can say everything the spec says
    assert start["changed"]["session"] == {"from": False, "to": True}
    empty = tmp_path / "no-checkpoints"
    empty.mkdir()
    (empty / "task_spec.json").write_text(json.dumps(TaskSpec().to_dict()))
    with pytest.raises(UserError, match="no checkpoints"):
        resolve_start(TorlConfig(model=str(empty)))
