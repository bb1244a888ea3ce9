"""Read what a training run or an eval left on disk, in one shape for reports.

- training run dir: ``metrics.jsonl`` (one row per step) and ``samples/step_NNNNNN[.rankR].jsonl``;
- eval output dir: ``trajectories.jsonl`` (+ ``results.json``).

File names come from `torl.run_layout`.

Sample rows keep their own keys (``trajectory``, ``correct``, ``problem``, ``gold``...); eval rows
have ``benchmark``, training rows ``step``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torl.errors import UserError
from torl.run_layout import EvalLayout, RunLayout


@dataclasses.dataclass
class RunData:
    root: Path
    kind: str                       # "train" | "eval"
    metrics: list[dict]             # training: metrics.jsonl rows; eval: []
    samples: list[dict]             # sample rows (training dumps or eval trajectories)
    results: dict | None = None     # eval: results.json

    @property
    def group_key(self) -> str:
        """What samples are grouped by: training step or benchmark."""
        return "step" if self.kind == "train" else "benchmark"


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a run killed mid-write) is skipped, any other bad line is an error."""
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                continue
            raise UserError(f"{path}:{n} is not valid JSON; fix or delete that line") from None
    return rows


def load_run(root: str | Path) -> RunData:
    """A training run dir or an eval output dir; one clear error for anything else."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; pass a training run dir or a `torl eval` output dir")
    evaluation = EvalLayout(root)
    if evaluation.trajectories.exists():
        results = evaluation.results
        return RunData(root, "eval", [], read_jsonl(evaluation.trajectories),
                       json.loads(results.read_text()) if results.exists() else None)
    run = RunLayout(root)
    if not run.metrics.exists() and not run.samples.is_dir():
        raise UserError(f"{root} has neither {run.metrics.name}/{run.samples.name}/ (training run) nor "
                        f"{evaluation.trajectories.name} (eval); point at the run's top directory")
    metrics = read_jsonl(run.metrics) if run.metrics.exists() else []
    samples = [row for path in run.sample_files() for row in read_jsonl(path)]
    return RunData(root, "train", metrics, samples)
