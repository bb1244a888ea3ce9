"""Read what a training run or an eval left on disk, in one shape for reports.

- training run dir: ``metrics.jsonl`` (one row per step), ``samples/step_NNNNNN[.rankR].jsonl`` and,
  when ``eval_before_after`` is on, the held-out greedy evaluation ``eval_{before,after}.jsonl`` (one
  row per question) with its summary ``eval_{before,after}.json``;
- eval output dir: ``trajectories.jsonl`` (+ ``results.json``).

File names come from `torl.run_layout`.

Sample rows keep their own keys (``trajectory``, ``correct``, ``problem``, ``gold``...); eval rows
have ``benchmark``, training rows ``step``. Held-out rows are what `torl.train.heldout` writes
(``text``, ``correct``, ``used_code``..., no trajectory dict).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torl.errors import UserError
from torl.run_layout import HELDOUT_WHEN, EvalLayout, RunLayout


@dataclasses.dataclass
class HeldOut:
    """One held-out greedy evaluation of a training run (`torl.train.heldout`), before or after training."""

    when: str                       # "before" | "after"
    summary: dict                   # questions, accuracy (None: nothing scorable), code_ratio, sandbox_errors
    rows: list[dict]                # one row per question; [] when only the summary survived


@dataclasses.dataclass
class RunData:
    root: Path
    kind: str                       # "train" | "eval"
    metrics: list[dict]             # training: metrics.jsonl rows; eval: []
    samples: list[dict]             # sample rows (training dumps or eval trajectories)
    results: dict | None = None     # eval: results.json
    heldout: dict[str, HeldOut] = dataclasses.field(default_factory=dict)  # training: "before"/"after" when run
    max_tool_calls: int | None = None  # training: C from task_spec.json, when it is there
    protocol: str = "code_blocks"   # the task spec's (task_spec.json, or an eval's results.json settings)

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
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                continue
            raise UserError(f"{path}:{n} is not valid JSON; fix or delete that line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n} is not a JSON object; this file was not written by torl")
        rows.append(row)
    return rows


def read_json(path: Path) -> dict | None:
    """A JSON object file, None when it is absent; a broken one is the user's to fix."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON; fix or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; this file was not written by torl")
    return data


def load_run(root: str | Path) -> RunData:
    """A training run dir or an eval output dir; one clear error for anything else."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; pass a training run dir or a `torl eval` output dir")
    evaluation = EvalLayout(root)
    if evaluation.trajectories.exists():
        results = read_json(evaluation.results)
        task = ((results or {}).get("settings") or {}).get("task") or {}
        return RunData(root, "eval", [], read_jsonl(evaluation.trajectories), results,
                       protocol=task.get("protocol", "code_blocks"))
    run = RunLayout(root)
    heldout = load_heldout(run)
    if not run.metrics.exists() and not run.samples.is_dir():
        if heldout:
            raise UserError(f"{root} holds only the held-out evaluation ({', '.join(f'eval_{w}.json' for w in heldout)}) "
                            "and no training step yet; report it once a step is logged in metrics.jsonl")
        if evaluation.results.exists() or evaluation.config.exists():
            raise UserError(f"{root} is a `torl eval` dir without {evaluation.trajectories.name}: no sample finished "
                            "there; run the eval (it resumes) before reporting it")
        raise UserError(f"{root} has neither {run.metrics.name}/{run.samples.name}/ (training run) nor "
                        f"{evaluation.trajectories.name} (eval); point at the run's top directory")
    metrics = read_jsonl(run.metrics) if run.metrics.exists() else []
    samples = [row for path in run.sample_files() for row in read_jsonl(path)]
    spec = read_json(run.task_spec) or {}
    calls = spec.get("max_tool_calls")
    return RunData(root, "train", metrics, samples, heldout=heldout,
                   max_tool_calls=calls if isinstance(calls, int) else None, protocol=spec.get("protocol", "code_blocks"))


def load_heldout(run: RunLayout) -> dict[str, HeldOut]:
    """The held-out evaluations the run wrote, in `HELDOUT_WHEN` order; {} when it ran none."""
    found = {}
    summaries = read_json(run.summary) or {}
    for when in HELDOUT_WHEN:
        rows_path = run.heldout_rows(when)
        rows = read_jsonl(rows_path) if rows_path.exists() else []
        summary = read_json(run.heldout_summary(when)) or summaries.get(f"eval_{when}") or (heldout_summary(rows) if rows else None)
        if summary:
            found[when] = HeldOut(when, summary, rows)
    return found


def heldout_summary(rows: list[dict]) -> dict:
    """The summary `torl.train.heldout` writes, recomputed from its rows (a run killed before writing it)."""
    scored = [r for r in rows if r.get("correct") is not None]
    return {
        "questions": len(rows),
        "accuracy": sum(bool(r["correct"]) for r in scored) / len(scored) if scored else None,
        "code_ratio": sum(bool(r.get("used_code")) for r in rows) / len(rows),
        "sandbox_errors": sum(bool(r.get("sandbox_error")) for r in rows),
    }
