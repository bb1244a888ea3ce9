"""Per-step training metrics: tool behaviour from trajectories, the wall-time split, metrics.jsonl.

Every name logged here is defined in METRICS.md (same folder); keep the two in sync.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

# One definition of "uses code" and "executed call", shared with eval and reports.
from torl.analysis.behaviour import executed_calls, uses_code


def trajectory_metrics(trajectories: list[dict], correct: list[bool]) -> dict[str, float]:
    """Namespaced metrics of one step's responses (trajectory dicts, as `Trajectory.to_dict()`)."""
    n = len(trajectories)
    calls = [c for t in trajectories for c in executed_calls(t)]
    over_budget = sum(1 for t in trajectories for s in t["skipped_calls"] if s["reason"] == "over_budget")
    statuses = [c["result"]["status"] for c in calls]
    return {
        "rewards/accuracy": sum(correct) / n,
        "tools/code_ratio": sum(map(uses_code, trajectories)) / n,
        "tools/calls_per_response": len(calls) / n,
        "tools/pass_ratio": _ratio(statuses.count("ok"), len(statuses)),
        "tools/timeout_ratio": _ratio(statuses.count("timeout"), len(statuses)),
        "tools/skipped_ratio": _ratio(over_budget, len(calls) + over_budget),
        "tools/sandbox_errors": float(sum(t.get("sandbox_errors", 0) for t in trajectories)),
        "lengths/model_tokens": sum(t["model_tokens"] for t in trajectories) / n,
        "lengths/tool_tokens": sum(t["tool_tokens"] for t in trajectories) / n,
        "lengths/truncated_ratio": sum(1 for t in trajectories if t["truncated"]) / n,
    }


def _ratio(part: int, whole: int) -> float:
    # NaN (not 0) when nothing was attempted: TRL drops NaN from its averages and logs it as null.
    return part / whole if whole else math.nan


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


class MetricsFileCallback(TrainerCallback):
    """Adds the step's wall time (and the update share of it) to TRL's logs; appends them to metrics.jsonl.

    Inserted first among the callbacks so tensorboard sees the keys it adds.
    """

    def __init__(self, path: Path, timings: dict[str, float]) -> None:
        self.path = Path(path)
        self.timings = timings  # filled by the rollout and reward functions during the step
        self._step_started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_started is not None:
            step_s = time.perf_counter() - self._step_started
            self.timings["step_s"] = self.timings.get("step_s", 0.0) + step_s

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None or "loss" not in logs:
            return  # only training-step logs; the end-of-train summary has its own file
        step_s = self.timings.pop("step_s", math.nan)
        rollout_s = self.timings.pop("rollout_s", 0.0)
        reward_s = self.timings.pop("reward_s", 0.0)
        logs["time/step_s"] = step_s
        logs["time/update_s"] = step_s - rollout_s - reward_s
        row = {"step": state.global_step, "time": time.time(), **{k: _jsonable(v) for k, v in logs.items()}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        # A ratio with no denominator this step (no code ran) is null in metrics.jsonl; the loggers
        # after us (tensorboard) take numbers only, so they do not see it at all.
        for key in [k for k, v in logs.items() if v is None]:
            del logs[key]


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume: drop rows logged after the checkpoint we continue from (they will be redone)."""
    path = Path(path)
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))
