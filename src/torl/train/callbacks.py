"""The trainer callbacks of a torl run: the metrics file, the time budget, Ctrl-C."""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from torl.train.recorder import StepRecorder


class MetricsFileCallback(TrainerCallback):
    """Adds the step's wall time (and the update share of it) to TRL's logs; appends them to metrics.jsonl.

    Inserted first among the callbacks so tensorboard sees the keys it adds.
    """

    def __init__(self, path: Path, recorder: StepRecorder) -> None:
        self.path = Path(path)
        self.recorder = recorder  # the rollout and reward functions report their wall time to it
        self._step_started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_started is not None:
            step_s = time.perf_counter() - self._step_started
            self.recorder.add_time("step_s", step_s)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None or "loss" not in logs:
            return  # only training-step logs; the end-of-train summary has its own file
        seconds = self.recorder.take_times()
        step_s = seconds.get("step_s", math.nan)
        logs["time/step_s"] = step_s
        logs["time/reward_s"] = seconds.get("reward_s", 0.0)
        logs["time/update_s"] = step_s - seconds.get("rollout_s", 0.0) - seconds.get("reward_s", 0.0)
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


class StopAfterMinutes(TrainerCallback):
    """Save and stop at the first step boundary after `minutes` of training (a time-boxed run)."""

    def __init__(self, minutes: float) -> None:
        self.deadline = time.monotonic() + 60.0 * minutes
        self.fired = False

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() >= self.deadline:
            self.fired = True
            control.should_save = True
            control.should_training_stop = True
        return control


class StopOnInterrupt(TrainerCallback):
    """First Ctrl-C: finish the current step, save a checkpoint, stop. Second Ctrl-C: abort now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ntorl: stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)",
              file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


