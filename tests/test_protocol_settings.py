"""The protocol settings the docs promise are settable from a recipe and the command line, and reach
the run's task spec: `session`, `max_observation_chars`, a custom template given as a mapping."""

from __future__ import annotations

import json

import pytest

from torl.errors import UserError
from torl.train.config import parse_train_args, task_spec, validate

RECIPE = """
model: smollm2-135m
use_cpu: true
bf16: false
train_tasks: [arithmetic]
session: true
max_observation_chars: 200
template:
  name: qa_python
  preamble: "Solve it with Python when it helps.\\n"
  turn: "Q: {question}\\nA:\\n"
  stop: ["\\nQ:"]
  examples:
    - {question: "What is 2 * 3?", solution: "```python\\nprint(2 * 3)\\n```\\nThe answer is \\\\boxed{6}.\\n"}
"""


def _recipe(tmp_path, text=RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_recipe_settings_reach_the_task_spec(tmp_path):
    torl_cfg, grpo_cfg = parse_train_args(["--config", _recipe(tmp_path)])
    validate(torl_cfg, grpo_cfg)
    task = task_spec(torl_cfg)
    assert task.session is True and task.max_observation_chars == 200
    prompt = task.prompt_template().render("What is 5 * 7?")
    assert prompt.startswith("Solve it with Python when it helps.\nQ: What is 2 * 3?\nA:\n```python")
    assert prompt.endswith("Q: What is 5 * 7?\nA:\n") and task.stop_strings == ("\nQ:",)
    config = task.rollout_config(temperature=0.0)
    assert config.session is True and config.max_observation_chars == 200
    # the spec a run saves, read back by `torl eval --run` / `torl rollout --run`, renders the same prompt
    task.save(tmp_path)
    from torl.tir.task import TaskSpec

    again = TaskSpec.load(tmp_path)
    assert again == task and again.prompt_template().render("What is 5 * 7?") == prompt
    assert json.loads((tmp_path / "task_spec.json").read_text())["template"]["name"] == "qa_python"


def test_command_line_overrides(tmp_path):
    torl_cfg, grpo_cfg = parse_train_args(["--config", _recipe(tmp_path), "--session", "false",
                                           "--max_observation_chars", "64", "--template", "torl"])
    validate(torl_cfg, grpo_cfg)
    task = task_spec(torl_cfg)
    assert (task.session, task.max_observation_chars, task.template) == (False, 64, "torl")
    mapping = '{"name": "bare", "turn": "{question} ="}'
    torl_cfg, grpo_cfg = parse_train_args(["--config", _recipe(tmp_path), "--template", mapping])
    assert task_spec(torl_cfg).prompt_template().render("1+1") == "1+1 ="


def test_mistakes_are_one_line(tmp_path):
    bad = RECIPE.replace('turn: "Q: {question}\\nA:\\n"', 'turn: "Q:"')
    with pytest.raises(UserError, match=r"template mapping: .*must contain \{question\}"):
        validate(*parse_train_args(["--config", _recipe(tmp_path, bad)]))
    with pytest.raises(UserError, match="unknown template 'nope'; choose one of chat, chat_tools, chat_tools_fewshot, torl, torl_fewshot, torl_think, or give a mapping"):
        validate(*parse_train_args(["--config", _recipe(tmp_path), "--template", "nope"]))
    with pytest.raises(UserError, match="max_observation_chars must be >= 1"):
        validate(*parse_train_args(["--config", _recipe(tmp_path), "--max_observation_chars", "0"]))
