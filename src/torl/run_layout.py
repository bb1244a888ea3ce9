"""The names of everything in a run directory (training) or an eval output dir, defined once for whoever writes or reads them.

    run_dir/
      config.yaml           the resolved configuration (torl + grpo sections)
      task_spec.json        how a trajectory is produced and scored (torl.tir.task); `torl eval --run` reads it
      metrics.jsonl         one row per optimizer step (names: torl/metrics/METRICS.md)
      samples/step_NNNNNN.jsonl   every sampled response of that step (`.rankR` before `.jsonl` for process R > 0):
                            question, reward, the compact trajectory (text segments); with dump_sample_ids
                            its prompt_ids / completion_ids as trained and loss_mask too
      samples/alarms/step_NNNNNN.jsonl   the same, kept for a step with a grad_norm_spike alarm when dump_samples is off
      token_contract_violation_NNNNNN.jsonl   the sample TRL's batch disagreed with, when a step broke the token contract
      checkpoints/checkpoint-N/   TRL/HF checkpoints (model, optimizer, RNG, trainer state)
      tensorboard/          TRL's report_to=tensorboard logs
      eval_before.jsonl / eval_after.jsonl   held-out greedy rollouts (when enabled), eval_*.json their summaries
      summary.json, README.txt    what happened, in numbers and in words

    eval_out/               (`torl eval --out`)
      config.json           the eval's settings; resuming checks them (torl.eval.store)
      trajectories.jsonl    one row per finished sample, appended as it finishes (compact trajectory;
                            with --save-ids its prompt_ids / completion_ids / loss_mask too, as sampled)
      results.json / results.md       scores, and ToRL's table
      analytics.json / analytics.md   behaviour metrics per benchmark

Training writes a run directory (`torl.train.run_dir.RunDir` adds creating and resuming) and
`torl.eval` an eval dir; analysis, LIMR and `torl eval --run` read them. It sits at the package root and imports nothing from torl, so
readers need not import `torl.train` (and its TRL) to find a file.
"""

from __future__ import annotations

import re
from pathlib import Path

SAMPLE_FILE_GLOB = "step_*.jsonl"
_SAMPLE_FILE = re.compile(r"step_(\d+)(?:\.rank(\d+))?\.jsonl")
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
HELDOUT_WHEN = ("before", "after")


def sample_file_name(step: int, rank: int = 0) -> str:
    """`step_000012.jsonl` for process 0, `step_000012.rank1.jsonl` for process 1 (each process dumps its own)."""
    return f"step_{step:06d}{'' if rank == 0 else f'.rank{rank}'}.jsonl"


def sample_file_order(path: Path) -> tuple:
    """Sort key putting dump files in (step, rank) order; a name torl did not write sorts after, by name."""
    m = _SAMPLE_FILE.fullmatch(path.name)
    return (0, int(m.group(1)), int(m.group(2) or 0), "") if m else (1, 0, 0, path.name)


def checkpoint_step(path: Path) -> int | None:
    """N of a `checkpoint-N` directory, None for any other name."""
    m = _CHECKPOINT_DIR.fullmatch(path.name)
    return int(m.group(1)) if m else None


class RunLayout:
    """Paths inside one run directory; it creates nothing and reads nothing but directory listings."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.task_spec = self.root / "task_spec.json"
        self.metrics = self.root / "metrics.jsonl"
        self.samples = self.root / "samples"
        self.alarm_samples = self.samples / "alarms"
        self.checkpoints = self.root / "checkpoints"
        self.tensorboard = self.root / "tensorboard"
        self.summary = self.root / "summary.json"
        self.readme = self.root / "README.txt"

    def sample_file(self, step: int, rank: int = 0) -> Path:
        return self.samples / sample_file_name(step, rank)

    def alarm_sample_file(self, step: int, rank: int = 0) -> Path:
        return self.alarm_samples / sample_file_name(step, rank)

    def contract_violation_file(self, step: int, rank: int = 0) -> Path:
        """The sample that broke the token contract at `step` (torl.train.update.contract), when one did."""
        return self.root / f"token_contract_violation_{sample_file_name(step, rank).removeprefix('step_')}"

    def sample_files(self) -> list[Path]:
        """The dumps in `samples/`, in (step, rank) order; [] when there are none."""
        if not self.samples.is_dir():
            return []
        return sorted(self.samples.glob(SAMPLE_FILE_GLOB), key=sample_file_order)

    def heldout_rows(self, when: str) -> Path:
        """Held-out greedy rollouts `before` or `after` training, one row per question."""
        return self.root / f"eval_{_checked_when(when)}.jsonl"

    def heldout_summary(self, when: str) -> Path:
        return self.root / f"eval_{_checked_when(when)}.json"

    def checkpoint_dirs(self) -> list[Path]:
        """Every `checkpoints/checkpoint-N`, by N (complete or not: `RunDir` checks what resuming needs)."""
        if not self.checkpoints.is_dir():
            return []
        found = [(step, p) for p in self.checkpoints.iterdir() if (step := checkpoint_step(p)) is not None]
        return [p for _, p in sorted(found)]


def _checked_when(when: str) -> str:
    if when not in HELDOUT_WHEN:
        raise ValueError(f"held-out evaluation is {' or '.join(HELDOUT_WHEN)}, got {when!r}")
    return when


class EvalLayout:
    """Paths inside one `torl eval` output dir."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.trajectories = self.root / "trajectories.jsonl"
        self.results = self.root / "results.json"
        self.results_table = self.root / "results.md"
        self.analytics = self.root / "analytics.json"
        self.analytics_table = self.root / "analytics.md"
