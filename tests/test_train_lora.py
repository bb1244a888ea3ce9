"""LoRA through PEFT: settings, merged weights for the rollout engine, adapter checkpoints, the merged save.

A tiny random Llama (SmolLM2's tokenizer) trains 2 GRPO steps with a LoRA adapter and the
transformers engine; the adapter moves, the base weights do not, checkpoints hold the adapter only,
the engine samples with the adapter active, and the merged model saves, reloads and computes what
the PeftModel computes. The engine=vllm path is in tests/test_train_vllm.py (it needs .venv-vllm).
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_recipe

from torl.errors import UserError
from torl.train.config import parse_train_args, validate
from torl.train.lora import lora_config, save_merged_model
from torl.train.weight_sync import full_weight_groups

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo-cpu.yaml"


def _lora(r=4, alpha=8.0, dropout=0.0, targets=("all-linear",)):
    return SimpleNamespace(lora_r=r, lora_alpha=alpha, lora_dropout=dropout, lora_target_modules=list(targets))


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def nonzero_adapter(peft_model, seed: int = 1) -> None:
    """LoRA starts with B = 0 (the adapter is a no-op); give it deterministic non-zero values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


def sequence_logprobs(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Per-token logprobs of `tokens` after `prompt` under `model` (eval mode)."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits.double(), dim=-1).gather(1, torch.tensor(tokens)[:, None])[:, 0]


# --- settings


def _valid(tmp_path, **changes):
    torl_cfg, grpo_cfg = parse_train_args(["--config", str(DEMO), "--run_dir", str(tmp_path / "run")])
    for key, value in changes.items():
        setattr(torl_cfg, key, value)
    return torl_cfg, grpo_cfg


def test_lora_settings_parse_from_the_command_line(tmp_path):
    torl_cfg, _ = parse_train_args(["--config", str(DEMO), "--lora_r", "16", "--lora_target_modules", "q_proj",
                                    "v_proj"])
    assert torl_cfg.lora_r == 16 and torl_cfg.lora_target_modules == ["q_proj", "v_proj"]
    default, _ = parse_train_args(["--config", str(DEMO)])
    assert default.lora_r == 0 and default.lora_target_modules == ["all-linear"]
    validate(*_valid(tmp_path, lora_r=16))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lora_r": -1}, "lora_r must be >= 0"),
        ({"lora_r": 8, "lora_alpha": 0.0}, "lora_alpha must be > 0"),
        ({"lora_r": 8, "lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
        ({"lora_r": 8, "lora_target_modules": []}, "lora_target_modules must name modules"),
        ({"lora_r": 8, "lora_target_modules": ["all-linear", "q_proj"]}, "all-linear already means every linear"),
    ],
)
def test_bad_lora_settings_are_one_clear_line(tmp_path, changes, message):
    with pytest.raises(UserError, match=message) as info:
        validate(*_valid(tmp_path, **changes))
    assert "\n" not in str(info.value)


def test_lora_config_from_settings():
    assert lora_config(_lora(r=0)) is None  # full fine-tuning: no adapter
    config = lora_config(_lora(r=8, alpha=16.0, dropout=0.05))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16.0, 0.05)
    assert config.target_modules == "all-linear" and config.task_type == "CAUSAL_LM"
    assert lora_config(_lora(targets=("q_proj", "v_proj"))).target_modules == {"q_proj", "v_proj"}


# --- merged weights under base names


def test_weight_groups_of_a_lora_model_are_the_merged_base_model():
    from peft import get_peft_model

    base = tiny_llama()
    peft_model = get_peft_model(copy.deepcopy(base), lora_config(_lora()))
    nonzero_adapter(peft_model)
    groups = list(full_weight_groups(peft_model, group_bytes=5_000))
    got = dict(kv for group in groups for kv in group)
    assert len(groups) > 3  # still gathered group by group
    assert list(got) == [name for name, _ in base.named_parameters()]  # base names, base order, no lora_A/B
    merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    for name, tensor in got.items():
        assert torch.allclose(tensor, merged[name], atol=1e-6), name
    assert not torch.equal(got["model.layers.0.self_attn.q_proj.weight"],
                           base.state_dict()["model.layers.0.self_attn.q_proj.weight"])  # the adapter counts
    with peft_model.disable_adapter():  # what the forward runs with adapters off: the base weights
        off = dict(kv for group in full_weight_groups(peft_model) for kv in group)
    assert all(torch.equal(off[n], p) for n, p in base.named_parameters())


