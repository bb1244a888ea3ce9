"""What a person watching `torl train` sees: one compact line per step, not TRL's raw dict of ~50 metrics.

Everything else still goes to `RUN_DIR/metrics.jsonl` and TensorBoard (torl/metrics/METRICS.md). The line keeps the
numbers people watch: reward, accuracy, code ratio, how many GRPO groups carry a learning signal,
loss, step time, and any health alarm holding at that step.
"""

from __future__ import annotations

import math

from transformers.trainer_callback import ProgressCallback

# (metrics key, label, format): the columns of the step line, in order.
STEP_COLUMNS = (
    ("reward", "reward", "{:+.3f}"),
    ("rewards/accuracy", "acc", "{:.3f}"),
    ("tools/code_ratio", "code", "{:.2f}"),
    ("signal/informative_groups", "signal", "{:g}"),  # GRPO groups with a learning signal, "/ groups" appended
    ("loss", "loss", "{:.4g}"),
    ("time/step_s", "step", "{:.0f}s"),
)


def _number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def step_line(step: int, max_steps: int | None, logs: dict) -> str:
    """`step 3/4 | reward +0.250 | acc 0.625 | ... | alarms: entropy_collapse` from one step's logs."""
    total = f"/{max_steps}" if max_steps and max_steps > 0 else ""
    parts = [f"step {step}{total}"]
    for key, label, fmt in STEP_COLUMNS:
        value = logs.get(key)
        if _number(value):
            text = f"{label} {fmt.format(value)}"
            if key == "signal/informative_groups" and _number(logs.get("signal/groups")):
                text += f"/{logs['signal/groups']:g}"
            parts.append(text)
    alarms = sorted(k.removeprefix("health/alarm_") for k, v in logs.items()
                    if k.startswith("health/alarm_") and v)
    if alarms:
        parts.append("alarms: " + ", ".join(alarms))
    return " | ".join(parts)


class CompactProgress(ProgressCallback):
    """transformers' progress bar, with one `step_line` per training step instead of the raw log dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "loss" in logs:  # a training step's log; the end-of-train summary stays in its own file
            self.training_bar.write(step_line(state.global_step, state.max_steps, logs))


def install(trainer) -> None:
    """Swap the trainer's progress callback for `CompactProgress` (no-op when progress bars are off)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(CompactProgress(max_str_len=100))
