"""What one training step records and logs: its pieces' reports, the step metrics, dumps, metrics.jsonl.

Read top to bottom, in the order a step runs:

- `StepRecorder` / `RolloutBatch`: the rollout function reports its wall-time split (`ActivityClock`)
  and the generation batch (trajectories and the questions they answer, which dynamic sampling may
  have changed); the reward function reports its scores. One object with named methods instead of a
  shared mutable dict, so a typo'd key fails loudly and each piece's contribution is visible here.
- `StepReport` (a `ToolGRPOTrainer.after_scoring` hook, on every process): the step's tool metrics
  (`torl.metrics.behaviour` under `TRAINING_METRICS` names, `torl.metrics.health`) into TRL's log,
  averaged over processes, and each process's sample dump (`samples/step_NNNNNN[.rankR].jsonl`):
  compact trajectories, or with `with_ids` (`dump_sample_ids`) the very prompt/completion ids and
  loss mask the rollout handed TRL, for exact SFT or replay. The last batch is kept until the next
  one, so a health alarm (`torl.train.watch`) can keep its samples when dumps are off.
- `MetricsFileCallback`: the step's wall time into TRL's log, the whole row appended to
  metrics.jsonl; `truncate_metrics` drops the rows a resumed run will redo.

Every name logged here is defined in torl/metrics/METRICS.md; keep the two in sync.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

from torl.metrics.behaviour import TRAINING_METRICS, behaviour_metrics
from torl.metrics.health import health_metrics
from torl.run_layout import sample_file_name
from torl.tir.trajectory import compact_trajectory


@dataclasses.dataclass
class RolloutBatch:
    trajectories: list[dict]                    # Trajectory.to_dict() per sample, in batch order
    questions: list[dict]                       # {question_id, problem, gold} per sample
    stats: dict[str, float]                     # rollout-side metrics (time/*, signal/* of dynamic sampling)
    results: list | None = None                 # RewardResult per sample (None = sandbox failure), once scored
    masked: list[bool] | None = None            # filter_void_turns: samples whose env_mask was zeroed (no loss)


class StepRecorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)
        self._batch: RolloutBatch | None = None

    # --- wall time (seconds add up within a step)
    def add_time(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] += seconds

    def take_times(self) -> dict[str, float]:
        with self._lock:
            seconds, self._seconds = dict(self._seconds), defaultdict(float)
            return seconds

    # --- the generation batch
    def record_rollouts(self, batch: RolloutBatch) -> None:
        self._batch = batch

    def record_scores(self, results: list) -> None:
        if self._batch is None or len(results) != len(self._batch.trajectories):
            raise RuntimeError("scores reported for a batch the rollout function did not record")
        self._batch.results = list(results)

    def take_batch(self) -> RolloutBatch | None:
        batch, self._batch = self._batch, None
        return batch


class ActivityClock:
    """Splits a rollout's wall time into *generation* and *tools* while both run concurrently.

    Any moment with at least one `generate` call in flight counts as generation; a moment with
    only sandbox calls in flight counts as tools (the sandbox is then on the critical path).
    Thread-safe because engines may call back from worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = {"generation": 0, "tools": 0}
        self._spent = {"generation": 0.0, "tools": 0.0}
        self._since = time.perf_counter()

    def _advance(self) -> None:
        now = time.perf_counter()
        if self._active["generation"]:
            self._spent["generation"] += now - self._since
        elif self._active["tools"]:
            self._spent["tools"] += now - self._since
        self._since = now

    def enter(self, kind: str) -> None:
        with self._lock:
            self._advance()
            self._active[kind] += 1

    def leave(self, kind: str) -> None:
        with self._lock:
            self._advance()
            self._active[kind] -= 1

    def take(self) -> dict[str, float]:
        """Seconds spent per kind since the last `take`, then reset."""
        with self._lock:
            self._advance()
            spent, self._spent = self._spent, {"generation": 0.0, "tools": 0.0}
            return spent


def trajectory_metrics(trajectories: list[dict], correct: list[bool | None]) -> dict[str, float]:
    """Namespaced metrics of one step's responses (trajectory dicts; `correct` None = not scored).

    An empty ratio ("nothing to measure", None in `behaviour_metrics`) is NaN here, because TRL's
    metric buffers hold floats; metrics.jsonl writes it as null.
    """
    measured = behaviour_metrics(trajectories, correct)
    return {name: math.nan if measured[key] is None else float(measured[key]) for name, key in TRAINING_METRICS.items()}


