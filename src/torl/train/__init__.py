"""GRPO training with tool-integrated rollouts: TRL's GRPOTrainer + torl's rollout function.

    torl train --config configs/demo-cpu.yaml [--setting value ...] [--resume]

Modules: `config` (TorlConfig + TRL's GRPOConfig, validation), `data` (questions), `rollout`
(the TRL `rollout_func` bridge to `torl.tir`), `rewards` (reward function, sample dumps),
`metrics` (tool metrics, wall-time split, metrics.jsonl; names in METRICS.md), `engines` (which
engine, weight sync), `session` (the live objects of one run), `trainer` (`run_training`),
`heldout` (before/after greedy check), `run_dir` (the run directory layout).
"""

from torl.train.config import TorlConfig, parse_train_args, validate

__all__ = ["TorlConfig", "parse_train_args", "run_training", "validate"]


def run_training(torl_cfg, grpo_cfg) -> int:
    """Train per the config (see `torl.train.trainer.run_training`)."""
    from torl.train.trainer import run_training as run

    return run(torl_cfg, grpo_cfg)
