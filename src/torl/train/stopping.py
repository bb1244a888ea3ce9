"""When a torl run stops early: the time budget and Ctrl-C (trainer callbacks)."""

from __future__ import annotations

import signal
import sys
import time

from transformers import TrainerCallback


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