class StepReport:
    def __init__(self, recorder: StepRecorder, samples_dir: Path | None, render_prompt: Callable[[str], str],
                 rank: int = 0, health: bool = True, max_rows: int = 0, with_ids: bool = False) -> None:
        self.recorder = recorder
        self.samples_dir = None if samples_dir is None else Path(samples_dir)
        self.render_prompt = render_prompt  # question text -> the prompt the model saw, for the dumps
        self.rank = rank
        self.health = health  # the health/* ratios (health_checks)
        self.max_rows = max_rows  # dump_samples_max: responses dumped per step over all processes (0 = all)
        self.with_ids = with_ids  # dump_sample_ids: rows keep prompt_ids / completion_ids / loss_mask
        self.last: tuple[int, RolloutBatch] | None = None  # (step, batch) of the latest scored batch

    def __call__(self, trainer, _batch_tensors) -> None:
        batch = self.recorder.take_batch()
        if batch is None or batch.results is None:
            raise RuntimeError("a generation batch was scored without its rollouts and rewards being recorded")
        metrics = batch_metrics(batch, health=self.health)
        for name, value in _mean_over_processes(trainer.accelerator, metrics).items():
            trainer._metrics["train"][name].append(value)
        step = trainer.state.global_step + 1  # the step these samples train (= metrics.jsonl)
        self.last = (step, batch)
        if self.samples_dir is not None:
            keep = -(-self.max_rows // trainer.accelerator.num_processes) if self.max_rows else None
            self._dump(self.samples_dir / sample_file_name(step, self.rank), step, batch, keep)

    def keep_samples(self, step: int, alarm_dir: Path) -> Path | None:
        """This process's dump of `step`'s samples: the regular one when dumps are on, else written now
        into `alarm_dir`; None when that step's batch is no longer held."""
        if self.samples_dir is not None:
            return self.samples_dir / sample_file_name(step, self.rank)
        if self.last is None or self.last[0] != step:
            return None
        path = Path(alarm_dir) / sample_file_name(step, self.rank)
        self._dump(path, step, self.last[1])
        return path

    def _dump(self, path: Path, step: int, batch: RolloutBatch, keep: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rendered: dict[str, str] = {}
        masked = batch.masked or [False] * len(batch.trajectories)
        rows = list(zip(batch.questions, batch.trajectories, batch.results, masked, strict=True))
        if keep is not None:
            rows = sampled_groups(rows, keep, seed=(step, self.rank))
        with path.open("w", encoding="utf-8") as f:
            for question, traj, res, out in rows:
                problem = question["problem"]
                if problem not in rendered:
                    rendered[problem] = self.render_prompt(problem)
                row = {
                    "step": step, "question_id": question["question_id"], "problem": problem,
                    "gold": question["gold"], "prompt": rendered[problem],
                    "reward": None if res is None else res.reward,
                    "correct": None if res is None else bool(res.correct),
                    "extracted": None if res is None else res.extracted,
                    "reason": "sandbox_error" if res is None else res.reason,
                    "loss_masked": bool(out),  # filter_void_turns took it out of the loss
                    # with_ids: the trajectory's own lists, which the rollout returned to TRL as they are
                    # (its loss_mask is the env_mask, unless loss_masked zeroed that)
                    "trajectory": compact_trajectory(traj, with_ids=self.with_ids),
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")



def sampled_groups(rows: list[tuple], keep: int, seed) -> list[tuple]:
    """At most `keep` rows (at least one group): whole GRPO groups (consecutive rows of one question),
    chosen at random but the same for the same `seed`, in their batch order."""
    import random

    groups: list[list[tuple]] = []
    for row in rows:
        if groups and groups[-1][0][0]["question_id"] == row[0]["question_id"]:
            groups[-1].append(row)
        else:
            groups.append([row])
    if len(rows) <= keep:
        return rows
    count = max(1, keep // max(len(g) for g in groups))
    chosen = sorted(random.Random(repr(seed)).sample(range(len(groups)), min(count, len(groups))))
    return [row for i in chosen for row in groups[i]]

def batch_metrics(batch: RolloutBatch, health: bool = True) -> dict[str, float]:
    """The step's tool/length metrics, accuracy over the responses that could be scored, rollout stats,
    and (`health`) the degenerate-turn ratios."""
    results = batch.results
    metrics = trajectory_metrics(batch.trajectories, [None if r is None else bool(r.correct) for r in results])
    if health:  # torl.metrics.health; an empty ratio is NaN in TRL's buffers, null in metrics.jsonl
        metrics.update({k: math.nan if v is None else v for k, v in health_metrics(batch.trajectories).items()})
    metrics.update(batch.stats)
    return metrics


def _mean_over_processes(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return metrics
    names = sorted(metrics)  # the same order on every process
    local = torch.tensor([metrics[n] for n in names], dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(local.unsqueeze(0))  # (processes, metrics)
    return {n: float(torch.nanmean(gathered[:, i])) for i, n in enumerate(names)}


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


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume: drop rows logged after the checkpoint we continue from (they will be redone)."""
    path = Path(path)
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))
