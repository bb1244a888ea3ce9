"""Before/after check of a training run: greedy rollouts on held-out questions, same loop as training.

This is the trainer's quick sanity view (accuracy and code ratio on a few dozen questions);
benchmark-grade evaluation (avg@k, pass@k, many datasets) is `torl eval`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torl.metrics.behaviour import uses_code
from torl.tir.loop import RolloutConfig, encode_prompt, rollout_many


def evaluate_heldout(engine, sandbox, loop, template, questions: list[dict], rollout_config: RolloutConfig,
                     scheme: str, out_path: Path) -> dict:
    """Greedy-decode every question once; write one row per question to `out_path`; return the summary."""
    from torl.reward import score

    config = dataclasses.replace(rollout_config, temperature=0.0, seed=0)
    prompt_ids = [encode_prompt(template, q["problem"], engine.tokenizer, config) for q in questions]
    trajectories = loop.run(rollout_many(engine, sandbox, prompt_ids, config))
    rows = []
    for q, traj in zip(questions, trajectories, strict=True):
        result = None if traj.sandbox_error else score(traj.answer_text, q["gold"], scheme=scheme, calls=traj.calls)
        rows.append({
            "question_id": q["question_id"], "problem": q["problem"], "gold": q["gold"],
            "correct": None if result is None else bool(result.correct),
            "extracted": None if result is None else result.extracted,
            "used_code": uses_code(traj.to_dict()),
            "sandbox_error": traj.sandbox_error,
            "text": traj.text,
        })
    out_path = Path(out_path)
    with out_path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    scored = [r for r in rows if r["correct"] is not None]
    return {
        "questions": len(rows),
        "accuracy": sum(r["correct"] for r in scored) / len(scored) if scored else None,
        "code_ratio": sum(r["used_code"] for r in rows) / len(rows),
        "sandbox_errors": sum(r["sandbox_error"] for r in rows),
    }
