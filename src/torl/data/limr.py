"""LIMR selection: keep the questions whose learning trajectory follows the run's (arXiv 2502.11886).

Learning Impact Measurement (LIM), as defined in the LIMR paper and its released `lim` tool:
for question i and epoch k, r_i^k is the question's accuracy in that epoch (share of sampled
responses graded correct) and r_avg^k the mean of r_i^k over all questions. The score

    s_i = 1 - sum_k (r_i^k - r_avg^k)^2 / sum_k (1 - r_avg^k)^2

is 1 when the question moves exactly with the average curve and falls as it deviates; the
denominator is the deviation of an always-solved question, so questions that are solved from the
start (nothing to learn) or never solved score low. LIMR kept s_i >= 0.6 (1,389 of 8,523).

Sample dumps (written by the trainer): `<run>/samples/step_<NNNNNN>.jsonl`, one row per sampled
response with at least `step`, `question_id` and `correct` (or `reward`). A question's epochs are
(a) `(step - first_step) // steps_per_epoch` when given, else (b) the rows' `epoch` key when
present, else (c) the order of the distinct steps in which the question was sampled (its 1st,
2nd, ... visit), which fits a dataset iterated once per epoch. Epochs a question missed are filled
from its nearest observed epoch (LIMR fills forward) and counted in the report.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from torl.data.records import DataError, question_to_record
from torl.data.report import StageReport
from torl.question import make_question
from torl.run_layout import SAMPLE_FILE_GLOB, RunLayout, sample_file_order

REQUIRED_KEYS = ("step", "question_id")


def sample_files(run_dir: str | Path) -> list[Path]:
    """The run's dump files in step order (`<run>/samples/*.jsonl`, or `run_dir` itself)."""
    run_dir = Path(run_dir)
    run = RunLayout(run_dir)
    folder = run.samples if run.samples.is_dir() else run_dir
    if not folder.is_dir():
        raise DataError(f"run directory not found: {run_dir}")
    files = sorted(folder.glob("*.jsonl"), key=sample_file_order)  # a folder of dumps under other names works too
    if not files:
        raise DataError(f"no sample dumps (*.jsonl) in {folder}; the trainer writes {run.samples.name}/{SAMPLE_FILE_GLOB}")
    return files


def load_samples(run_dir: str | Path, signal: str = "correct") -> list[dict]:
    """Reads every dump row, checking the keys LIM needs; errors name the file and line."""
    if signal not in ("correct", "reward"):
        raise DataError(f"signal must be 'correct' or 'reward', got {signal!r}")
    rows = []
    for path in sample_files(run_dir):
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                missing = [k for k in (*REQUIRED_KEYS, signal) if not isinstance(row, dict) or k not in row]
                if missing:
                    raise DataError(f"{path}:{lineno}: sample row lacks {missing}")
                if not isinstance(row["step"], int) or not isinstance(row[signal], (int, float)):
                    raise DataError(f"{path}:{lineno}: `step` must be an int and `{signal}` a number/bool")
                rows.append(row)
    if not rows:
        raise DataError(f"sample dumps in {run_dir} hold no rows")
    return rows


@dataclass
class Trajectories:
    """Per-question accuracy by epoch: `values[i, k]` for `question_ids[i]`, after filling."""

    question_ids: list[str]
    values: np.ndarray
    observed: np.ndarray  # bool mask: which points came from samples (the rest were filled)
    grouping: str


