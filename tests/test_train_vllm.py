"""`torl train` with engine=vllm — the GPU recipes' rollout path — on vLLM's CPU build.

Runs only where vLLM imports (`.venv-vllm`, made by scripts/setup_vllm.sh; scripts/test.sh runs it):

    .venv-vllm/bin/python -m pytest tests/test_train_vllm.py

A tiny random Llama (SmolLM2's tokenizer) trains 2 GRPO steps with rollouts from a real vLLM
engine and the real sandbox. Before each step's rollouts the trainer's weights are pushed into
vLLM; the test records the trainer's weights at the start of each step and checks that vLLM ends
up sampling from exactly the last ones — its logprobs match what transformers computes with them,
and not with the initial weights (the sync really happened). With LoRA, vLLM gets the merged
adapter under the base model's names and samples what the PeftModel computes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import torch
from conftest import save_tiny_llama, tiny_recipe
from transformers import TrainerCallback

from torl.engines.base import SamplingParams
from torl.train.config import parse_train_args, validate
from torl.train.run_dir import RunDir
from torl.train.trainer import _point_trl_at_run_dir

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    # head_dim 64: a size vLLM's CPU attention kernels support
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), hidden_size=128, heads=2, kv_heads=1)


class RecordStepStartWeights(TrainerCallback):
    """The trainer's weights as each step starts: what that step's rollouts must be sampled from."""

    def __init__(self):
        self.per_step: list[dict[str, torch.Tensor]] = []
        self.trainer = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.per_step.append({k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()})


def sequence_logprobs(model_dir: Path, weights: dict, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Per-token logprobs of `tokens` after `prompt` under `weights`, computed by transformers."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.load_state_dict(weights)
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits.double(), dim=-1).gather(1, torch.tensor(tokens)[:, None])[:, 0]


def test_two_grpo_steps_with_vllm_rollouts_keep_vllm_in_sync(tmp_path, tiny_model_dir, monkeypatch):
    from torl.train.rewards import TorlReward
    from torl.train.session import TrainingSession

    # A random model earns -1 everywhere: zero advantages, no update. Spread the rewards within
    # each group so the step really changes the weights (the sync is what is under test).
    scored = TorlReward.__call__

    def spread(self, *args, **kwargs):
        return [r + (i % 2) for i, r in enumerate(scored(self, *args, **kwargs))]

    monkeypatch.setattr(TorlReward, "__call__", spread)

    recipe = tiny_recipe(tmp_path, tiny_model_dir, name="tiny-vllm.yaml", engine="vllm", sandbox_workers=2,
                         train_tasks=["arithmetic"], train_task_count=12, eval_before_after=False,
                         gradient_checkpointing=False, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                         save_steps=100)
    torl_cfg, grpo_cfg = parse_train_args(["--config", str(recipe)])
    validate(torl_cfg, grpo_cfg)  # engine=vllm without a GPU is accepted: this vLLM is the CPU build
    run = RunDir(torl_cfg.run_dir)
    run.prepare(False)
    _point_trl_at_run_dir(grpo_cfg, run)  # what `torl train` does: checkpoints, logging every step
    recorder = RecordStepStartWeights()
    with TrainingSession(torl_cfg, grpo_cfg, run) as session:
        assert type(session.engine).__name__ == "VLLMEngine" and session.sync_weights
        recorder.trainer = session.trainer
        session.trainer.add_callback(recorder)
        assert session.train(None) == "finished"
        # What vLLM holds now, seen through its own sampling: greedy tokens and their logprobs.
        prompt = session.template.encode("Compute $123 \\times 45$.", session.engine.tokenizer)
        greedy = SamplingParams(max_tokens=12, temperature=0.0, logprobs=True)
        out = session.loop.run(session.engine.generate(prompt, greedy))

    assert len(recorder.per_step) == 2
    initial, last = recorder.per_step
    assert any(not torch.equal(initial[k], last[k]) for k in last), "training did not move the weights"
    in_vllm = torch.tensor(out.logprobs, dtype=torch.float64)
    under_last = sequence_logprobs(tiny_model_dir, last, prompt, out.token_ids)
    under_initial = sequence_logprobs(tiny_model_dir, initial, prompt, out.token_ids)
    # vLLM's logprobs are those of the weights the last step started from, not the initial ones.
    assert torch.allclose(in_vllm, under_last, atol=1e-3), (in_vllm - under_last, in_vllm - under_initial)
    assert (in_vllm - under_initial).abs().max() > 10 * (in_vllm - under_last).abs().max()

    rows = [json.loads(line) for line in (run.metrics).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert all(r["tools/sandbox_errors"] == 0 for r in rows)
    assert all(r["lengths/model_tokens"] > 0 for r in rows)  # vLLM really generated the completions
    dumps = sorted(run.samples.glob("step_*.jsonl"))
    assert len(dumps) == 2


def test_lora_training_pushes_the_merged_adapter_into_vllm(tmp_path, tiny_model_dir, monkeypatch):
    """engine=vllm with LoRA: vLLM gets W + scale * B @ A under the base names and samples from it."""
    from peft import PeftModel

    from torl.train.rewards import TorlReward
    from torl.train.session import TrainingSession
    from torl.train.weight_sync import push_weights

    scored = TorlReward.__call__
    monkeypatch.setattr(TorlReward, "__call__",
                        lambda self, *a, **k: [r + (i % 2) for i, r in enumerate(scored(self, *a, **k))])
    recipe = tiny_recipe(tmp_path, tiny_model_dir, name="tiny-vllm-lora.yaml", engine="vllm", max_tool_calls=0,
                         sandbox_workers=None, train_tasks=["arithmetic"], train_task_count=12, lora_r=4, lora_alpha=8,
                         gradient_checkpointing=False, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                         max_response_tokens=24, save_steps=100, report_to=[])
    torl_cfg, grpo_cfg = parse_train_args(["--config", str(recipe)])
    validate(torl_cfg, grpo_cfg)
    run = RunDir(torl_cfg.run_dir)
    run.prepare(False)
    _point_trl_at_run_dir(grpo_cfg, run)
    with TrainingSession(torl_cfg, grpo_cfg, run) as session:
        policy = session.trainer.model
        assert isinstance(policy, PeftModel)
        assert session.train(None) == "finished"  # every step's rollouts came after a merged push
        # A deterministic, clearly non-zero adapter (B starts at 0, and 2 steps move it little).
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        push_weights(session.trainer, session.engine, session.loop)
        prompt = session.template.encode("Compute $123 \\times 45$.", session.engine.tokenizer)
        greedy = SamplingParams(max_tokens=12, temperature=0.0, logprobs=True)
        out = session.loop.run(session.engine.generate(prompt, greedy))
        policy.eval()
        ids, tokens = torch.tensor([prompt + out.token_ids]), torch.tensor(out.token_ids)[:, None]
        with torch.no_grad():
            merged = policy(ids).logits[0, len(prompt) - 1 : -1]
            with policy.disable_adapter():
                base = policy(ids).logits[0, len(prompt) - 1 : -1]
    in_vllm = torch.tensor(out.logprobs, dtype=torch.float64)
    under_merged = torch.log_softmax(merged.double(), -1).gather(1, tokens)[:, 0]
    under_base = torch.log_softmax(base.double(), -1).gather(1, tokens)[:, 0]
    assert torch.allclose(in_vllm, under_merged, atol=1e-3), (in_vllm - under_merged, in_vllm - under_base)
    assert (in_vllm - under_base).abs().max() > 10 * (in_vllm - under_merged).abs().max()
