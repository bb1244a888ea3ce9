"""Which rollout engine a training run uses, built on this process's GPU.

- CPU (engine=transformers, or auto without a GPU): `TransformersEngine` wraps the *same*
  `nn.Module` GRPOTrainer optimizes, so every rollout is on-policy with no weight copy.
- GPU (engine=vllm, or auto with a GPU): torl's `VLLMEngine` (vLLM's async engine), one per
  process on its own GPU, refreshed with the trainer's weights before each step's rollouts
  (`torl.train.weight_sync`).
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