def build_trajectories(rows: list[dict], steps_per_epoch: int | None = None,
                       signal: str = "correct") -> Trajectories:
    """Groups sample rows into per-question, per-epoch accuracies (see module docstring)."""
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise DataError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    values = [float(r[signal]) for r in rows]
    if signal == "reward":  # rescale to [0, 1] so the formula's "1 = always solved" holds
        lo, hi = min(values), max(values)
        values = [(v - lo) / (hi - lo) if hi > lo else 1.0 for v in values]
    if steps_per_epoch is not None:
        grouping, first = f"steps_per_epoch={steps_per_epoch}", min(r["step"] for r in rows)
        epoch_of = [(r["step"] - first) // steps_per_epoch for r in rows]
    elif all("epoch" in r for r in rows):
        grouping, epoch_of = "epoch key", [int(r["epoch"]) for r in rows]
    else:
        grouping = "visit order"
        steps_by_q: dict[str, set[int]] = defaultdict(set)
        for r in rows:
            steps_by_q[str(r["question_id"])].add(r["step"])
        visit = {q: {s: k for k, s in enumerate(sorted(steps))} for q, steps in steps_by_q.items()}
        epoch_of = [visit[str(r["question_id"])][r["step"]] for r in rows]
    epochs = sorted(set(epoch_of))
    col = {e: k for k, e in enumerate(epochs)}
    qids = sorted({str(r["question_id"]) for r in rows})
    row_of = {q: i for i, q in enumerate(qids)}
    sums = np.zeros((len(qids), len(epochs)))
    counts = np.zeros_like(sums)
    for r, v, e in zip(rows, values, epoch_of):
        i, k = row_of[str(r["question_id"])], col[e]
        sums[i, k] += v
        counts[i, k] += 1
    observed = counts > 0
    acc = np.where(observed, sums / np.maximum(counts, 1), np.nan)
    for i in range(len(qids)):  # fill gaps: forward from the last seen point, leading gaps backward
        seen = np.flatnonzero(observed[i])
        for k in np.flatnonzero(~observed[i]):
            before = seen[seen < k]
            acc[i, k] = acc[i, before[-1]] if before.size else acc[i, seen[0]]
    return Trajectories(qids, acc, observed, grouping)


def lim_scores(values: np.ndarray) -> np.ndarray:
    """LIM score of each row of `values` (questions x epochs, accuracies in [0, 1])."""
    avg = values.mean(axis=0)
    denom = float(((1.0 - avg) ** 2).sum())
    dev = ((values - avg) ** 2).sum(axis=1)
    if denom == 0.0:  # every question always solved: all equal the average curve
        return np.ones(len(values))
    return 1.0 - dev / denom


def records_from_samples(rows: list[dict]) -> list[dict]:
    """One record per question seen in the dumps (for selecting without the original dataset)."""
    seen: dict[str, dict] = {}
    for r in rows:
        q = str(r["question_id"])
        if q not in seen:
            if not r.get("problem") or r.get("gold") in (None, ""):
                raise DataError(f"sample rows of {q!r} lack `problem`/`gold`; pass the dataset with --input")
            seen[q] = question_to_record(make_question(q, r["problem"], r["gold"]), source="run")
    return list(seen.values())


def limr_select(
    records: list[dict] | None,
    run_dir: str | Path,
    threshold: float | None = 0.6,
    top_k: int | None = None,
    steps_per_epoch: int | None = None,
    signal: str = "correct",
) -> tuple[list[dict], StageReport, list[dict]]:
    """Keeps the records whose LIM score is >= threshold, or the `top_k` highest (ties broken by
    id). `records=None` selects from the questions in the dumps. Returns (kept records, report,
    per-question scores sorted best first)."""
    if (threshold is None) == (top_k is None):
        raise DataError("give exactly one of threshold or top_k")
    if top_k is not None and top_k < 1:
        raise DataError(f"top_k must be >= 1, got {top_k}")
    start = time.perf_counter()
    rows = load_samples(run_dir, signal)
    traj = build_trajectories(rows, steps_per_epoch, signal)
    scores = lim_scores(traj.values)
    score_of = dict(zip(traj.question_ids, scores.tolist()))
    records = records_from_samples(rows) if records is None else records

    ranked = sorted(score_of, key=lambda q: (-score_of[q], q))
    chosen = set(ranked[:top_k]) if top_k is not None else {q for q in ranked if score_of[q] >= threshold}
    report = StageReport("limr", n_in=len(records), warn_share=1.0, details={
        "run_dir": str(run_dir), "grouping": traj.grouping, "epochs": int(traj.values.shape[1]),
        "questions_in_run": len(traj.question_ids), "filled_points": int((~traj.observed).sum()),
        "threshold": threshold, "top_k": top_k, "signal": signal,
        "average_curve": [round(v, 4) for v in traj.values.mean(axis=0).tolist()],
    })
    ids = {r["id"] for r in records}
    report.details["run_questions_not_in_dataset"] = sum(q not in ids for q in traj.question_ids)
    kept = []
    for r in records:
        if r["id"] not in score_of:
            report.remove("not_in_run", r)
        elif r["id"] not in chosen:
            report.remove("low_learning_impact", r, score=round(score_of[r["id"]], 4))
        else:
            kept.append(r)
    position = {q: i for i, q in enumerate(traj.question_ids)}
    table = [{"question_id": q, "score": score_of[q], "selected": q in chosen,
              "trajectory": [round(v, 4) for v in traj.values[position[q]].tolist()]}
             for q in ranked]
    return kept, report.finish(len(kept), time.perf_counter() - start), table
