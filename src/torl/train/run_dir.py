"""The run directory: where a training run leaves everything a reader needs.

    run_dir/
      config.yaml           the resolved configuration (torl + grpo sections)
      task_spec.json        how a trajectory is produced and scored (torl.tir.task); `torl eval --run` reads it
      metrics.jsonl         one row per optimizer step (names: METRICS.md)
      samples/step_NNNNNN.jsonl   every sampled response of that step
      checkpoints/checkpoint-N/   TRL/HF checkpoints (model, optimizer, RNG, trainer state)
      tensorboard/          TRL's report_to=tensorboard logs
      eval_before.jsonl / eval_after.jsonl   held-out greedy rollouts (when enabled)
      summary.json, README.txt    what happened, in numbers and in words
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import yaml

from torl.cli import UserError


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.metrics = self.root / "metrics.jsonl"
        self.samples = self.root / "samples"
        self.checkpoints = self.root / "checkpoints"
        self.tensorboard = self.root / "tensorboard"
        self.config = self.root / "config.yaml"
        self.summary = self.root / "summary.json"
        self.readme = self.root / "README.txt"

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
        if not self.checkpoints.is_dir():
            return None
        steps = [(int(m.group(1)), p) for p in self.checkpoints.iterdir()
                 if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").exists()]
        return str(max(steps)[1]) if steps else None

    def write_config(self, torl_cfg, grpo_cfg) -> None:
        resolved = {"torl": dataclasses.asdict(torl_cfg), "grpo": _plain(grpo_cfg.to_dict())}
        self.config.write_text(yaml.safe_dump(resolved, sort_keys=False))

    def write_summary(self, summary: dict) -> None:
        self.summary.write_text(json.dumps(summary, indent=2) + "\n")
        self.readme.write_text(_readme(self.root, summary))


def _plain(d: dict) -> dict:
    # TrainingArguments.to_dict keeps enums/objects; YAML wants plain values.
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v) for k, v in d.items()}


def _readme(root: Path, s: dict) -> str:
    lines = [
        f"torl training run — {root}",
        f"finished: {time.strftime('%Y-%m-%d %H:%M:%S')}  status: {s.get('status')}",
        f"model: {s.get('model')}  template: {s.get('template')}  C (max tool calls): {s.get('max_tool_calls')}",
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
    if s.get("last_metrics"):
        lines.append("last step metrics:")
        for k, v in s["last_metrics"].items():
            lines.append(f"  {k}: {v}")
        lines.append("")
    lines += [
        "files:",
        "  config.yaml          resolved configuration",
        "  metrics.jsonl        one row per step (see METRICS.md in torl/train)",
        "  samples/             every sampled response per step (step_NNNNNN.jsonl)",
        "  checkpoints/         resumable checkpoints (rerun the same torl train command with --resume)",
        "  tensorboard/         tensorboard --logdir tensorboard",
        "  eval_*.jsonl         held-out greedy rollouts before/after training",
    ]
    return "\n".join(lines) + "\n"
