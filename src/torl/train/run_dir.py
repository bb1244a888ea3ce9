"""The run directory's lifecycle: create it, refuse to overwrite a run, find the checkpoint to resume.

Its file names are `torl.run_layout`'s (the layout is drawn there); this module adds what only the
trainer does: creating the layout, writing the resolved config, the summary and README.txt.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import yaml

from torl.errors import UserError
from torl.run_layout import RunLayout


class RunDir(RunLayout):
    def prepare(self, resume: bool) -> str | None:
        """Create the layout; on resume return the checkpoint to continue from."""
        started = self.metrics.exists() or self.last_checkpoint() is not None
        if resume:
            checkpoint = self.last_checkpoint()
            if checkpoint is None:
                raise UserError(f"--resume: no checkpoint in {self.checkpoints}; start a new run without --resume")
            return checkpoint
        if started:
            raise UserError(f"{self.root} already holds a run; add --resume to continue it, or set another run_dir")
        for path in (self.root, self.samples, self.checkpoints, self.tensorboard):
            path.mkdir(parents=True, exist_ok=True)
        return None

    def last_checkpoint(self) -> str | None:
        """The newest checkpoint that can be resumed: one without trainer_state.json cannot."""
        complete = [p for p in self.checkpoint_dirs() if (p / "trainer_state.json").exists()]
        return str(complete[-1]) if complete else None

    def write_config(self, torl_cfg, grpo_cfg, start: dict | None = None) -> None:
        resolved = {"torl": dataclasses.asdict(torl_cfg), "grpo": _plain(grpo_cfg.to_dict())}
        if start:  # torl.train.start: the run the weights and task spec came from
            resolved["start"] = start
        self.config.write_text(yaml.safe_dump(resolved, sort_keys=False))

    def write_summary(self, summary: dict) -> None:
        self.summary.write_text(json.dumps(summary, indent=2) + "\n")
        self.readme.write_text(_readme(self.root, summary))


def _plain(d: dict) -> dict:
    # TrainingArguments.to_dict keeps enums/objects; YAML wants plain values.
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v) for k, v in d.items()}


def _template_name(template) -> str:
    return f"{template.get('name')} (custom)" if isinstance(template, dict) else str(template)


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _readme(root: Path, s: dict) -> str:
    lines = [
        f"torl training run — {root}",
        f"finished: {time.strftime('%Y-%m-%d %H:%M:%S')}  status: {s.get('status')}",
        (f"model: {s.get('model')}  template: {_template_name(s.get('template'))}  "
         f"C (max tool calls): {s.get('max_tool_calls')}"),
        *([f"started from: {s['started_from']['model']} (run {s['started_from']['run']}, under its task_spec.json)"]
          if s.get("started_from") else []),
        f"steps: {s.get('steps')}  wall time: {s.get('wall_s', 0):.0f} s  train questions: {s.get('train_questions')}",
        "",
    ]
    before, after = s.get("eval_before"), s.get("eval_after")
    if before or after:
        lines.append(f"held-out greedy evaluation ({(before or after)['questions']} questions):")
        lines.append(f"  {'':8s} {'accuracy':>9s} {'code ratio':>11s}")
        for name, ev in (("before", before), ("after", after)):
            if ev:
                acc = "n/a" if ev["accuracy"] is None else f"{ev['accuracy']:.3f}"
                lines.append(f"  {name:8s} {acc:>9s} {ev['code_ratio']:>11.3f}")
        lines.append("")
    if s.get("health"):  # HealthMonitor.summary_lines(): which alarms fired, when, for how long
        lines += [*s["health"], ""]
    if s.get("curve"):
        lines.append("training curve (sampled responses, T as configured; metrics.jsonl has every metric):")
        lines.append(f"  {'step':>4s} {'code ratio':>10s} {'accuracy':>9s} {'reward':>7s} {'informative':>11s} {'step s':>7s}")
        for row in s["curve"]:
            lines.append(f"  {row['step']:>4d} {_num(row['tools/code_ratio']):>10s} {_num(row['rewards/accuracy']):>9s} "
                         f"{_num(row['reward']):>7s} {_num(row['signal/informative_groups'], 0):>11s} "
                         f"{_num(row['time/step_s'], 0):>7s}")
        lines.append("")
    if s.get("model_dir"):
        lines.append(f"trained model: {s['model_dir']}")
        if Path(s["model_dir"]).name == "merged":
            lines.append("  LoRA: the base model with the adapter merged in (checkpoints/ hold only the adapter)")
        lines += [f"  --run {root} loads it, with this run's task spec (task_spec.json):",
                  f"    torl eval --run {root} --benchmarks ...",
                  f"    torl rollout --run {root} --question ...", ""]
    lines += [
        "files:",
        "  config.yaml          resolved configuration",
        "  metrics.jsonl        one row per step (see METRICS.md in torl/metrics)",
        "  samples/             every sampled response per step (step_NNNNNN.jsonl); samples/alarms/ those",
        "                       of grad_norm_spike steps when dump_samples is off",
        "  checkpoints/         checkpoints; --resume continues from the last (not with save_only_model: no optimizer state)",
        "  tensorboard/         tensorboard --logdir tensorboard",
        "  eval_*.jsonl         held-out greedy rollouts before/after training",
    ]
    return "\n".join(lines) + "\n"
