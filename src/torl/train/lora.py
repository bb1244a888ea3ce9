"""LoRA through PEFT: the adapter config, the merged weights the rollout engine needs, a merged save.

- `lora_config(cfg)`: the `peft.LoraConfig` for `TorlConfig`'s lora_* fields (None when lora_r = 0,
  full fine-tuning). It goes to TRL's `GRPOTrainer` as `peft_config`; TRL wraps the model with
  `get_peft_model`, which swaps each targeted `nn.Linear` for a LoRA layer *in place*, so a
  `TransformersEngine` holding the original module generates with the adapter active.
- `weight_units(model)`: every tensor of a plain checkpoint of the policy and the parameters it
  is computed from. A LoRA layer's weight is W + (alpha / r) * B @ A, computed from the current
  tensors (never by merging into W and unmerging, which drifts W in bf16); `lora_A` / `lora_B`
  are consumed by it. `engines.full_weight_groups` gathers the units (ZeRO-3, FSDP) and names
  them for vLLM, which never sees an adapter.
- `save_merged_model(...)`: a plain transformers model directory (merged weights, base names).
  Trainer checkpoints of a LoRA run hold only the adapter (and its optimizer state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

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


@dataclasses.dataclass
class WeightUnit:
    """One checkpoint tensor: `name` (the model's own parameter name, wrappers and all), the parameters
    it is computed from, and `combine` (their full tensors -> the checkpoint tensor; None: the first as is)."""

    name: str
    params: list[torch.nn.Parameter]
    combine: Callable[[list[torch.Tensor]], torch.Tensor] | None = None

    def full(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The unit's tensor as a host copy, from the full (gathered) tensors of `params`."""
        out = tensors[0] if self.combine is None else self.combine(tensors)
        return out.detach().to("cpu", copy=True)


def weight_units(model) -> list[WeightUnit]:
    """The units of `model`'s parameters in `named_parameters()` order; plain parameters are units of one.

    Works on raw (sharded) parameters: it only reads names, modules and LoRA settings, never values.
    """
    named = list(model.named_parameters())
    layers = _lora_layers(model)
    if not layers:
        return [WeightUnit(name, [p]) for name, p in named]
    # By identity, not name: inside FSDP1's summon_full_params, named_parameters() drops the
    # wrapper parts that named_modules() keeps.
    merged = {id(layer.get_base_layer().weight): layer for layer in layers.values()}
    units = []
    for name, p in named:
        if id(p) in merged:
            units.append(_merged_unit(name, p, merged[id(p)]))
        elif ".lora_" not in name:  # adapter tensors live on only inside their layer's merged weight
            units.append(WeightUnit(name, [p]))
    return units


def _lora_layers(model) -> dict:
    """{module name: LoRA layer} for every PEFT tuner layer; refuses the kinds torl cannot merge."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, AuxiliaryTrainingWrapper):
            raise TypeError(f"{name}: PEFT's {type(module).__name__} (modules_to_save, trainable tokens) "
                             "is not supported by torl's weight sync and merged save")
        if not isinstance(module, BaseTunerLayer):
            continue
        if type(module) is not LoraLinear:
            raise TypeError(f"{name}: {type(module).__name__} adapters cannot be merged for the rollout engine; "
                             "torl merges LoRA on linear layers (lora_target_modules: all-linear or linear names)")
        if module.merged:
            raise ValueError(f"{name}: the adapter is merged into the base weight; unmerge_adapter() first")
        for adapter in _live_adapters(module):
            if adapter in module.lora_variant or module.lora_bias.get(adapter, False):
                raise ValueError(f"{name}: adapter {adapter!r} uses DoRA or lora_bias, which torl does not merge")
        layers[name] = module
    return layers


def _live_adapters(layer) -> list[str]:
    """The adapters the layer's forward applies right now (PEFT's own rule)."""
    if layer.disable_adapters:
        return []
    return [a for a in layer.active_adapters if a in layer.lora_A]


def _merged_unit(name: str, base_weight, layer) -> WeightUnit:
    adapters = _live_adapters(layer)
    scales = [layer.scaling[a] for a in adapters]
    transpose = layer.fan_in_fan_out

    def combine(tensors: list[torch.Tensor]) -> torch.Tensor:
        weight, pairs = tensors[0], tensors[1:]
        merged = weight.float()
        for scale, a, b in zip(scales, pairs[0::2], pairs[1::2]):
            delta = b.float() @ a.float()
            merged = merged + scale * (delta.T if transpose else delta)
        return merged.to(weight.dtype)

    params = [base_weight]
    for a in adapters:
        params += [layer.lora_A[a].weight, layer.lora_B[a].weight]
    return WeightUnit(name, params, combine)


def save_merged_model(trainer_or_model, tokenizer, path) -> Path:
    """Write a plain transformers model directory at `path`: merged weights under the base model's names.

    Loads with `AutoModelForCausalLM.from_pretrained(path)`, vLLM, `torl eval --model PATH`. A LoRA
    policy is saved merged (W + scale * B @ A); a fully fine-tuned one as it is. Given a trainer under
    ZeRO-3 / FSDP, call it on every process (gathering the weights is a collective); the main process
    writes. Returns `path`.
    """
    from huggingface_hub import save_torch_state_dict

    from torl.train.rollout_engine import full_weight_groups, hf_name, policy_module

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
