"""LoRA through PEFT: the adapter config and a merged save.

- `lora_config(cfg)`: the `peft.LoraConfig` for `TorlConfig`'s lora_* fields (None when lora_r = 0,
  full fine-tuning). It goes to TRL's `GRPOTrainer` as `peft_config`; TRL wraps the model with
  `get_peft_model`, which swaps each targeted `nn.Linear` for a LoRA layer *in place*, so a
  `TransformersEngine` holding the original module generates with the adapter active.
- `save_merged_model(...)`: a plain transformers model directory (merged weights, base names),
  from the same gathered, merged tensors the rollout engine receives (`torl.train.weight_sync`).
  Trainer checkpoints of a LoRA run hold only the adapter (and its optimizer state).
"""

from __future__ import annotations

from pathlib import Path

ALL_LINEAR = "all-linear"  # PEFT's shorthand: every linear layer but the output head


def lora_config(cfg):
    """The `peft.LoraConfig` for a `TorlConfig`, or None for full fine-tuning (lora_r = 0)."""
    if cfg.lora_r == 0:
        return None
    from peft import LoraConfig

    targets = list(cfg.lora_target_modules)
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else targets,  # PEFT wants the shorthand as a str
        bias="none",
    )


def save_merged_model(trainer_or_model, tokenizer, path) -> Path:
    """Write a plain transformers model directory at `path`: merged weights under the base model's names.

    Loads with `AutoModelForCausalLM.from_pretrained(path)`, vLLM, `torl eval --model PATH`. A LoRA
    policy is saved merged (W + scale * B @ A); a fully fine-tuned one as it is. Given a trainer under
    ZeRO-3 / FSDP, call it on every process (gathering the weights is a collective); the main process
    writes. Returns `path`.
    """
    from huggingface_hub import save_torch_state_dict

    from torl.train.weight_sync import full_weight_groups, hf_name, policy_module

    if hasattr(trainer_or_model, "accelerator"):
        model, zero3 = policy_module(trainer_or_model)
        main = trainer_or_model.accelerator.is_main_process
    else:
        model, zero3, main = trainer_or_model, False, True
    state = {}
    for group in full_weight_groups(model, zero3=zero3):
        if main:
            state.update(group)
    if not main:
        return Path(path)
    for name, buffer in _persistent_buffers(model):  # e.g. fixed position tables; never sharded
        state.setdefault(hf_name(name), buffer.detach().to("cpu", copy=True))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, path)  # sharded like save_pretrained, tied tensors stored once
    model.config.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _persistent_buffers(model):
    for prefix, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buffer
