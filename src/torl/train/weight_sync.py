"""How the trainer's current policy weights reach the rollout engine (vLLM), under any sharding.

- `push_weights(trainer, engine, loop)`: gathers and stages the full weights in the engine, group by
  group, then loads them; every process feeds its own engine (`torl.train.rollout_engine`).
- `full_weight_groups(model, zero3=...)`: the full tensors of a plain checkpoint of the policy, in
  groups of about `GATHER_GROUP_BYTES` (plain, DDP, ZeRO-1/2/3, FSDP1, FSDP2), named as in the base
  checkpoint (`hf_name`). `torl.train.lora.save_merged_model` writes the same tensors to disk.
- `weight_units(model)`: every tensor of a plain checkpoint and the parameters it is computed from.
  A LoRA layer's weight is W + (alpha / r) * B @ A, computed from the current tensors (never by
  merging into W and unmerging, which drifts W in bf16); `lora_A` / `lora_B` are consumed by it, so
  vLLM never sees an adapter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

GATHER_GROUP_BYTES = 512 << 20  # full tensors held on the accelerator at once while gathering


def push_weights(trainer, engine, loop) -> None:
    """Copy the trainer's current policy weights into the engine (vLLM); every process feeds its own.

    Sharded training (ZeRO-3, FSDP) gathers the full tensors group by group on this (the trainer's)
    thread — gathers are collectives every rank joins in the same order — copies each group to the
    host and stages it in the engine; the engine loads everything at the end. A LoRA policy is
    pushed merged, under the base model's names (`weight_units`).
    """
    loop.run(engine.begin_weight_update())
    try:
        model, zero3 = policy_module(trainer)
        for group in full_weight_groups(model, zero3=zero3):
            loop.run(engine.stage_weights(group))
    except BaseException:
        loop.run(engine.finish_weight_update(commit=False))
        raise
    loop.run(engine.finish_weight_update())


def policy_module(trainer):
    """`(the trainer's policy module without DDP/DeepSpeed wrappers, whether ZeRO-3 shards it)`."""
    accelerator = trainer.accelerator
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return accelerator.unwrap_model(trainer.model), plugin is not None and plugin.zero_stage == 3


def full_weight_groups(model, *, zero3: bool = False, group_bytes: int = GATHER_GROUP_BYTES):
    """Yield lists of (HF name, full host tensor) covering every tensor of a plain checkpoint of the policy.

    Plain / DDP / ZeRO-1/2 parameters are whole already. ZeRO-3: `GatheredParameters` per group
    of about `group_bytes`. FSDP2: `DTensor.full_tensor()` per parameter. FSDP1: the whole model is
    summoned at once (its only full-parameter view for every rank). A LoRA layer's weight is
    merged from its gathered base weight and adapter (`weight_units`).
    """
    if zero3:
        import deepspeed

        units = weight_units(model)
        for part in _by_size(units, group_bytes, size=lambda p: p.ds_numel * p.element_size()):
            with deepspeed.zero.GatheredParameters([p for u in part for p in u.params], modifier_rank=None):
                yield [(hf_name(u.name), u.full([p.data for p in u.params])) for u in part]
        return
    if _is_fsdp1(model):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False, rank0_only=False):
            units = weight_units(model)  # inside: the original parameters, full
            for part in _by_size(units, group_bytes, size=lambda p: p.numel() * p.element_size()):
                yield [(hf_name(u.name), u.full(u.params)) for u in part]
        return
    from torch.distributed.tensor import DTensor

    units = weight_units(model)
    for part in _by_size(units, group_bytes, size=lambda p: p.numel() * p.element_size()):
        yield [(hf_name(u.name), u.full([p.full_tensor() if isinstance(p, DTensor) else p for p in u.params]))
               for u in part]


# FSDP1 and activation checkpointing wrap submodules, which inserts these into parameter names
# (anywhere in the path); checkpoint names have none of them.
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
# PEFT's wrapping: PeftModel -> LoraModel -> the model ("base_model.model." in front), and each
# adapted layer keeps the original module as `base_layer`.
_PEFT_PREFIX, _PEFT_BASE_LAYER = "base_model.model.", ".base_layer."


def hf_name(name: str) -> str:
    """The checkpoint name of a trainer parameter: sharding, checkpointing and PEFT wrappers removed."""
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name.removeprefix(_PEFT_PREFIX).replace(_PEFT_BASE_LAYER, ".")


def _is_fsdp1(model) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return isinstance(model, FSDP) or any(isinstance(m, FSDP) for m in model.modules())


def _by_size(units, limit: int, size):
    """Consecutive runs of units whose parameters reach about `limit` bytes (`size(parameter)`)."""
    part, total = [], 0
    for unit in units:
        part.append(unit)
        total += sum(size(p) for p in unit.params)
        if total >= limit:
            yield part
            part, total = [], 0
    if part:
        yield part


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
