"""Which rollout engine a training run uses, and how the trainer's weights reach it.

- CPU (engine=transformers, or auto without a GPU): `TransformersEngine` wraps the *same*
  `nn.Module` GRPOTrainer optimizes, so every rollout is on-policy with no weight copy.
- GPU (engine=vllm, or auto with a GPU): torl's `VLLMEngine` (vLLM's async engine), one per
  process on its own GPU, refreshed with `load_weights` before each step's rollouts.
  Why not TRL's `use_vllm`: its colocate mode drives a synchronous `LLM.generate` over the whole
  batch, so a multi-turn rollout would advance in lock-step turns; the async engine batches each
  trajectory's turns continuously, and it is the same engine `torl eval` uses.
"""

from __future__ import annotations

import contextlib

import torch

from torl.cli import UserError


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
        engine = VLLMEngine(
            model_path,
            tokenizer=tokenizer,
            gpu_memory_utilization=grpo_cfg.vllm_gpu_memory_utilization,
            max_model_len=grpo_cfg.vllm_max_model_length,
            seed=grpo_cfg.seed,
        )
        return engine, True
    raise UserError(f"unknown engine {kind!r}")


def push_weights(trainer, engine, loop) -> None:
    """Copy the trainer's current policy weights into the engine (vLLM); every process drives its own.

    Sharded training gathers full tensors first: ZeRO-3 per parameter group, FSDP via accelerate's
    full state dict. (Written for GPU nodes; the CPU path never calls this.)
    """
    accelerator = trainer.accelerator
    if getattr(accelerator.state, "fsdp_plugin", None) is not None:
        state = accelerator.get_state_dict(trainer.model)
        loop.run(engine.load_weights(state.items()))
        return
    model = accelerator.unwrap_model(trainer.model)
    with _gathered(accelerator, model):
        loop.run(engine.load_weights((name, p.data) for name, p in model.named_parameters()))


@contextlib.contextmanager
def _gathered(accelerator, model):
    """Under DeepSpeed ZeRO-3 parameters are sharded: gather full tensors for the copy."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield
