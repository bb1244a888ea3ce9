"""`torl sft` end to end on a tiny random Llama (SmolLM2's tokenizer), CPU: the gradient, the run directory,
`torl eval --run` on it, and RL started from it (`torl train --model RUN_DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_llama

from torl.sft.expert import expert_response
from torl.tir.task import TaskSpec

PRODUCTS = [(482, 37), (913, 64), (205, 18), (777, 91), (356, 42), (128, 55)]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _data(path: Path) -> Path:
    rows = [{"problem": f"Compute ${a} \\times {b}$.", "answer": str(a * b),
             "response": "Let me compute.\n" + expert_response(f"print({a} * {b})\n", str(a * b))} for a, b in PRODUCTS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft_config(tmp_path: Path, model_dir: Path, *extra: str):
    from torl.sft.config import parse_sft_args

    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"""
model: {model_dir}
template: torl
max_tool_calls: 1
call_trigger: output_fence
max_response_tokens: 64
run_dir: {tmp_path / 'sft'}
use_cpu: true
bf16: false
per_device_train_batch_size: 3
gradient_accumulation_steps: 1
max_steps: 2
learning_rate: 1.0e-2
save_steps: 2
save_only_model: true
report_to: [tensorboard]
seed: 0
""")
    return parse_sft_args(["--config", str(recipe), "--data", str(_data(tmp_path / "tir.jsonl")), *extra])


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir):
    """One SFT run, its gradient spied on: (run dir, [per-micro-batch records])."""
    from trl import SFTTrainer

    from torl.sft.trainer import run_sft

    tmp_path = tmp_path_factory.mktemp("sft")
    seen = []
    original = SFTTrainer.compute_loss

    def spy(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        record = {"input_ids": inputs["input_ids"].clone(), "labels": inputs["labels"].clone(),
                  "attention_mask": inputs["attention_mask"].clone()}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        with torch.no_grad():  # the reference: plain cross-entropy of the model's tokens, own forward
            record["reference_logits"] = base(input_ids=inputs["input_ids"],
                                              attention_mask=inputs["attention_mask"]).logits.clone()
        hidden = []  # the final norm's output: position t feeds only the prediction of token t + 1

        def keep(module, args, out) -> None:
            out.retain_grad()
            hidden.append(out)

        handle = base.model.norm.register_forward_hook(keep)
        try:
            loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()
        record.update(loss=(loss[0] if return_outputs else loss).detach().clone(), hidden=hidden[0],
                      num_items=num_items_in_batch)
        seen.append(record)
        return loss

    patch = pytest.MonkeyPatch()
    patch.setattr(SFTTrainer, "compute_loss", spy)
    try:
        assert run_sft(*_sft_config(tmp_path, tiny_model_dir)) == 0
    finally:
        patch.undo()
    return tmp_path / "sft", seen, tmp_path


def _expected_mask(tokenizer, input_ids: list[int], task: TaskSpec, rows: list[dict]) -> list[int]:
    """The completion mask torl.sft.data gives the row whose tokens these are (padding stripped)."""
    from torl.sft.data import text_example

    for row in rows:
        traj = text_example(row["problem"], row["response"], task, tokenizer)
        ids = traj["prompt_ids"] + traj["completion_ids"]
        if ids == input_ids:
            return [0] * len(traj["prompt_ids"]) + traj["loss_mask"]
    raise AssertionError("a batch row matches no example")


def test_sft_gradient_is_zero_on_prompt_and_interpreter_tokens_and_the_loss_is_trls(sft_run, tiny_model_dir):
    from transformers import AutoTokenizer

    run, seen, tmp_path = sft_run
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = TaskSpec.load(run)
    rows = [json.loads(line) for line in (tmp_path / "tir.jsonl").read_text().splitlines()]
    assert len(seen) == 2
    for record in seen:
        grad = record["hidden"].grad
        assert grad is not None
        for b in range(record["input_ids"].size(0)):
            n = int(record["attention_mask"][b].sum())
            ids = record["input_ids"][b, :n].tolist()
            mask = _expected_mask(tokenizer, ids, task, rows)
            assert 0 in mask[mask.index(1):], "no interpreter tokens inside the response"
            # TRL's labels: -100 exactly where our mask is 0 (prompt, interpreter output) and on padding
            labels = record["labels"][b].tolist()
            assert labels[:n] == [t if m else -100 for t, m in zip(ids, mask, strict=True)]
            assert all(x == -100 for x in labels[n:])
            # position t predicts token t + 1: its gradient is exactly zero iff token t + 1 is not the model's
            for t in range(grad.size(1)):
                learns = t + 1 < n and mask[t + 1] == 1
                if learns:
                    assert grad[b, t].abs().sum() > 0, (b, t)
                else:
                    assert torch.all(grad[b, t] == 0), (b, t)
        # the loss equals the mean cross-entropy over the model's tokens, from a plain forward
        logps = torch.log_softmax(record["reference_logits"][:, :-1].double(), dim=-1)
        targets = record["labels"][:, 1:]
        keep = targets != -100
        token_logps = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep]
        assert int(keep.sum()) == int(record["num_items"] if record["num_items"] is not None else keep.sum())
        assert torch.allclose(record["loss"].double(), -token_logps.mean(), atol=1e-5, rtol=1e-5)


def test_sft_run_directory_has_the_training_layout(sft_run):
    run, _, _ = sft_run
    for name in ("config.yaml", "task_spec.json", "metrics.jsonl", "README.txt", "summary.json",
                 "sft_data_report.json"):
        assert (run / name).is_file(), name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["loss"] > 0 for m in metrics)
    readme = (run / "README.txt").read_text()
    assert "loss curve" in readme and "torl eval --run" in readme
    assert (run / "checkpoints" / "checkpoint-2" / "model.safetensors").is_file()
    report = json.loads((run / "sft_data_report.json").read_text())
    assert report["used"] == len(PRODUCTS) and report["tool_tokens"] > 0


def test_torl_eval_run_on_an_sft_run_uses_its_task_spec(sft_run, tmp_path):
    from torl.cli import main

    run, _, _ = sft_run
    bench = tmp_path / "two.jsonl"
    bench.write_text('{"problem": "Compute $12 \\\\times 34$.", "answer": "408"}\n'
                     '{"problem": "What is 2 + 3?", "answer": "5"}\n')
    out = tmp_path / "eval"
    assert main(["eval", "--run", str(run), "--benchmarks", str(bench), "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == TaskSpec.load(run).to_dict()
    assert config["task"]["template"] == "torl" and config["task"]["max_response_tokens"] == 64
    assert config["model"] == str(run / "checkpoints" / "checkpoint-2")
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 2


def test_rl_from_an_sft_run_starts_from_its_weights_under_its_spec(sft_run, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file
    from test_train_loop import (
        _scripted_engine,  # the ToRL-format scripted policy of the RL tests
    )

    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training
    from torl.train.update.grpo import ToolGRPOTrainer

    run, _, _ = sft_run
    recipe = tmp_path / "rl.yaml"
    recipe.write_text(f"""
