"""Which rollout engine a training run uses, and how the trainer's weights reach it.

- CPU (engine=transformers, or auto without a GPU): `TransformersEngine` wraps the *same*
  `nn.Module` GRPOTrainer optimizes, so every rollout is on-policy with no weight copy.
- GPU (engine=vllm, or auto with a GPU): torl's `VLLMEngine` (vLLM's async engine), one per
  process on its own GPU, refreshed with the trainer's weights before each step's rollouts.
  engine=vllm also runs on CPU where vLLM's CPU build is installed (how the path is tested here).
  Why not TRL's `use_vllm`: its colocate mode drives a synchronous `LLM.generate` over the whole
  batch, so a multi-turn rollout would advance in lock-step turns; the async engine batches each
  trajectory's turns continuously, and it is the same engine `torl eval` uses.
"""

from __future__ import annotations

import contextlib
import os

import torch

from torl.errors import UserError


def choose_engine(name: str) -> str:
    """Resolve engine=auto to the backend this machine can run."""
    if name == "auto":
        return "vllm" if torch.cuda.is_available() else "transformers"
    return name


def build_engine(kind: str, model, tokenizer, model_path: str, grpo_cfg):
    """Return `(engine, sync_weights)` for the run."""
    if kind == "transformers":
        from torl.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, tokenizer=tokenizer, seed=grpo_cfg.seed), False
    if kind == "vllm":
        try:
            from torl.engines.vllm_engine import VLLMEngine
        except ImportError as e:
            raise UserError(f"engine=vllm needs vLLM installed ({e}); pip install vllm") from None
        gpu = torch.cuda.is_available()
        with _only_this_ranks_gpu():
            engine = VLLMEngine(
                model_path,
                tokenizer=tokenizer,
                dtype="bfloat16" if grpo_cfg.bf16 else "float32",  # the trainer's precision
                gpu_memory_utilization=grpo_cfg.vllm_gpu_memory_utilization if gpu else None,
                max_model_len=grpo_cfg.vllm_max_model_length,
                seed=grpo_cfg.seed,
            )
        return engine, True
    raise UserError(f"unknown engine {kind!r}")


def rank_gpu(local_rank: int, local_world_size: int, visible: str | None, device_count: int) -> str | None:
    """The CUDA_VISIBLE_DEVICES entry of this process's GPU, or None when nothing needs pinning.

    vLLM's engine process always takes "cuda:0" of what it can see; with one trainer process per
    GPU, each process's engine must see only that process's GPU, or all of them land on GPU 0.
    """
    if local_world_size <= 1:
        return None
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(device_count)]
    if local_world_size > len(devices):
        raise UserError(f"{local_world_size} processes on this node but only {len(devices)} visible GPUs "
                        "(one process per GPU: each runs its own vLLM engine)")
    return devices[local_rank]


@contextlib.contextmanager
def _only_this_ranks_gpu():
    """While vLLM spawns its engine process, make CUDA_VISIBLE_DEVICES name only this rank's GPU.

    The trainer's own CUDA context is already up, so only the child process sees the change.
    """
    if not torch.cuda.is_available():
        yield
        return
    pinned = rank_gpu(int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                      os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    if pinned is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = pinned
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


GATHER_GROUP_BYTES = 512 << 20  # full tensors held on the accelerator at once while gathering


def push_weights(trainer, engine, loop) -> None:
    """Copy the trainer's current policy weights into the engine (vLLM); every process feeds its own.

    Sharded training (ZeRO-3, FSDP) gathers the full tensors group by group on this (the trainer's)
    thread — gathers are collectives every rank joins in the same order — copies each group to the
    host and stages it in the engine; the engine loads everything at the end. A LoRA policy is
    pushed merged, under the base model's names (`torl.train.lora.weight_units`).
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
    from torl.train.lora import weight_units

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