def test_full_fine_tuning_saves_the_model_as_it_is(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from torl.engines.models import resolve_model

    model = tiny_llama()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    save_merged_model(model, tokenizer, tmp_path / "full")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert (tmp_path / "full" / "tokenizer.json").exists()


# --- two GRPO steps with an adapter, transformers engine


def _lora_run(tmp_path, model_dir, *, max_steps=2, save_steps=2, resume=False):
    """Settings and run directory of a 2-step LoRA run of the tiny model with the transformers engine."""
    from torl.train.run_dir import RunDir
    from torl.train.trainer import _point_trl_at_run_dir

    recipe = tiny_recipe(tmp_path, model_dir, name="tiny-lora.yaml", engine="transformers", max_tool_calls=0,
                         sandbox_workers=None, train_tasks=["arithmetic"], train_task_count=12, lora_r=4, lora_alpha=8,
                         gradient_checkpointing=False, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                         max_response_tokens=24, max_steps=max_steps, save_steps=save_steps, report_to=[])
    torl_cfg, grpo_cfg = parse_train_args(["--config", str(recipe)])
    validate(torl_cfg, grpo_cfg)
    run = RunDir(torl_cfg.run_dir)
    _point_trl_at_run_dir(grpo_cfg, run)
    return torl_cfg, grpo_cfg, run


@pytest.fixture
def spread_rewards(monkeypatch):
    """A random model earns -1 everywhere: zero advantages, no update. Spread the rewards within
    each group so the steps really move the adapter."""
    from torl.train.rewards import TorlReward

    scored = TorlReward.__call__
    monkeypatch.setattr(TorlReward, "__call__",
                        lambda self, *a, **k: [r + (i % 2) for i, r in enumerate(scored(self, *a, **k))])


@pytest.mark.slow
def test_lora_trains_the_adapter_only_and_saves_small_checkpoints_and_a_merged_model(
        tmp_path, tiny_model_dir, spread_rewards):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from torl.engines.base import SamplingParams
    from torl.train.session import TrainingSession

    torl_cfg, grpo_cfg, run = _lora_run(tmp_path, tiny_model_dir, save_steps=2)
    run.prepare(False)
    with TrainingSession(torl_cfg, grpo_cfg, run) as session:
        policy = session.trainer.model
        assert isinstance(policy, PeftModel)
        before = {n: p.detach().clone() for n, p in policy.named_parameters()}
        assert session.train(None) == "finished"
        after = {n: p.detach().clone() for n, p in policy.named_parameters()}
        trainable = {n for n, p in policy.named_parameters() if p.requires_grad}

        # The adapter moved; nothing else is trainable, and nothing else moved.
        assert trainable and all(".lora_" in n for n in trainable)
        assert any(not torch.equal(before[n], after[n]) for n in trainable if "lora_B" in n)
        assert all(torch.equal(before[n], after[n]) for n in after if n not in trainable)

        # The engine (sharing the module TRL wrapped in place) samples with the adapter active:
        # its token-in/token-out logprobs are the PeftModel's, not the base model's.
        nonzero_adapter(policy)
        tokenizer = session.engine.tokenizer
        prompt = session.template.encode("Compute $123 \\times 45$.", tokenizer)
        greedy = SamplingParams(max_tokens=8, temperature=0.0, logprobs=True)
        out = session.loop.run(session.engine.generate(prompt, greedy))
        in_engine = torch.tensor(out.logprobs, dtype=torch.float64)
        with_adapter = sequence_logprobs(policy, prompt, out.token_ids)
        with policy.disable_adapter():
            without = sequence_logprobs(policy, prompt, out.token_ids)
        assert torch.allclose(in_engine, with_adapter, atol=1e-4), in_engine - with_adapter
        assert (in_engine - without).abs().max() > 1e-2

        # The merged model: a plain checkpoint that computes what the PeftModel computes.
        merged_dir = save_merged_model(session.trainer, tokenizer, tmp_path / "merged")
        ids = torch.tensor([prompt])
        with torch.no_grad():
            expected = policy(ids).logits
    reloaded = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert reloaded.state_dict().keys() == base.state_dict().keys()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-4)

    # A checkpoint holds the adapter (and its optimizer state), not the model.
    checkpoint = run.root / "checkpoints" / "checkpoint-2"
    assert not (checkpoint / "model.safetensors").exists()
    adapter = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    full_bytes = (tiny_model_dir / "model.safetensors").stat().st_size
    assert (checkpoint / "adapter_model.safetensors").stat().st_size < full_bytes / 4
    assert (checkpoint / "optimizer.pt").stat().st_size < full_bytes / 2


@pytest.mark.slow
def test_resuming_a_lora_run_continues_from_the_checkpointed_adapter(tmp_path, tiny_model_dir, spread_rewards):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from torl.train.session import TrainingSession

    torl_cfg, grpo_cfg, run = _lora_run(tmp_path, tiny_model_dir, max_steps=1, save_steps=1)
    run.prepare(False)
    with TrainingSession(torl_cfg, grpo_cfg, run) as session:
        assert session.train(None) == "finished"
    saved = load_file(str(run.root / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors"))
    assert any(t.abs().max() > 0 for k, t in saved.items() if "lora_B" in k)  # the step moved B off zero

    class AdapterAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.adapter = {k: v.detach().clone() for k, v in model.named_parameters() if ".lora_" in k}

    torl_cfg, grpo_cfg, run = _lora_run(tmp_path, tiny_model_dir, max_steps=2, save_steps=1)
    checkpoint = run.prepare(True)
    start = AdapterAtStart()
    with TrainingSession(torl_cfg, grpo_cfg, run) as session:
        session.trainer.add_callback(start)
        assert session.train(checkpoint) == "finished"
    # PEFT saves "...q_proj.lora_A.weight" for the live "...q_proj.lora_A.default.weight"
    assert len(start.adapter) == len(saved)
    for name, tensor in start.adapter.items():
        assert torch.equal(tensor, saved[name.replace(".default.", ".")]), name
    assert (run.root / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").exists()
