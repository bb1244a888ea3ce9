"""The policy update: TRL's `GRPOTrainer` as torl runs it, once a step's rollouts are scored.

Modules: `grpo` (`ToolGRPOTrainer`: after-scoring hooks, the no-signal skip, and the parts below
wired in), `signal` (which GRPO groups carry gradient), `shared_prompt` (one prompt forward per
group), `contract` (every batch checked against its trajectories), `mismatch` (sampler/trainer
mismatch metrics and the importance-sampling correction). Imports point into this package, never
out of it to the rest of `torl.train`.
"""
