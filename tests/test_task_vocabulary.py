"""One task vocabulary: every task knob has one name, one default and one check (TaskSpec's), spelled
the same in recipes (`TaskSettings`), on the eval / rollout / data-sample command lines, in
task_spec.json and in the loop's RolloutConfig; old spellings still read, with a one-line note."""

from __future__ import annotations

import argparse
import dataclasses
import shutil

import pytest
import yaml

from torl.errors import UserError
from torl.tir.loop import RolloutConfig
from torl.tir.task import DEPRECATED_NAMES, TaskSettings, TaskSpec, task_field_names
from torl.train.config import TorlConfig, parse_train_args, task_spec, validate

BASE = {"model": "smollm2-135m", "use_cpu": True, "bf16": False, "train_tasks": ["arithmetic"]}


def _recipe(tmp_path, **settings):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**BASE, **settings}))
    return str(path)


def test_recipes_spell_and_default_every_task_field_as_the_spec_does():
    assert [f.name for f in dataclasses.fields(TaskSettings)] == task_field_names()
    assert TaskSettings().task() == TaskSpec()  # the same defaults, by construction
    assert TorlConfig().task() == TaskSpec()
    spec_help = {f.name: f.metadata["help"] for f in dataclasses.fields(TaskSpec)}
    assert {f.name: f.metadata["help"] for f in dataclasses.fields(TaskSettings)} == spec_help


def test_the_loops_settings_default_like_the_spec():
    loop, spec = RolloutConfig(), TaskSpec()
    shared = {f.name for f in dataclasses.fields(RolloutConfig)} & set(task_field_names())
    assert shared >= {"max_tool_calls", "max_response_tokens", "max_observation_chars", "session", "call_trigger",
                      "protocol", "error_marker"}
    assert {name: getattr(loop, name) for name in shared} == {name: getattr(spec, name) for name in shared}


def test_old_recipe_names_still_read_with_one_note_each(tmp_path, capsys):
    recipe = _recipe(tmp_path, sandbox_timeout_s=3.0, sandbox_memory_mb=256, stop_strings=["\nQ:"],
                     max_completion_length=40, eval_max_tokens=99)
    torl_cfg, grpo_cfg = parse_train_args(["--config", recipe, "--sandbox_timeout_s", "4"])
    task = task_spec(torl_cfg)
    assert (task.exec_timeout_s, task.exec_memory_mb, task.extra_stop, task.max_response_tokens) == \
        (4.0, 256, ("\nQ:",), 40)
    assert grpo_cfg.max_completion_length == 40  # TRL's copy follows the task's budget
    notes = capsys.readouterr().err.strip().splitlines()
    assert sorted(notes) == sorted([
        "torl: --sandbox_timeout_s is deprecated; its name is now --exec_timeout_s",
        f"torl: sandbox_timeout_s is deprecated (in {recipe}); its name is now exec_timeout_s",
        f"torl: sandbox_memory_mb is deprecated (in {recipe}); its name is now exec_memory_mb",
        f"torl: stop_strings is deprecated (in {recipe}); its name is now extra_stop",
        f"torl: max_completion_length is deprecated (in {recipe}); its name is now max_response_tokens",
        (f"torl: eval_max_tokens is no longer a setting (in {recipe}) and is ignored: the held-out eval uses the "
         "task's max_response_tokens")])


def test_one_setting_under_two_names_is_refused(tmp_path):
    with pytest.raises(UserError, match="sets both sandbox_timeout_s and exec_timeout_s"):
        parse_train_args(["--config", _recipe(tmp_path, sandbox_timeout_s=3.0, exec_timeout_s=4.0)])


def test_a_trl_budget_that_disagrees_with_the_tasks_is_refused():
    from trl import GRPOConfig

    with pytest.raises(UserError, match="max_completion_length is 24 but max_response_tokens is 3072"):
        validate(TorlConfig(train_tasks=["arithmetic"]), GRPOConfig(max_completion_length=24, use_cpu=True))


def test_bad_task_values_are_checked_once_by_the_spec(tmp_path):
    for flag, value, message in [("--max_tool_calls", "-1", "max_tool_calls must be >= 0"),
                                 ("--exec_timeout_s", "0", "exec_timeout_s must be > 0"),
                                 ("--call_trigger", "eager", "call_trigger must be one of output_fence, block_close"),
                                 ("--max_calls_per_tool", "search", "max_calls_per_tool wants name=N")]:
        with pytest.raises(UserError, match=message):
            validate(*parse_train_args(["--config", _recipe(tmp_path), flag, value]))


