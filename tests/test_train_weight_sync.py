"""How the trainer's weights reach a vLLM engine on GPU nodes, checked on CPU.

Sharded training keeps only a slice of each parameter per process; every process still needs the
full tensors for its own engine. FSDP1 and FSDP2 run here for real (2 processes, gloo); what each
process gathers must equal the unsharded model, parameter for parameter, under checkpoint names.
DeepSpeed ZeRO-3 runs the same way on its CPU accelerator.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from torl.cli import UserError
from torl.train.rollout_engine import rank_gpu
from torl.train.weight_sync import full_weight_groups, hf_name, push_weights


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def tiny_policy(kind: str):
    """The tiny Llama, or ("...-lora") the same with a LoRA adapter on every linear layer, B non-zero."""
    model = tiny_llama()
    if not kind.endswith("-lora"):
        return model
    from types import SimpleNamespace

    from peft import get_peft_model

    from torl.train.lora import lora_config

    settings = SimpleNamespace(lora_r=4, lora_alpha=8.0, lora_dropout=0.0, lora_target_modules=["all-linear"])
    model = get_peft_model(model, lora_config(settings))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator))
    return model


# --- which GPU each process's engine sees


@pytest.mark.parametrize(
    ("local_rank", "world", "visible", "count", "expected"),
    [
        (0, 1, None, 8, None),          # one process: vLLM may take cuda:0 as usual
        (3, 8, None, 8, "3"),
        (1, 4, "4,5,6,7", 8, "5"),      # a restricted node: the rank indexes the visible list
        (0, 2, " 2, 7 ", 8, "2"),
    ],
)
def test_each_process_engine_gets_its_own_gpu(local_rank, world, visible, count, expected):
    assert rank_gpu(local_rank, world, visible, count) == expected


def test_more_processes_than_gpus_is_a_clear_error():
    with pytest.raises(UserError, match="4 processes on this node but only 2 visible GPUs"):
        rank_gpu(3, 4, "0,1", 8)


# --- names and groups


def test_wrapper_parts_are_removed_from_names():
    assert hf_name("_fsdp_wrapped_module.model.layers.0._fsdp_wrapped_module._checkpoint_wrapped_module."
                   "self_attn.q_proj.weight") == "model.layers.0.self_attn.q_proj.weight"
    assert hf_name("model.submodule.weight") == "model.submodule.weight"


def test_unsharded_groups_cover_every_parameter_once_as_host_copies():
    model = tiny_llama()
    groups = list(full_weight_groups(model, group_bytes=10_000))
    names = [name for group in groups for name, _ in group]
    assert names == [name for name, _ in model.named_parameters()]
    assert len(groups) > 5  # bounded groups, not one gather of everything
    for group in groups[:-1]:
        # a group closes as soon as it reaches the bound: without its last tensor it is below it
        assert sum(t.numel() * t.element_size() for _, t in group[:-1]) < 10_000
    first_name, first = groups[0][0]
    first.add_(1.0)  # a copy: writing it must not touch the model
    assert not torch.equal(first, dict(model.named_parameters())[first_name])


# --- push_weights drives the engine's staged update


class RecordingEngine:
    """Records a staged weight update the way VLLMEngine receives one."""

    def __init__(self, fail_on_stage: int | None = None):
        self.calls, self.staged, self.fail_on_stage = [], [], fail_on_stage

    async def begin_weight_update(self):
        self.calls.append("begin")

    async def stage_weights(self, named):
        if self.fail_on_stage is not None and len(self.staged) == self.fail_on_stage:
            raise RuntimeError("engine died")
        self.staged.append(list(named))
        self.calls.append("stage")

    async def finish_weight_update(self, *, commit=True):
        self.calls.append("commit" if commit else "abort")


class FakeTrainer:
    def __init__(self, model):
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=True)
        self.model = model


def test_push_weights_stages_all_then_commits_and_aborts_on_failure():
    from torl.background_loop import BackgroundLoop

    model = tiny_llama()
    loop = BackgroundLoop("test-push")
    try:
        engine = RecordingEngine()
        push_weights(FakeTrainer(model), engine, loop)
        assert engine.calls[0] == "begin" and engine.calls[-1] == "commit"
        pushed = dict(kv for group in engine.staged for kv in group)
        assert set(pushed) == {name for name, _ in model.named_parameters()}
        assert all(torch.equal(pushed[n], p) for n, p in model.named_parameters())

        broken = RecordingEngine(fail_on_stage=0)
        with pytest.raises(RuntimeError, match="engine died"):
            push_weights(FakeTrainer(model), broken, loop)
        assert broken.calls == ["begin", "abort"]  # generation is resumed, nothing half-loaded
    finally:
        loop.close()


# --- sharded for real: 2 processes on CPU (gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_in_rank(rank: int, world: int, port: int, kind: str, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), DS_ACCELERATOR="cpu")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = tiny_policy(kind)
        if kind.startswith("zero3"):
            import deepspeed

            config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
                      "optimizer": {"type": "SGD", "params": {"lr": 0.1}}, "zero_allow_untested_optimizer": True}
            engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
            model = engine.module
            assert next(model.parameters()).numel() == 0  # really partitioned: the full tensor is gone
        elif kind.startswith("fsdp2"):
            from torch.distributed.fsdp import fully_shard

            llama = model.get_base_model() if kind.endswith("-lora") else model
            for layer in llama.model.layers:
                fully_shard(layer)
            fully_shard(model)
            assert next(model.parameters()).to_local().shape[0] < 128  # really sharded
        else:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            model = FSDP(model, device_id=torch.device("cpu"), use_orig_params=kind.startswith("fsdp1-orig"))
        groups = full_weight_groups(model, zero3=kind.startswith("zero3"), group_bytes=20_000)
        gathered = dict(kv for group in groups for kv in group)
        torch.save(gathered, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


# "-lora": a PeftModel, gathered merged (W + scale * B @ A) under the base model's names
@pytest.mark.parametrize("kind", ["zero3", "fsdp2", "fsdp1", "fsdp1-orig", "zero3-lora", "fsdp2-lora",
                                  "fsdp1-orig-lora"])
def test_every_rank_gathers_the_full_unsharded_weights(kind, tmp_path):
    if kind.startswith("zero3"):
        pytest.importorskip("deepspeed")  # a dev dependency; `pip install deepspeed` where it is missing
    world = 2
    mp.spawn(_gather_in_rank, args=(world, _free_port(), kind, str(tmp_path)), nprocs=world, join=True)
    policy = tiny_policy(kind)
    expected = dict((policy.merge_and_unload() if kind.endswith("-lora") else policy).named_parameters())
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got) == set(expected), f"rank {rank}: names differ: {sorted(set(got) ^ set(expected))[:5]}"
        for name, tensor in expected.items():
            assert got[name].shape == tensor.shape, (rank, name)
            assert torch.equal(got[name], tensor.detach()), (rank, name)
