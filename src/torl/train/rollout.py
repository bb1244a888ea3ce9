"""TRL ↔ torl.tir: the `rollout_func` GRPOTrainer calls once per generation batch.

TRL hands us the batch's prompts (already repeated `num_generations` times by its sampler) and
expects one completion per prompt back, with `env_mask` marking which completion tokens the model
sampled (1) and which the interpreter wrote (0): TRL multiplies it into the loss mask, so
observation tokens are context, never training targets. Every trajectory of the batch runs
concurrently on one persistent event loop (a background thread), so a trajectory waiting on the
sandbox never holds the others back; batching is the engine's job.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from torl.background_loop import BackgroundLoop
from torl.engines.base import Engine, Generation, SamplingParams
from torl.sandbox.base import Sandbox
from torl.tir.loop import RolloutConfig, rollout_many
from torl.tir.templates import PromptTemplate
from torl.train.metrics import ActivityClock


class SandboxErrorsExceeded(RuntimeError):
    """Too many responses in one step hit a sandbox failure on our side: the run stops."""


class TimedEngine(Engine):
    """Delegates to an engine, telling the clock when a generate call is in flight. (Stop strings
    are the task spec's, applied by the TIR loop, the same in training and evaluation.)"""

    def __init__(self, inner: Engine, clock: ActivityClock) -> None:
        self.inner, self.clock, self.tokenizer = inner, clock, inner.tokenizer

    async def generate(self, prompt_ids, params: SamplingParams) -> Generation:
        self.clock.enter("generation")
        try:
            return await self.inner.generate(prompt_ids, params)
        finally:
            self.clock.leave("generation")

    async def load_weights(self, named_tensors) -> None:
        await self.inner.load_weights(named_tensors)


class TimedSandbox(Sandbox):
    """Delegates to a sandbox, telling the clock when a code run is in flight."""

    def __init__(self, inner: Sandbox, clock: ActivityClock) -> None:
        self.inner, self.clock = inner, clock

    async def run(self, code, **kw):
        self.clock.enter("tools")
        try:
            return await self.inner.run(code, **kw)
        finally:
            self.clock.leave("tools")

    async def open_session(self):
        return await self.inner.open_session()

    async def close_session(self, session):
        await self.inner.close_session(session)

    async def health_check(self):
        await self.inner.health_check()

    async def aclose(self):
        await self.inner.aclose()


class ToolRolloutFunc:
    """`rollout_func(prompts, trainer)` for GRPOTrainer: tool-integrated rollouts via `torl.tir`.

    `prompts` are question texts (the dataset's `prompt` column); the template renders them.
    `sync_weights`: push the trainer's weights into the engine before each new step's rollouts
    (vLLM); False when the engine shares the trainer's module (transformers on CPU).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        sandbox: Sandbox | None,
        loop: BackgroundLoop,
        template: PromptTemplate,
        rollout_config: RolloutConfig,
        max_sandbox_error_ratio: float,
        timings: dict[str, float],
        sync_weights: bool = False,
    ) -> None:
        self.clock = ActivityClock()
        self.engine = TimedEngine(engine, self.clock)
        self.sandbox = None if sandbox is None else TimedSandbox(sandbox, self.clock)
        self.loop = loop
        self.template = template
        self.rollout_config = rollout_config
        self.max_sandbox_error_ratio = max_sandbox_error_ratio
        self.timings = timings
        self.sync_weights = sync_weights
        self._synced_step: int | None = None
        self.sandbox_errors_total = 0

    def __call__(self, prompts: list[str], trainer) -> dict[str, Any]:
        step = trainer.state.global_step
        if self.sync_weights and self._synced_step != step:
            from torl.train.engines import push_weights

            push_weights(trainer, self.engine.inner, self.loop)
            self._synced_step = step
        tokenizer = self.engine.tokenizer
        prompt_ids = [self.template.encode(p, tokenizer) for p in prompts]
        # A fresh, step-derived seed: a resumed run samples what the killed run would have.
        base_seed = trainer.args.seed if getattr(trainer.args, "seed", None) is not None else 0
        config = _with_seed(self.rollout_config, (base_seed * 1_000_003 + step * 10_007) % 2**31)
        self.clock.take()
        started = time.perf_counter()
        was_training = trainer.model.training
        trajectories = self.loop.run(rollout_many(self.engine, self.sandbox, prompt_ids, config))
        trainer.model.train(was_training)  # an engine sharing the module may switch it to eval
        rollout_s = time.perf_counter() - started
        split = self.clock.take()
        self.timings["rollout_s"] = self.timings.get("rollout_s", 0.0) + rollout_s
        self._check_sandbox_errors(trajectories, step)

        logprobs = [t.logprobs for t in trajectories]
        timing = {"rollout_s": rollout_s, "generation_s": split["generation"], "tools_s": split["tools"]}
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [t.completion_ids for t in trajectories],
            # TRL only reads sampling logprobs for its vLLM importance-sampling correction; None = "not given".
            "logprobs": None if any(lp is None for lp in logprobs) else logprobs,
            "env_mask": [t.loss_mask for t in trajectories],
            "trajectory": [t.to_dict() for t in trajectories],
            "rollout_timing": timing,  # a non-list value: TRL gives it to every sample's reward kwargs
        }

    def _check_sandbox_errors(self, trajectories, step: int) -> None:
        failed = sum(1 for t in trajectories if t.sandbox_error)
        self.sandbox_errors_total += failed
        ratio = failed / len(trajectories)
        if ratio > self.max_sandbox_error_ratio:
            raise SandboxErrorsExceeded(
                f"step {step + 1}: {failed}/{len(trajectories)} responses hit sandbox errors "
                f"(> max_sandbox_error_ratio={self.max_sandbox_error_ratio}); check the sandbox "
                "(`torl sandbox check`) and resume with --resume"
            )


def _with_seed(config: RolloutConfig, seed: int | None) -> RolloutConfig:
    return dataclasses.replace(config, seed=seed)
