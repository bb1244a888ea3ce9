"""TRL ↔ torl.tir: the `rollout_func` GRPOTrainer calls once per generation batch.

TRL hands us the batch's prompts (already repeated `num_generations` times by its sampler) and
expects one completion per prompt back, with `env_mask` marking which completion tokens the model
sampled (1) and which the interpreter wrote (0): TRL multiplies it into the loss mask, so
observation tokens are context, never training targets. Every trajectory of the batch runs
concurrently on one persistent event loop (a background thread), so a trajectory waiting on the
sandbox never holds the others back; batching is the engine's job.

With `filter_void_turns` (SimpleTIR), a response with a void turn (`torl.metrics.health.is_degenerate`:
it read an observation and then wrote neither code nor a boxed answer) gets an all-zero `env_mask`,
so none of its tokens is trained on. Deliberately, its reward still enters its group's GRPO baseline
(the filter acts on the policy loss, not on the advantages, which TRL computes over the full
group): the other samples keep the advantages they would have had without the filter, and a
group never shrinks below `num_generations` (nor to one sample, whose advantage would be 0).

With dynamic sampling (DAPO), groups whose rewards are all equal are replaced, before TRL sees
the batch, by groups of other training questions, for at most `max_rounds` extra generation
rounds; the questions actually rolled out travel with the batch (`question_id`/`problem`/`gold`
extra fields, which TRL hands the reward function in place of the dataset's columns).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

from torl.background_loop import BackgroundLoop
from torl.engines.base import Engine, Generation, SamplingParams
from torl.errors import SandboxErrorsExceeded
from torl.metrics.health import is_degenerate
from torl.sandbox.base import Sandbox, SandboxWrapper
from torl.tir.loop import RolloutConfig, encode_prompt, rollout_many
from torl.tir.seeds import derive_seed
from torl.tir.templates import PromptTemplate
from torl.train.ranks import process_rank
from torl.train.rewards import reward_values, score_trajectories
from torl.train.step_record import ActivityClock, RolloutBatch, StepRecorder
from torl.train.update.signal import informative_groups


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


class TimedSandbox(SandboxWrapper):
    """Delegates to a sandbox, telling the clock when a code run is in flight."""

    def __init__(self, inner: Sandbox, clock: ActivityClock) -> None:
        super().__init__(inner)
        self.clock = clock

    async def run(self, code, **kw):
        self.clock.enter("tools")
        try:
            return await self.inner.run(code, **kw)
        finally:
            self.clock.leave("tools")


@dataclasses.dataclass(frozen=True)
class DynamicSampling:
    """DAPO dynamic sampling: where replacement questions come from, and how hard to try."""

    questions: list[dict]      # the training pool ({question_id, problem, gold})
    reward_scheme: str
    max_rounds: int = 2        # extra generation rounds per step, at most


class ToolRolloutFunc:
    """`rollout_func(prompts, trainer)` for GRPOTrainer: tool-integrated rollouts via `torl.tir`.

    `prompts` are question texts (the dataset's `prompt` column); the template renders them and
    `questions` (problem text -> question record) says which question each one is.
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
        questions: list[dict],
        recorder: StepRecorder,
        max_sandbox_error_ratio: float,
        dynamic_sampling: DynamicSampling | None = None,
        sync_weights: bool = False,
        filter_void_turns: bool = False,
    ) -> None:
        self.clock = ActivityClock()
        self.engine = TimedEngine(engine, self.clock)
        self.sandbox = None if sandbox is None else TimedSandbox(sandbox, self.clock)
        self.loop = loop
        self.template = template
        self.rollout_config = rollout_config
        self.by_problem = {q["problem"]: q for q in questions}
        self.recorder = recorder
        self.max_sandbox_error_ratio = max_sandbox_error_ratio
        self.dynamic_sampling = dynamic_sampling
        self.sync_weights = sync_weights
        self.filter_void_turns = filter_void_turns
        self._synced_step: int | None = None

    def __call__(self, prompts: list[str], trainer) -> dict[str, Any]:
        step = trainer.state.global_step
        if self.sync_weights and self._synced_step != step:
            from torl.train.weight_sync import push_weights

            push_weights(trainer, self.engine.inner, self.loop)
            self._synced_step = step
        # A seed derived from (base seed, step, rank): a resumed run samples what the killed run would
        # have, and the processes sharing one GRPO group never draw the same samples.
        base_seed = trainer.args.seed if getattr(trainer.args, "seed", None) is not None else 0
        seed = derive_seed(base_seed, "step", step, "rank", process_rank())
        questions = [self._question(p) for p in prompts]
        self.clock.take()
        started = time.perf_counter()
        was_training = trainer.model.training
        trajectories = self._rollout(questions, derive_seed(seed, "round", 0))
        stats: dict[str, float] = {}
        if self.dynamic_sampling is not None:
            questions, trajectories, stats = self._refill(questions, trajectories, trainer.num_generations, seed)
        trainer.model.train(was_training)  # an engine sharing the module may switch it to eval
        rollout_s = time.perf_counter() - started
        split = self.clock.take()
        self.recorder.add_time("rollout_s", rollout_s)
        self._check_sandbox_errors(trajectories, step)

        stats.update({"time/rollout_s": rollout_s, "time/generation_s": split["generation"],
                      "time/tools_s": split["tools"]})
        dicts = [t.to_dict() for t in trajectories]
        if self.rollout_config.protocol == "tool_calls":
            from torl.tools.metrics import tool_call_metrics

            stats.update(tool_call_metrics(dicts))
        env_mask = [t.loss_mask for t in trajectories]
        masked = None
        if self.filter_void_turns:  # SimpleTIR: no loss on responses with a void turn (module docstring)
            masked = [is_degenerate(d) for d in dicts]
            env_mask = [[0] * len(m) if out else m for m, out in zip(env_mask, masked, strict=True)]
            stats["health/filtered_responses"] = float(sum(masked))
        self.recorder.record_rollouts(RolloutBatch(dicts, questions, stats, masked=masked))
        logprobs = [t.logprobs for t in trajectories]
        return {
            "prompt_ids": [t.prompt_ids for t in trajectories],
            "completion_ids": [t.completion_ids for t in trajectories],
            # TRL only reads sampling logprobs for its vLLM importance-sampling correction; None = "not given".
            "logprobs": None if any(lp is None for lp in logprobs) else logprobs,
            "env_mask": env_mask,
            "trajectory": dicts,
            # filter_void_turns zeroed this sample's env_mask (the token contract expects it: torl.train.update.contract)
            "loss_filtered": masked or [False] * len(dicts),
            # the questions actually rolled out (dynamic sampling may have replaced some groups)
            "question_id": [q["question_id"] for q in questions],
            "problem": [q["problem"] for q in questions],
            "gold": [q["gold"] for q in questions],
        }

    def _question(self, prompt: str) -> dict:
        try:
            return self.by_problem[prompt]
        except KeyError:
            raise RuntimeError(f"rollout_func got a prompt that is not a training question: {prompt[:80]!r}") from None

    def _rollout(self, questions: list[dict], seed: int | None):
        config = dataclasses.replace(self.rollout_config, seed=seed)
        prompt_ids = [encode_prompt(self.template, q["problem"], self.engine.tokenizer, config) for q in questions]
        return self.loop.run(rollout_many(self.engine, self.sandbox, prompt_ids, config))

    def _refill(self, questions, trajectories, group_size: int, seed: int | None):
        """Replace groups without signal by fresh questions' groups, for at most `max_rounds` rounds."""
        ds = self.dynamic_sampling
        scores = self._scores(trajectories, questions)
        flags = informative_groups(scores, group_size)
        regenerated, rounds = 0, 0
        used = {q["question_id"] for q in questions}
        rng = random.Random(seed)
        while rounds < ds.max_rounds and not all(flags):
            rounds += 1
            idle = [g for g, ok in enumerate(flags) if not ok]
            fresh = [q for q in ds.questions if q["question_id"] not in used]
            if not fresh:
                break
            picks = rng.sample(fresh, min(len(idle), len(fresh)))
            used.update(q["question_id"] for q in picks)
            new_questions = [q for q in picks for _ in range(group_size)]
            new_trajs = self._rollout(new_questions, derive_seed(seed, "round", rounds))
            regenerated += len(picks)
            new_flags = informative_groups(self._scores(new_trajs, new_questions), group_size)
            for k, (g, ok) in enumerate(zip(idle, new_flags)):
                if ok:  # keep the original group otherwise: no better, and it is what TRL sampled
                    span = slice(g * group_size, (g + 1) * group_size)
                    questions[span] = new_questions[k * group_size:(k + 1) * group_size]
                    trajectories[span] = new_trajs[k * group_size:(k + 1) * group_size]
                    flags[g] = True
        stats = {"signal/groups_regenerated": float(regenerated), "signal/sampling_rounds": float(rounds)}
        return questions, trajectories, stats

    def _scores(self, trajectories, questions) -> list[float | None]:
        results = score_trajectories([t.to_dict() for t in trajectories], [q["gold"] for q in questions],
                                     self.dynamic_sampling.reward_scheme)
        return reward_values(results)

    def _check_sandbox_errors(self, trajectories, step: int) -> None:
        failed = sum(1 for t in trajectories if t.sandbox_error)
        ratio = failed / len(trajectories)
        if ratio > self.max_sandbox_error_ratio:
            raise SandboxErrorsExceeded(
                f"step {step + 1}: {failed}/{len(trajectories)} responses hit sandbox errors "
                f"(> max_sandbox_error_ratio={self.max_sandbox_error_ratio}); check the sandbox "
                "(`torl sandbox check`) and resume with --resume"
            )