model: {run}
template: torl_fewshot
max_tool_calls: 2
sandbox_workers: 2
train_tasks: [arithmetic]
train_task_difficulty: 2
train_task_count: 8
run_dir: {tmp_path / 'rl'}
use_cpu: true
bf16: false
num_generations: 4
per_device_train_batch_size: 4
gradient_accumulation_steps: 1
max_response_tokens: 64
max_steps: 1
save_steps: 1
save_only_model: true
report_to: [tensorboard]
seed: 0
""")
    at_start = {}
    original = ToolGRPOTrainer.train

    def spy(self, *args, **kwargs):
        at_start.update({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return original(self, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(ToolGRPOTrainer, "train", spy)
    try:
        torl_cfg, grpo_cfg = parse_train_args(["--config", str(recipe)])
        assert run_training(torl_cfg, grpo_cfg, engine_factory=_scripted_engine) == 0
    finally:
        patch.undo()
    sft_weights = load_file(str(run / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    base_weights = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(sft_weights[k], base_weights[k]) for k in sft_weights), "SFT did not move the weights"
    for name, tensor in sft_weights.items():
        assert torch.equal(at_start[name], tensor), name
    # the RL run trained under the SFT run's task spec and says where it started
    rl = tmp_path / "rl"
    assert TaskSpec.load(rl).template == "torl" and TaskSpec.load(rl).max_tool_calls == 1
    import yaml

    config = yaml.safe_load((rl / "config.yaml").read_text())
    assert config["start"]["run"] == str(run) and config["start"]["changed"]["template"]["to"] == "torl"
    assert config["torl"]["model"] == str(run / "checkpoints" / "checkpoint-2")
    assert f"started from: {run / 'checkpoints' / 'checkpoint-2'}" in (rl / "README.txt").read_text()
