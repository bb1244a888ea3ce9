"""Every recipe validates under every launcher its docs name, in the environment that launcher sets.

The launches are read from the docs themselves (README.md, the recipes' headers, configs/accelerate/),
so a newly documented command is checked too. Each launcher's environment comes from accelerate's
own launch code applied to the accelerate config file; the process then looks like a GPU node
(`torch.cuda.is_available` true, bf16 off because TrainingArguments probes a real device for it),
with the data swapped for a small local file. Validation only: nothing trains.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from torl.errors import UserError
from torl.train.config import parse_train_args, validate

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "configs").glob("*.yaml")),
        *sorted((REPO / "configs" / "accelerate").glob("*"))]
LAUNCH_VARS = {"$NODE_RANK": "0", "$MASTER_ADDR": "10.0.0.1"}


def documented_launches() -> list[tuple[str, list[str], list[str]]]:
    """(where, accelerate launch arguments or [] for plain `torl train`, train arguments) per documented command."""
    found = []
    for path in DOCS:
        text = path.read_text()
        if path.suffix == ".yaml":  # the commands are in the header comment
            text = "\n".join(re.sub(r"^#\s?", "", line) for line in text.splitlines() if line.startswith("#"))
        text = re.sub(r"\\\n\s*", " ", text)  # continuation lines
        for line in text.splitlines():
            if "train --config" not in line:
                continue
            line = line.split(" #")[0]
            for var, value in LAUNCH_VARS.items():
                line = line.replace(var, value)
            tokens = [str(REPO / t) if re.fullmatch(r"configs/[\w/.-]+\.yaml", t) else t for t in shlex.split(line)]
            if not Path(tokens[tokens.index("--config") + 1]).is_file():
                continue  # a placeholder such as configs/<recipe>.yaml
            settings = tokens[tokens.index("train", tokens.index("--config") - 1) + 1:]
            launch = []
            if "accelerate" in tokens:
                start = tokens.index("launch", tokens.index("accelerate")) + 1
                launch = tokens[start:tokens.index("-m", start)]
            recipe = Path(settings[settings.index("--config") + 1]).name
            launcher = Path(launch[launch.index("--config_file") + 1]).name if launch else "torl train"
            found.append((f"{path.relative_to(REPO)}:{recipe}:{launcher}", launch, settings))
    return found


def launcher_environment(launch_args: list[str]) -> dict[str, str]:
    """The ACCELERATE_* / FSDP_* variables `accelerate launch <launch_args>` gives the training processes."""
    if not launch_args:
        return {}
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args([*launch_args, "-m", "torl.cli"])
    args, _, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ""  # launch_command sets it from the config's keys
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.use_fsdp or args.multi_gpu:
        env = prepare_multi_gpu_env(args)
    else:
        env = dict(os.environ)
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


LAUNCHES = documented_launches()


def test_the_docs_name_every_recipe_and_launcher():
    pairs = {(Path(s[s.index("--config") + 1]).name, Path(launch[launch.index("--config_file") + 1]).name
              if launch else "torl train") for _, launch, s in LAUNCHES}
    assert {("demo-cpu.yaml", "torl train"), ("torl-1.5b.yaml", "torl train"), ("torl-1.5b.yaml", "zero2.yaml"),
            ("torl-1.5b.yaml", "fsdp.yaml"), ("torl-7b.yaml", "zero3.yaml")} <= pairs


@pytest.fixture
def small_data(tmp_path) -> str:
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "q1", "problem": "What is 2 + 3?", "answer": "5", "source": "test"}\n')
    return str(path)


@pytest.fixture
def gpu_node(monkeypatch):
    """The launcher's environment goes here; `validate_on_gpu` then checks as a GPU node would."""
    for key in list(os.environ):
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.delenv(key)
    return monkeypatch


def validate_on_gpu(argv: list[str], small_data: str):
    """Parse as here (TrainingArguments sets up a real device), validate as on a GPU node (nothing touches one)."""
    import torch

    torl_cfg, grpo_cfg = parse_train_args([*argv, "--bf16", "false", "--train_files", small_data,
                                           "--eval_files", small_data])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        validate(torl_cfg, grpo_cfg)
    return torl_cfg


@pytest.mark.parametrize("where,launch,settings", LAUNCHES, ids=[w for w, _, _ in LAUNCHES])
def test_documented_launch_validates(where, launch, settings, gpu_node, small_data):
    env = launcher_environment(launch)
    for key, value in env.items():
        gpu_node.setenv(key, value)
    torl_cfg = validate_on_gpu(settings, small_data)
    sharded = env.get("ACCELERATE_USE_FSDP") == "true" or env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    assert torl_cfg.zero_signal_updates == ("compute" if sharded else "coast")


@pytest.mark.parametrize("launcher", ["zero3.yaml", "fsdp.yaml"])
def test_a_setting_a_launcher_cannot_run_names_the_recipe_line(launcher, gpu_node, small_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    text = (REPO / "configs" / "torl-1.5b.yaml").read_text()
    recipe.write_text(re.sub(r"(?m)^zero_signal_updates: .*$", "zero_signal_updates: coast", text))
    line = text[:text.index("\nzero_signal_updates:")].count("\n") + 2
    for key, value in launcher_environment(["--config_file", str(REPO / "configs" / "accelerate" / launcher)]).items():
        gpu_node.setenv(key, value)
    with pytest.raises(UserError) as error:
        validate_on_gpu(["--config", str(recipe)], small_data)
    message = str(error.value)
    assert "zero_signal_updates: coast" in message and f"{recipe} line {line}" in message
    assert "zero_signal_updates: auto" in message  # the fix
    with pytest.raises(UserError, match=r"the command line \(--zero_signal_updates\)"):
        validate_on_gpu(["--config", str(recipe), "--zero_signal_updates", "skip"], small_data)


@pytest.mark.parametrize("recipe", ["torl-1.5b.yaml", "torl-7b.yaml"])
def test_gpu_recipes_bound_their_disk_and_say_how_much(recipe):
    import yaml

    path = REPO / "configs" / recipe
    settings = yaml.safe_load(path.read_text())
    assert 1 <= settings["save_total_limit"] <= 3
    assert 0 < settings["dump_samples_max"] < settings["num_generations"] * 128  # a step samples 128 prompts x G
    header = "".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert re.search(r"Disk .*plan for about \d+ GB", header)


def test_sample_dumps_keep_whole_groups_up_to_the_cap():
    from torl.train.step_record import sampled_groups

    rows = [({"question_id": f"q{i // 4}"}, i) for i in range(32)]  # 8 groups of 4
    kept = sampled_groups(rows, 10, seed=(3, 0))
    assert len(kept) == 8 and len({r[0]["question_id"] for r in kept}) == 2  # 2 whole groups fit in 10
    assert [r[1] for r in kept] == sorted(r[1] for r in kept)
    assert kept == sampled_groups(rows, 10, seed=(3, 0)) and sampled_groups(rows, 100, seed=0) == rows
    assert {r[0]["question_id"] for s in range(20) for r in sampled_groups(rows, 4, seed=s)} != {"q0"}  # not always the first
    assert len(sampled_groups(rows, 1, seed=0)) == 4  # at least one group