def _parser(command: str) -> argparse.ArgumentParser:
    from torl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if command == "data sample":
        data = sub.choices["data"]
        return next(a for a in data._actions if isinstance(a, argparse._SubParsersAction)).choices["sample"]
    return sub.choices[command]


@pytest.mark.parametrize("command", ["eval", "rollout", "data sample"])
def test_every_command_has_one_flag_per_task_field_named_after_it(command):
    options = {s for a in _parser(command)._actions for s in a.option_strings}
    assert {"--" + name.replace("_", "-") for name in task_field_names()} <= options
    from torl.tir.task_flags import task_overrides

    args = _parser(command).parse_args(["--exec-timeout-s", "3", "--tools", "python,search", "--no-session",
                                        "--extra-stop", "\nQ:", "--max-calls-per-tool", "search=2"]
                                       + (["--question", "q"] if command == "rollout" else [])
                                       + (["--out", "o"] if command == "data sample" else []))
    assert task_overrides(args) == {"exec_timeout_s": 3.0, "tools": ("python", "search"), "session": False,
                                    "extra_stop": ["\nQ:"], "max_calls_per_tool": ("search=2",)}


def test_old_flags_still_read_with_a_note(capsys):
    from torl.tir.task_flags import task_overrides

    args = _parser("eval").parse_args(["--max-tokens", "64", "--exec-timeout", "2"])
    assert task_overrides(args) == {"max_response_tokens": 64, "exec_timeout_s": 2.0}
    assert capsys.readouterr().err.count("is deprecated") == 2
    assert set(DEPRECATED_NAMES.values()) <= set(task_field_names())


def test_switching_protocol_keeps_only_what_still_applies():
    demo = TaskSpec(template="torl_fewshot", call_trigger="block_close")
    task, changed = demo.override(protocol="tool_calls")
    assert (task.template, task.call_trigger) == ("chat_tools", "call_end")
    assert set(changed) == {"protocol", "template", "call_trigger"}
    assert demo.override(protocol="tool_calls", template="chat_tools_fewshot")[0].template == "chat_tools_fewshot"


TOOL_MODULE = '''
from torl.tools import FunctionTool, register_tool

register_tool(FunctionTool("word_length", lambda word: str(len(word)), description="Count letters.",
                           parameters={"type": "object", "properties": {"word": {"type": "string"}},
                                       "required": ["word"]}), overwrite=True)
'''


def test_a_recipe_loads_the_users_tool_module(tmp_path):
    module = tmp_path / "my_tools.py"
    module.write_text(TOOL_MODULE)
    recipe = _recipe(tmp_path, protocol="tool_calls", template="chat_tools", tools=["python", "word_length"],
                     tool_modules=[str(module)])
    task = task_spec(parse_train_args(["--config", recipe])[0])
    assert task.toolset().names == ["python", "word_length"]
    assert TaskSpec.from_dict(task.to_dict()) == task  # task_spec.json keeps the module, so eval --run finds the tool
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserError, match=r"tool_modules: cannot import .*broken.py: RuntimeError: boom"):
        task_spec(parse_train_args(["--config", _recipe(tmp_path, protocol="tool_calls", template="chat_tools",
                                                        tool_modules=[str(broken)])])[0])


# Earlier assistant turns lose their tool calls when rendered again: not prefix-preserving.
DROPPING_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.role == 'assistant' and not loop.last %}{{ m.content.split('<tool_call>')[0] }}"
    "{%- else %}{{ m.content }}{%- endif %}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_validate_refuses_a_template_that_is_not_prefix_preserving_before_any_model_loads(tmp_path, tiny_model_dir):
    import json

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = DROPPING_TEMPLATE
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    recipe = _recipe(tmp_path, model=str(model), protocol="tool_calls", template="chat_tools")
    with pytest.raises(UserError, match="is not prefix-preserving for tool calls"):
        validate(*parse_train_args(["--config", recipe]))
    validate(*parse_train_args(["--config", _recipe(tmp_path, model=str(tiny_model_dir), protocol="tool_calls",
                                                    template="chat_tools")]))  # SmolLM2's own template passes
