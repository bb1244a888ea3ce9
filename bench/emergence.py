"""Does code use emerge? SmolLM2-135M, GRPO with tool-integrated rollouts, on arithmetic it cannot do in its head.

    python bench/emergence.py --minutes 60            # the full run (about an hour on 2 cores)
    python bench/emergence.py --minutes 4 --holdout 8 # a smoke run of the same code path

Trains with configs/demo-cpu.yaml's recipe on products only (3-digit x 2-digit at difficulty 2,
plus a third term from difficulty 3), stopping cleanly when the time budget is used, then prints:
held-out greedy accuracy and code ratio before vs after, and the per-step curve of the code ratio,
training accuracy and reward. Everything is also in the run directory (metrics.jsonl, samples/).
The baseline is the same model before training, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="training-phase time budget")
    ap.add_argument("--difficulty", type=int, default=2, help="arithmetic difficulty (2: 3-digit x 2-digit)")
    ap.add_argument("--holdout", type=int, default=32, help="held-out questions for the before/after eval")
    ap.add_argument("--run_dir", default=None, help="default: runs/emergence-<timestamp>")
    ap.add_argument("overrides", nargs="*", help="extra `--setting value` pairs for torl train (after --)")
    args = ap.parse_args()

    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training

    import tempfile

    import yaml

    run_dir = args.run_dir or str(REPO / "runs" / f"emergence-{time.strftime('%Y%m%d-%H%M%S')}")
    recipe = yaml.safe_load((REPO / "configs" / "demo-cpu.yaml").read_text())
    recipe.pop("optional_train_files", None)  # arithmetic only: one skill where code decides the outcome
    recipe.update(train_tasks=["arithmetic"], train_task_difficulty=args.difficulty, train_task_count=512,
                  eval_holdout=args.holdout, eval_before_after=True, max_steps=1000, max_minutes=args.minutes,
                  save_steps=10, learning_rate=1e-5, gradient_accumulation_steps=4, run_dir=run_dir)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(recipe, f)
    torl_cfg, grpo_cfg = parse_train_args(["--config", f.name, *args.overrides])
    started = time.time()
    rc = run_training(torl_cfg, grpo_cfg)
    if rc != 0:
        return rc
    report(Path(run_dir), time.time() - started)
    return 0


def report(run_dir: Path, wall_s: float) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    print(f"\nemergence run: {run_dir}  ({len(rows)} steps, {wall_s / 60:.1f} min wall)")
    print(f"{'held-out (greedy)':20s} {'accuracy':>9s} {'code ratio':>11s}")
    for name, ev in (("before", before), ("after", after)):
        if ev:
            acc = "n/a" if ev.get("accuracy") is None else f"{ev['accuracy']:.3f}"
            print(f"{name:20s} {acc:>9s} {ev['code_ratio']:>11.3f}")
    if before and after and before.get("accuracy") is not None and after.get("accuracy") is not None:
        print(f"{'after - before':20s} {after['accuracy'] - before['accuracy']:>+9.3f} "
              f"{after['code_ratio'] - before['code_ratio']:>+11.3f}")
    print(f"\n{'step':>5s} {'code_ratio':>10s} {'accuracy':>9s} {'reward':>7s} {'step_s':>7s}")
    for r in rows:
        print(f"{r['step']:>5d} {_fmt(r.get('tools/code_ratio')):>10s} {_fmt(r.get('rewards/accuracy')):>9s} "
              f"{_fmt(r.get('reward')):>7s} {_fmt(r.get('time/step_s'), 0):>7s}")


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
