"""Per-step training metrics: tool behaviour from trajectories, the wall-time split, metrics.jsonl.

Every name logged here is defined in METRICS.md (same folder); keep the two in sync.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

from torl.metrics.behaviour import behaviour_metrics

# Training name -> the `torl.metrics.behaviour` metric it logs: one definition for train, eval and reports.
TRAINING_METRICS = {
    "rewards/accuracy": "accuracy",
    "tools/code_ratio": "code_ratio",
    "tools/calls_per_response": "calls_per_response",
    "tools/pass_ratio": "pass_ratio",
    "tools/timeout_ratio": "timeout_ratio",
    "tools/skipped_ratio": "skipped_ratio",
    "tools/over_budget_ratio": "over_budget_ratio",
    "tools/sandbox_errors": "sandbox_errors",
    "lengths/model_tokens": "model_tokens",
    "lengths/tool_tokens": "tool_tokens",
    "lengths/truncated_ratio": "truncated_ratio",
}


def trajectory_metrics(trajectories: list[dict], correct: list[bool | None]) -> dict[str, float]:
    """Namespaced metrics of one step's responses (trajectory dicts; `correct` None = not scored).

    An empty ratio ("nothing to measure", None in `behaviour_metrics`) is NaN here, because TRL's
    metric buffers hold floats; metrics.jsonl writes it as null.
    """
    measured = behaviour_metrics(trajectories, correct)
    return {name: math.nan if measured[key] is None else float(measured[key]) for name, key in TRAINING_METRICS.items()}


class ActivityClock:
    """Splits a rollout's wall time into *generation* and *tools* while both run concurrently.

    Any moment with at least one `generate` call in flight counts as generation; a moment with
    only sandbox calls in flight counts as tools (the sandbox is then on the critical path).
    Thread-safe because engines may call back from worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = {"generation": 0, "tools": 0}
        self._spent = {"generation": 0.0, "tools": 0.0}
        self._since = time.perf_counter()

    def _advance(self) -> None:
        now = time.perf_counter()
        if self._active["generation"]:
            self._spent["generation"] += now - self._since
        elif self._active["tools"]:
            self._spent["tools"] += now - self._since
        self._since = now

    def enter(self, kind: str) -> None:
        with self._lock:
            self._advance()
            self._active[kind] += 1

    def leave(self, kind: str) -> None:
        with self._lock:
            self._advance()
            self._active[kind] -= 1

    def take(self) -> dict[str, float]:
        """Seconds spent per kind since the last `take`, then reset."""
        with self._lock:
            self._advance()
            spent, self._spent = self._spent, {"generation": 0.0, "tools": 0.0}
            return spent


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume: drop rows logged after the checkpoint we continue from (they will be redone)."""
    path = Path(path)
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))
