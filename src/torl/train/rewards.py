"""The GRPO reward function: `torl.reward.score` on each trajectory, plus per-step metrics and dumps.

TRL calls it once per generation batch with every dataset column and every extra field our
rollout function returned (`trajectory`, `rollout_timing`) as keyword lists. It is the one place
that sees a response, its question and its reward together, so it also logs the step's tool
metrics and writes the sample dump.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from torl.train.metrics import trajectory_metrics


class TorlReward:
    """Outcome reward with the configured scheme; `None` (no learning signal) for sandbox failures."""

    __name__ = "torl_reward"  # TRL names its reward metrics after this: rewards/torl_reward/mean

    def __init__(self, scheme: str, timings: dict[str, float], samples_dir: Path | None, render_prompt, rank: int = 0):
        self.scheme = scheme
        self.timings = timings
        self.samples_dir = None if samples_dir is None else Path(samples_dir)
        self.render_prompt = render_prompt  # question text -> the prompt the model saw, for the dumps
        self.rank = rank

    def __call__(self, prompts, completions, trajectory, question_id, problem, gold, log_metric=None,
                 trainer_state=None, rollout_timing=None, **_unused) -> list[float | None]:
        from torl.reward import score

        started = time.perf_counter()
        results = []
        for traj, answer in zip(trajectory, gold, strict=True):
            if traj["sandbox_error"]:
                results.append(None)  # our failure, not the model's: counted, never learned from
                continue
            results.append(score(traj["text"], answer, scheme=self.scheme, calls=traj["calls"]))
        rewards = [None if r is None else float(r.reward) for r in results]
        reward_s = time.perf_counter() - started
        self.timings["reward_s"] = self.timings.get("reward_s", 0.0) + reward_s

        if log_metric is not None:
            scored = [(t, r) for t, r in zip(trajectory, results) if r is not None]
            metrics = trajectory_metrics(trajectory, [bool(r and r.correct) for r in results])
            if scored:  # accuracy over the responses that could be scored
                metrics["rewards/accuracy"] = sum(bool(r.correct) for _, r in scored) / len(scored)
            timing = rollout_timing[0] if rollout_timing else {}
            metrics.update({f"time/{k}": v for k, v in timing.items()})
            metrics["time/reward_s"] = reward_s
            for name, value in metrics.items():
                log_metric(name, value)

        if self.samples_dir is not None and trainer_state is not None:
            step = trainer_state.global_step + 1  # the step these samples train; matches metrics.jsonl
            self._dump(step, prompts, question_id, problem, gold, results, trajectory)
        return rewards

    def _dump(self, step, prompts, question_id, problem, gold, results, trajectories) -> None:
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if self.rank == 0 else f".rank{self.rank}"
        path = self.samples_dir / f"step_{step:06d}{suffix}.jsonl"
        rendered: dict[str, str] = {}
        with path.open("w", encoding="utf-8") as f:
            for i, traj in enumerate(trajectories):
                res = results[i]
                if prompts[i] not in rendered:
                    rendered[prompts[i]] = self.render_prompt(prompts[i])
                row = {
                    "step": step,
                    "question_id": question_id[i],
                    "problem": problem[i],
                    "gold": gold[i],
                    "prompt": rendered[prompts[i]],
                    "reward": None if res is None else res.reward,
                    "correct": None if res is None else bool(res.correct),
                    "extracted": None if res is None else res.extracted,
                    "reason": "sandbox_error" if res is None else res.reason,
                    "trajectory": _compact(traj),
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _compact(traj: dict) -> dict:
    """The trajectory without its token-id lists (lengths kept): dumps stay readable and small."""
    out = {k: v for k, v in traj.items() if k not in ("prompt_ids", "completion_ids", "loss_mask", "logprobs")}
    out["prompt_tokens"] = len(traj["prompt_ids"])
    out["completion_tokens"] = len(traj["completion_ids"])
    return out
