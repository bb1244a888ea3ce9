"""The GRPO reward function: `torl.reward.score` on each trajectory's `answer_text`, nothing else.

TRL calls it once per generation batch with every dataset column and every extra field our
rollout function returned (`trajectory`, and the `question_id`/`problem`/`gold` of the questions
actually rolled out, which dynamic sampling may have changed) as keyword lists. It hands its
results to the step recorder; metrics and sample dumps are `torl.train.step_record`'s job.
"""

from __future__ import annotations

import time

from torl.tir.trajectory import answer_text
from torl.train.step_record import StepRecorder


class TorlReward:
    """Outcome reward with the configured scheme; `None` (no learning signal) for sandbox failures."""

    __name__ = "torl_reward"  # TRL names its reward metrics after this: rewards/torl_reward/mean

    def __init__(self, scheme: str, recorder: StepRecorder | None = None) -> None:
        self.scheme = scheme
        self.recorder = recorder

    def __call__(self, prompts, completions, trajectory, gold, **_unused) -> list[float | None]:
        started = time.perf_counter()
        results = score_trajectories(trajectory, gold, self.scheme)
        if self.recorder is not None:
            self.recorder.record_scores(results)
            self.recorder.add_time("reward_s", time.perf_counter() - started)
        return reward_values(results)


def score_trajectories(trajectories: list[dict], golds: list[str], scheme: str) -> list:
    """One `RewardResult` per trajectory; None where our sandbox failed (never the model's fault)."""
    from torl.reward import score

    return [None if traj["sandbox_error"] else score(answer_text(traj), answer, scheme=scheme, calls=traj["calls"])
            for traj, answer in zip(trajectories, golds, strict=True)]


def reward_values(results: list) -> list[float | None]:
    """The rewards TRL gets: None (no signal) where the sandbox failed on our side."""
    return [None if r is None else float(r.reward) for r in results]
