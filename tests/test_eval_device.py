"""`torl eval` / `torl rollout` pick their device (auto: the GPU when torch sees one) and their budget
from the task spec; asking for a GPU that is not there is one line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from torl.cli import UserError
from torl.engines.models import pick_device
from torl.eval.runner import EvalConfig
from torl.tir.task import TaskSpec

HAS_GPU = torch.cuda.is_available()
REPO = Path(__file__).resolve().parents[1]


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu():
    assert pick_device("auto") == ("cuda" if HAS_GPU else "cpu")
    assert pick_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="--device must be auto, cpu, cuda or cuda:N"):
        pick_device("gpu")


@pytest.mark.skipif(HAS_GPU, reason="a GPU is visible: --device cuda is valid here")
def test_cuda_without_a_gpu_is_one_line_from_both_commands(tmp_path):
    from torl.eval.commands import register as register_eval
    from torl.tir.commands import register as register_rollout

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    register_eval(subparsers)
    register_rollout(subparsers)
    for argv in (["eval", "--model", "smollm2-135m", "--benchmarks", "aime24", "--device", "cuda",
                  "--out", str(tmp_path / "o")],
                 ["rollout", "--question", "1+1?", "--device", "cuda"]):
        args = parser.parse_args(argv)
        with pytest.raises(UserError) as error:
            args.func(args)
        message = str(error.value)
        assert "\n" not in message and "--device cuda: torch sees no GPU" in message and "--device cpu" in message


def test_eval_engine_runs_on_the_chosen_device(tmp_path):
    import asyncio

    from conftest import save_tiny_llama

    from torl.eval.runner import build_engine

    model = save_tiny_llama(tmp_path / "tiny")
    cfg = EvalConfig(model=str(model), benchmarks=["x"], out_dir=str(tmp_path / "out"))
    assert cfg.device == ("cuda" if HAS_GPU else "cpu") and cfg.settings()["device"] == cfg.device

    async def device_and_dtype():
        engine = await build_engine(cfg)
        try:
            parameter = next(engine.model.parameters())
            return parameter.device.type, parameter.dtype
        finally:
            await engine.aclose()

    assert asyncio.run(device_and_dtype()) == (("cuda", torch.bfloat16) if HAS_GPU else ("cpu", torch.float32))


def test_the_budget_comes_from_the_run_else_matches_the_recipes(tmp_path):
    from torl.train.config import parse_train_args

    recipe = parse_train_args(["--config", str(REPO / "configs" / "torl-1.5b.yaml"), "--bf16", "false"])[1]
    assert EvalConfig(model="m", benchmarks=["x"], out_dir=str(tmp_path)).task.max_response_tokens \
        == recipe.max_completion_length == 3072  # TRL's copy follows max_response_tokens
    run = tmp_path / "run"
    run.mkdir()
    TaskSpec(template="torl_fewshot", max_response_tokens=96, session=True, max_observation_chars=100).save(run)
    cfg = EvalConfig(model="m", run=str(run), benchmarks=["x"], out_dir=str(tmp_path / "o"))
    assert (cfg.task.max_response_tokens, cfg.task.session, cfg.task.max_observation_chars) == (96, True, 100)
    assert json.loads(json.dumps(cfg.settings()))["task"]["max_response_tokens"] == 96
    overridden = EvalConfig(model="m", run=str(run), benchmarks=["x"], out_dir=str(tmp_path / "o"), 
                            overrides={"session": False, "max_observation_chars": 40, "max_response_tokens": 50})
    assert (overridden.task.session, overridden.task.max_observation_chars,
            overridden.task.max_response_tokens) == (False, 40, 50)
    assert set(overridden.task_overrides) == {"session", "max_observation_chars", "max_response_tokens"}
