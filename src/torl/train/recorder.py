"""`StepRecorder`: what the pieces of one training step report, read once at the step's end.

The rollout function reports its wall-time split and the generation batch (trajectories and the
questions they answer, which dynamic sampling may have changed); the reward function reports its
scores. The after-scoring report (`torl.train.reporting`) and the metrics-file callback take what
they need. One object with named methods instead of a shared mutable dict, so a typo'd key fails
loudly and each piece's contribution is visible in one place.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict


@dataclasses.dataclass
class RolloutBatch:
    trajectories: list[dict]                    # Trajectory.to_dict() per sample, in batch order
    questions: list[dict]                       # {question_id, problem, gold} per sample
    stats: dict[str, float]                     # rollout-side metrics (time/*, signal/* of dynamic sampling)
    results: list | None = None                 # RewardResult per sample (None = sandbox failure), once scored
    masked: list[bool] | None = None            # filter_void_turns: samples whose env_mask was zeroed (no loss)


class StepRecorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)
        self._batch: RolloutBatch | None = None

    # --- wall time (seconds add up within a step)
    def add_time(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] += seconds

    def take_times(self) -> dict[str, float]:
        with self._lock:
            seconds, self._seconds = dict(self._seconds), defaultdict(float)
            return seconds

    # --- the generation batch
    def record_rollouts(self, batch: RolloutBatch) -> None:
        self._batch = batch

    def record_scores(self, results: list) -> None:
        if self._batch is None or len(results) != len(self._batch.trajectories):
            raise RuntimeError("scores reported for a batch the rollout function did not record")
        self._batch.results = list(results)

    def take_batch(self) -> RolloutBatch | None:
        batch, self._batch = self._batch, None
        return batch
