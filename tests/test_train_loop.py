"""End-to-end `torl train` on a tiny random Llama (SmolLM2's tokenizer), CPU, real sandbox and reward.

The policy being trained is a tiny random model; rollouts come from a ScriptedEngine that writes
ToRL-format responses (one ```python call, then a boxed answer, right or wrong by turns), so every
response really carries interpreter tokens through TRL's GRPOTrainer.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe

from torl.engines.scripted import ScriptedEngine
from torl.train.config import parse_train_args
from torl.train.trainer import run_training

QUESTION = re.compile(r"Compute \$(\d+) \\times (\d+)\$")


def _scripted_engine(kind, model, tokenizer, model_path, grpo_cfg):
    """A ToRL-format policy: compute the product with Python, then box it (wrong every third time)."""
    counter = itertools.count()

    def script(prompt_ids, turn):
        a, b = map(int, QUESTION.findall(tokenizer.decode(prompt_ids))[-1])
        if turn == 0:
            return f"Let me compute.\n```python\nprint({a} * {b})\n```\n```output"
        answer = a * b if next(counter) % 3 else a * b + 1
        return f"The product is \\boxed{{{answer}}}."

    return ScriptedEngine(tokenizer, script), False


def _config(tmp_path: Path, model_dir: Path, *extra: str):
    recipe = tiny_recipe(tmp_path, model_dir, sandbox_workers=2, train_tasks=["arithmetic"], train_task_difficulty=2,
                         train_task_count=12, gradient_checkpointing=False, per_device_train_batch_size=8,
                         gradient_accumulation_steps=1, max_response_tokens=64, learning_rate=1.0e-3)
    return parse_train_args(["--config", str(recipe), *extra])


@pytest.fixture
def scripted():
    return _scripted_engine  # run_training's engine_factory: the policy's rollouts come from the script


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_two_steps_train_write_metrics_and_samples(tmp_path, tiny_model_dir, scripted, monkeypatch):
    from trl import GRPOTrainer

    from torl.train.update.grpo import ToolGRPOTrainer

    seen = []  # (per-token logps with their gradient, the loss mask TRL used)
    original = ToolGRPOTrainer._get_per_token_logps_and_entropies  # shared-prompt scoring, else TRL's
    original_compute_loss = GRPOTrainer.compute_loss

    def spy_logps(self, *args, **kwargs):
        logps, entropies, aux = original(self, *args, **kwargs)
        if logps.requires_grad:
            logps.retain_grad()
            seen.append({"logps": logps})
        return logps, entropies, aux

    def spy_loss(self, model, inputs, *args, **kwargs):
        loss = original_compute_loss(self, model, inputs, *args, **kwargs)
        seen[-1].update(tool_mask=inputs["tool_mask"].clone(), completion_mask=inputs["completion_mask"].clone(),
                        advantages=inputs["advantages"].clone())
        return loss

    monkeypatch.setattr(ToolGRPOTrainer, "_get_per_token_logps_and_entropies", spy_logps)
    monkeypatch.setattr(GRPOTrainer, "compute_loss", spy_loss)

    assert run_training(*_config(tmp_path, tiny_model_dir), engine_factory=scripted) == 0
    run = tmp_path / "run"

    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"])
        assert r["tools/code_ratio"] == 1.0 and r["tools/calls_per_response"] == 1.0
        assert r["tools/pass_ratio"] == 1.0 and r["tools/sandbox_errors"] == 0
        assert r["lengths/tool_tokens"] > 0 and r["lengths/model_tokens"] > 0
        assert 0.0 < r["rewards/accuracy"] < 1.0  # the script is wrong every third response
        for key in ("time/rollout_s", "time/generation_s", "time/tools_s", "time/reward_s", "time/update_s"):
            assert r[key] is not None and r[key] >= 0.0, key

    # Interpreter tokens reach the loss only as zeros: no gradient flows from them.
    assert seen, "the loss was never computed"
    for record in seen:
        grad, tool_mask = record["logps"].grad, record["tool_mask"]
        model_positions = (record["completion_mask"] * tool_mask).bool()
        interpreter_positions = record["completion_mask"].bool() & ~tool_mask.bool()
        assert interpreter_positions.any(), "no interpreter tokens in the batch"
        assert torch.all(grad[interpreter_positions] == 0)
        has_signal = record["advantages"] != 0
        assert (grad[model_positions & has_signal.unsqueeze(1)] != 0).any()

    # Parameters moved: the step-2 checkpoint differs from the initial weights.
    before = _weights(tiny_model_dir)
    after = _weights(run / "checkpoints" / "checkpoint-2")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # Sample dumps: one row per response, with the fields LIMR and readers rely on.
    dump = [json.loads(line) for line in (run / "samples" / "step_000001.jsonl").read_text().splitlines()]
    assert len(dump) == 8
    for row in dump:
        assert {"step", "question_id", "problem", "gold", "prompt", "reward", "correct", "extracted", "reason",
                "trajectory"} <= set(row)
        assert row["step"] == 1 and row["prompt"].endswith("Assistant:\n")
        assert row["trajectory"]["calls"][0]["result"]["status"] == "ok"
        assert row["trajectory"]["calls"][0]["observation"].strip() == str(eval(row["problem"][9:-2].replace("\\times", "*")))
        assert row["correct"] == (row["extracted"] == row["gold"])
        assert row["reward"] == (1.0 if row["correct"] else -1.0)
    assert (run / "config.yaml").exists() and (run / "README.txt").exists()
    assert any((run / "tensorboard").iterdir())


def test_resume_continues_a_killed_run_with_same_data_and_metrics(tmp_path, tiny_model_dir, scripted):
    assert run_training(*_config(tmp_path, tiny_model_dir, "--max_steps", "3", "--save_steps", "2"), engine_factory=scripted) == 0
    run = tmp_path / "run"

    def questions(step):
        path = run / "samples" / f"step_{step:06d}.jsonl"
        return [json.loads(line)["question_id"] for line in path.read_text().splitlines()]

    step3_questions = questions(3)
    # "Kill" the run after step 3 was logged but before its checkpoint was written.
    shutil.rmtree(run / "checkpoints" / "checkpoint-3")
    (run / "samples" / "step_000003.jsonl").unlink()
    assert run_training(*_config(tmp_path, tiny_model_dir, "--max_steps", "3", "--save_steps", "2", "--resume"), engine_factory=scripted) == 0

    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]  # step 3 redone once, not duplicated
    assert questions(3) == step3_questions         # the same data order after resuming
    assert (run / "checkpoints" / "checkpoint-3").exists()


def test_ctrl_c_saves_a_checkpoint_and_stops_cleanly(tmp_path, tiny_model_dir, scripted, monkeypatch):
    from torl.train.rewards import TorlReward

    original = TorlReward.__call__

    def interrupt_during_first_step(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C mid-step
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TorlReward, "__call__", interrupt_during_first_step)
    assert run_training(*_config(tmp_path, tiny_model_dir, "--max_steps", "5", "--save_steps", "100"), engine_factory=scripted) == 0
    run = tmp_path / "run"
    assert [r["step"] for r in _metrics(run)] == [1]
    assert (run / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


def test_metrics_file_keeps_undefined_ratios_as_null_and_loggers_never_see_them(tmp_path):
    from types import SimpleNamespace

    from torl.train.step_record import MetricsFileCallback, StepRecorder

    recorder = StepRecorder()
    recorder.add_time("step_s", 2.0)
    recorder.add_time("rollout_s", 1.5)
    callback = MetricsFileCallback(tmp_path / "metrics.jsonl", recorder)
    logs = {"loss": 0.1, "tools/pass_ratio": None, "tools/code_ratio": 0.0}
    callback.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=3), None, logs=logs)
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["step"] == 3 and row["tools/pass_ratio"] is None and row["tools/code_ratio"] == 0.0
    assert row["time/update_s"] == pytest.approx(0.5)
    assert "tools/pass_ratio" not in logs and logs["tools/code_ratio"] == 0.0  # tensorboard gets numbers only
