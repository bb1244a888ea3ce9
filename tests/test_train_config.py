"""`torl train` configuration: recipes parse, and every user mistake is one clear line (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from torl import cli
from torl.errors import UserError
from torl.train.config import TorlConfig, check_sandbox, parse_train_args, validate

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo-cpu.yaml"


def _recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_demo_recipe_parses_into_both_halves():
    torl_cfg, grpo_cfg = parse_train_args(["--config", str(DEMO), "--learning_rate", "3e-5", "--max_tool_calls", "2"])
    assert torl_cfg.model == "smollm2-135m" and torl_cfg.template == "torl_fewshot"
    assert torl_cfg.max_tool_calls == 2                   # CLI overrides the YAML
    assert grpo_cfg.learning_rate == pytest.approx(3e-5)
    assert grpo_cfg.beta == 0.0 and grpo_cfg.num_generations == 8
    assert torl_cfg.extra_stop == ["\nUser:"]


@pytest.mark.parametrize("recipe", ["torl-1.5b.yaml", "torl-7b.yaml"])
def test_gpu_recipes_say_they_need_a_gpu(recipe):
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU machine: the recipe is valid here")
    with pytest.raises(UserError, match="needs a GPU"):
        parse_train_args(["--config", str(REPO / "configs" / recipe)])


def test_unknown_key_in_yaml_is_named(tmp_path):
    path = _recipe(tmp_path, "model: smollm2-135m\nlerning_rate: 1e-5\nuse_cpu: true\nbf16: false\n")
    with pytest.raises(UserError, match="unknown setting 'lerning_rate' in the config file"):
        parse_train_args(["--config", path])


def test_unknown_cli_flag_is_named(tmp_path):
    path = _recipe(tmp_path, "use_cpu: true\nbf16: false\n")
    with pytest.raises(UserError, match="unknown setting 'max_tool_call'"):
        parse_train_args(["--config", path, "--max_tool_call", "2"])


def test_missing_config_file():
    with pytest.raises(UserError, match="config file not found: nope.yaml"):
        parse_train_args(["--config", "nope.yaml"])


def test_bf16_on_cpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("bf16 is fine on a GPU")
    path = _recipe(tmp_path, "bf16: true\n")
    with pytest.raises(UserError, match="bf16 needs a GPU"):
        parse_train_args(["--config", path])
    with pytest.raises(UserError, match="bf16 needs a GPU"):
        parse_train_args(["--config", str(DEMO), "--bf16", "true"])


def test_gpu_recipe_runs_on_cpu_once_its_gpu_settings_are_overridden(tmp_path):
    """The torl-1.5b recipe, shrunk on the command line, parses on CPU (how its path is smoke-tested)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU machine")
    recipe = str(DEMO.parent / "torl-1.5b.yaml")
    with pytest.raises(UserError, match="bf16 needs a GPU"):
        parse_train_args(["--config", recipe])
    torl_cfg, grpo_cfg = parse_train_args(["--config", recipe, "--bf16", "false", "--use_cpu", "true",
                                           "--model", "smollm2-135m", "--run_dir", str(tmp_path / "run")])
    assert grpo_cfg.bf16 is False and torl_cfg.max_tool_calls == 1 and grpo_cfg.num_generations == 16


def _valid(tmp_path, **changes):
    torl_cfg, grpo_cfg = parse_train_args(["--config", str(DEMO), "--run_dir", str(tmp_path / "run")])
    for key, value in changes.items():
        setattr(torl_cfg, key, value)
    return torl_cfg, grpo_cfg


def test_demo_recipe_validates(tmp_path):
    validate(*_valid(tmp_path))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"max_tool_calls": -1}, "max_tool_calls must be >= 0"),
        ({"train_files": ["/no/such/train.jsonl"]}, "data file not found: /no/such/train.jsonl"),
        ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"model": "/tmp"}, "has no config.json"),
        ({"template": "nope"}, "unknown template 'nope'"),
        ({"reward_scheme": "nope"}, "reward_scheme must be one of"),
        ({"engine": "nope"}, "engine must be one of"),
        ({"train_tasks": [], "train_files": [], "optional_train_files": []}, "no training data"),
        ({"eval_holdout": 0}, "eval_before_after needs held-out questions"),
        ({"sandbox": "remote", "sandbox_url": None}, "sandbox=remote needs sandbox_url"),
    ],
)
def test_bad_settings_are_one_clear_line(tmp_path, changes, message):
    with pytest.raises(UserError, match=message) as info:
        validate(*_valid(tmp_path, **changes))
    assert "\n" not in str(info.value)


def test_vllm_engine_without_gpu_or_vllm_cpu_build_is_refused(tmp_path):
    import importlib.util

    import torch

    if torch.cuda.is_available() or importlib.util.find_spec("vllm") is not None:
        pytest.skip("engine=vllm can run here (GPU, or vLLM's CPU build: tests/test_train_vllm.py)")
    with pytest.raises(UserError, match=r"engine=vllm needs a GPU \(none is visible\) or vLLM's CPU build"):
        validate(*_valid(tmp_path, engine="vllm"))


@pytest.mark.parametrize("env", [
    {"ACCELERATE_USE_FSDP": "true"},
    {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
])
def test_transformers_engine_under_sharded_training_is_refused(tmp_path, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match="engine: transformers generates with the trainer's own module"):
        validate(*_valid(tmp_path, engine="transformers"))


def test_transformers_engine_under_zero2_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    validate(*_valid(tmp_path, engine="transformers"))


def test_unreachable_sandbox_is_a_user_error_before_any_model_loads():
    cfg = TorlConfig(sandbox="remote", sandbox_url="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(UserError, match="sandbox unusable"):
        check_sandbox(cfg)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    rc = cli.main(["train", "--config", str(DEMO), "--max_tool_calls", "-3", "--run_dir", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.splitlines() == ["torl: error: max_tool_calls must be >= 0 (C, the tool-call budget), got -3"]
    assert captured.out == ""


def test_python_m_torl_cli_exits_2_with_one_line(tmp_path):
    """Run as `python -m torl.cli`, cli.py is `__main__`; the library's UserError must still be the one it catches."""
    result = subprocess.run([sys.executable, "-m", "torl.cli", "train", "--config", str(tmp_path / "nonexistent.yaml")],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"torl: error: config file not found: {tmp_path / 'nonexistent.yaml'} (recipes live in configs/)"]


def test_existing_run_dir_needs_resume(tmp_path):
    from torl.train.run_dir import RunDir

    run = RunDir(tmp_path / "run")
    run.prepare(resume=False)
    run.metrics.write_text('{"step": 1}\n')
    with pytest.raises(UserError, match="already holds a run; add --resume"):
        RunDir(tmp_path / "run").prepare(resume=False)
    with pytest.raises(UserError, match="no checkpoint"):
        RunDir(tmp_path / "run").prepare(resume=True)
