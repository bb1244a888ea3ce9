"""GRPO training with tool-integrated rollouts: TRL's GRPOTrainer + torl's rollout function.

    torl train --config configs/demo-cpu.yaml [--setting value ...] [--resume]

Modules, top down: `commands` (`torl train`) -> `trainer` (`run_training`: a run from start to
summary) -> `session` (the live objects of one run, built, trained, evaluated). What it builds:
`config` (TorlConfig + TRL's GRPOConfig, validation), `data` (questions), `run_dir` (the run
directory), `rollout_engine` (which engine), `rollout` (the TRL `rollout_func` bridge to `torl.tir`,
dynamic sampling), `rewards` (the reward function: scores only), `update/` (the policy update:
`ToolGRPOTrainer` and its parts), `step_record` (what a step records and logs: its pieces' reports,
step metrics into TRL's log, sample dumps, metrics.jsonl; names in torl/metrics/METRICS.md), `watch` (health
alarms), `console` (the line per step), `stopping` (time budget, Ctrl-C), `weight_sync` (trainer
weights into the engine, LoRA merged), `lora` (PEFT config, merged save), `heldout` (before/after
greedy check), `ranks` (which process).
"""

from torl.train.config import TorlConfig, parse_train_args, validate

__all__ = ["TorlConfig", "parse_train_args", "validate"]
