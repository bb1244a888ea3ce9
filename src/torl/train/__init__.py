"""GRPO training with tool-integrated rollouts: TRL's GRPOTrainer + torl's rollout function.

    torl train --config configs/demo-cpu.yaml [--setting value ...] [--resume]

Modules: `config` (TorlConfig + TRL's GRPOConfig, validation), `data` (questions), `rollout`
(the TRL `rollout_func` bridge to `torl.tir`, dynamic sampling), `rewards` (the reward function:
scores only), `grpo` (GRPOTrainer + the after-scoring hook and the no-signal skip), `signal`
(which groups carry gradient), `step_record` (what a step records and logs: its pieces' reports,
step metrics into TRL's log, sample dumps, metrics.jsonl; names in METRICS.md),
`stopping` (time budget, Ctrl-C), `rollout_engine` (which engine),
`weight_sync` (trainer weights into the engine, LoRA merged), `lora` (PEFT config, merged save), `ranks` (which process), `session` (the live objects of one run),
`trainer` (`run_training`), `heldout` (before/after greedy check), `run_dir` (the run directory).
"""

from torl.train.config import TorlConfig, parse_train_args, validate

__all__ = ["TorlConfig", "parse_train_args", "validate"]
