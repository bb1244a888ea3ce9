"""Run health during training: each step's logged metrics feed a `HealthMonitor` (`torl.metrics.alarms`).

`HealthWatch` is a trainer callback placed first among the callbacks, so in `on_log` it sees the
step's full row (TRL's `grad_norm`, `entropy`, ... and torl's `tools/*`, `health/*`) before the
metrics file and TensorBoard do, and adds `health/alarm_<name>` (1 while the alarm holds) to it.

- A **new** alarm prints one line, ``torl: warning: health alarm <name> at step N: ...``.
- ``grad_norm_spike`` keeps that step's samples: the regular dump when `dump_samples` is on,
  else `samples/alarms/step_NNNNNN.jsonl` (`StepReport.keep_samples`).
- `health_stop_on_alarm`: a new alarm saves a checkpoint and stops the run (`stopped_by` names it).
- The monitor's state is `health_monitor.json` in every checkpoint; `load` restores it on resume.

The monitor runs on every process: the logged row is the same everywhere (TRL and torl average it
over processes), so every process takes the same stop decision; only the main one prints and
writes the state file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from torl.metrics.alarms import Alarm, HealthConfig, HealthMonitor
from torl.run_layout import RunLayout
from torl.train.step_record import StepReport

STATE_FILE = "health_monitor.json"


class HealthWatch(TrainerCallback):
    def __init__(self, config: HealthConfig, layout: RunLayout, report: StepReport, *,
                 stop_on_alarm: bool = False, main: bool = True) -> None:
        self.monitor = HealthMonitor(config)
        self.layout, self.report = layout, report
        self.stop_on_alarm, self.main = stop_on_alarm, main
        self.stopped_by: Alarm | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return  # only training-step rows (as MetricsFileCallback)
        step = state.global_step
        new = [a for a in self.monitor.update(step, logs) if a.new]
        logs.update(self.monitor.alarm_metrics())
        for alarm in new:
            kept = self.report.keep_samples(step, self.layout.alarm_samples) if alarm.name == "grad_norm_spike" else None
            if self.main:
                where = f" (samples: {kept})" if kept else ""
                _say(f"torl: warning: health alarm {alarm.name} at step {step}: {alarm.message}{where}")
        if new and self.stop_on_alarm and self.stopped_by is None:
            self.stopped_by = new[0]
            control.should_save = True  # TRL saves right after the log, then the loop ends
            control.should_training_stop = True
            if self.main:
                _say(f"torl: stopping at step {step} on health alarm {new[0].name} (health_stop_on_alarm); "
                     "saving a checkpoint")
        return control

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if self.main and checkpoint.is_dir():
            (checkpoint / STATE_FILE).write_text(json.dumps(self.monitor.state_dict()) + "\n")

    def load(self, checkpoint: str | Path) -> None:
        """Continue from a checkpoint's monitor state; one without it (health_checks was off) starts fresh."""
        path = Path(checkpoint) / STATE_FILE
        if path.exists():
            self.monitor.load_state_dict(json.loads(path.read_text()))
        elif self.main:
            print(f"torl: note: {checkpoint} has no {STATE_FILE}; the health alarms start from scratch",
                  file=sys.stderr)


def _say(line: str) -> None:
    """One line on stderr, on its own line even while TRL's progress bar is drawn (tqdm clears and redraws it)."""
    tqdm.write(line, file=sys.stderr)
