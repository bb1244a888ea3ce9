"""After each generation batch is scored: the step's tool metrics into TRL's log, and the sample dump.

Runs as a `ToolGRPOTrainer.after_scoring` hook, on every process: each process reports on its own
slice of the batch; metrics are averaged over processes (every process logs the same keys), and
each process writes its own dump file (`samples/step_NNNNNN[.rankR].jsonl`). The last batch is kept
until the next one, so a health alarm (`torl.train.watch`) can keep its samples when dumps are off.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from torl.metrics.health import health_metrics
from torl.run_layout import sample_file_name
from torl.tir.trajectory import compact_trajectory
from torl.train.metrics import trajectory_metrics
from torl.train.recorder import RolloutBatch, StepRecorder


class StepReport:
    def __init__(self, recorder: StepRecorder, samples_dir: Path | None, render_prompt: Callable[[str], str],
                 rank: int = 0, health: bool = True) -> None:
        self.recorder = recorder
        self.samples_dir = None if samples_dir is None else Path(samples_dir)
        self.render_prompt = render_prompt  # question text -> the prompt the model saw, for the dumps
        self.rank = rank
        self.health = health  # the health/* ratios (health_checks)
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
            self._dump(self.samples_dir / sample_file_name(step, self.rank), step, batch)

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

    def _dump(self, path: Path, step: int, batch: RolloutBatch) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rendered: dict[str, str] = {}
        masked = batch.masked or [False] * len(batch.trajectories)
        with path.open("w", encoding="utf-8") as f:
            for question, traj, res, out in zip(batch.questions, batch.trajectories, batch.results, masked,
                                                strict=True):
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
                    "trajectory": compact_trajectory(traj),
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


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
