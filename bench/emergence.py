"""Does code use emerge? SmolLM2-135M, GRPO with tool-integrated rollouts, on products it cannot do in its head.

    python bench/emergence.py                         # the demo recipe for longer (--minutes 30)
    python bench/emergence.py --ablation --steps 4    # ToRL's table in miniature: C = 0, 1, 2 side by side
    python bench/emergence.py --tools --steps 4       # the chat-model recipe: python by tool call (demo-cpu-tools.yaml)
    python bench/emergence.py --smoke                 # 1 tiny step, 4 held-out questions (~1 min): it still runs

Trains with configs/demo-cpu.yaml's recipe (products of a 3-digit and a 2-digit number, a greedy
held-out evaluation before and after) for a time budget or a number of steps, then prints held-out
greedy accuracy and code ratio before vs after, and the per-step curve of code ratio, training
accuracy, reward and step time. The baseline is the same model before training, measured in the
same run.

--ablation trains the same model on the same questions with the same number of steps (and seeds) at
C = 0 (RL without tools), C = 1 and C = 2, each in its own run directory, and prints held-out
accuracy, code ratio and mean step time side by side. At C = 0 a code block is text: it never runs.

--tools first runs an SFT cold start (configs/sft-demo-tools.yaml, --sft-steps steps on the tool-call
expert's trajectories for the same training questions), then RL from it (configs/demo-cpu-tools.yaml
--model RUN_DIR/sft), and prints held-out greedy accuracy and tool-call ratio for the base model, after
SFT and after RL. --sft-steps 0 is RL from the base model alone.

--smoke (combines with --ablation and --tools) shrinks every size -- one step of 2 prompts x 2 samples
of 32 tokens, 4 held-out questions -- and writes its run into a temporary directory that it deletes:
every stage runs (recipe, training, both evaluations, the report), the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# --smoke: the recipe's sizes cut to the least that still runs every stage (GRPO needs 2 samples a group).
# One torch thread: on a busy 2-core machine the recipe's 2 threads made the tiny step ~10x slower (302 s vs 32 s).
SMOKE_RECIPE = {"train_task_count": 16, "num_generations": 2, "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 2, "max_response_tokens": 32, "torch_threads": 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=None, help="training-phase time budget per run")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: until --minutes)")
    ap.add_argument("--holdout", type=int, default=32, help="held-out questions for the before/after eval")
    ap.add_argument("--ablation", action="store_true", help="train at C = 0, 1 and 2 and compare")
    ap.add_argument("--tools", action="store_true",
                    help="configs/demo-cpu-tools.yaml: the chat template and python by tool call (protocol tool_calls)")
    ap.add_argument("--sft-steps", type=int, default=4,
                    help="--tools: SFT cold-start steps before RL (configs/sft-demo-tools.yaml); 0 = RL from the base model")
    ap.add_argument("--run_dir", default=None, help="default: runs/emergence-<timestamp>")
    ap.add_argument("--smoke", action="store_true",
                    help="1 tiny step, 4 held-out questions, in a temporary run directory: checks the bench still runs")
    ap.add_argument("overrides", nargs="*", help="extra `--setting value` pairs for torl train (after --)")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.minutes, args.holdout, args.sft_steps = 1, None, 4, min(args.sft_steps, 1)
        with tempfile.TemporaryDirectory(prefix="torl-emergence-smoke-") as tmp:
            args.run_dir = tmp
            return run(args)
    return run(args)


def run(args) -> int:
    if args.steps is None and args.minutes is None:
        args.minutes = 30.0
    root = Path(args.run_dir or REPO / "runs" / f"emergence-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.tools and args.sft_steps > 0:
        return tools_with_cold_start(root, args)
    if not args.ablation:
        started = time.time()
        rc = train(root, args)
        if rc == 0:
            report(root, time.time() - started)
        return rc
    results = {}
    for c in (0, 1, 2):
        run_dir = root / f"C{c}"
        started = time.time()
        rc = train(run_dir, args, "--max_tool_calls", str(c))
        if rc != 0:
            return rc
        report(run_dir, time.time() - started)
        results[c] = run_dir
    ablation_table(results)
    return 0


def train(run_dir: Path, args, *extra: str) -> int:
    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training

    name = "demo-cpu-tools.yaml" if args.tools else "demo-cpu.yaml"
    recipe = yaml.safe_load((REPO / "configs" / name).read_text())
    recipe.update(train_task_count=512, eval_holdout=args.holdout, eval_before_after=True, run_dir=str(run_dir),
                  max_steps=args.steps or 1000, max_minutes=args.minutes)
    if args.smoke:
        recipe.update(SMOKE_RECIPE)
    recipe["save_steps"] = recipe["max_steps"]
    with tempfile.TemporaryDirectory(prefix="torl-emergence-") as tmp:  # kept while training: errors cite its lines
        config = Path(tmp) / "recipe.yaml"
        config.write_text(yaml.safe_dump(recipe))
        torl_cfg, grpo_cfg = parse_train_args(["--config", str(config), *extra, *args.overrides])
        return run_training(torl_cfg, grpo_cfg)


def tools_with_cold_start(root: Path, args) -> int:
    """SFT on the tool-call expert's trajectories, then RL from it; base / SFT / RL held-out numbers."""
    from torl.sft.config import parse_sft_args
    from torl.sft.trainer import run_sft

    started = time.time()
    recipe = yaml.safe_load((REPO / "configs" / "sft-demo-tools.yaml").read_text())
    recipe.update(train_task_count=512, eval_holdout=args.holdout, run_dir=str(root / "sft"),  # train()'s questions
                  max_steps=args.sft_steps, save_steps=args.sft_steps)
    with tempfile.TemporaryDirectory(prefix="torl-emergence-sft-") as tmp:
        config = Path(tmp) / "recipe.yaml"
        config.write_text(yaml.safe_dump(recipe))
        settings, sft_cfg = parse_sft_args(["--config", str(config)])
        rc = run_sft(settings, sft_cfg)
    if rc != 0:
        return rc
    sft_s = time.time() - started
    base = base_heldout(settings, root / "sft", root / "base_heldout.jsonl")
    rc = train(root / "rl", args, "--model", str(root / "sft"))
    if rc != 0:
        return rc
    report(root / "rl", time.time() - started)
    summary, _ = load(root / "rl")
    print(f"\n{'held-out (greedy)':20s} {'accuracy':>9s} {'tool calls':>11s}   (SFT {sft_s / 60:.1f} min, "
          f"total {(time.time() - started) / 60:.1f} min wall)")
    for name, ev in (("base model", base), ("after SFT", summary.get("eval_before") or {}),
                     ("after SFT + RL", summary.get("eval_after") or {})):
        print(f"{name:20s} {_fmt(ev.get('accuracy')):>9s} {_fmt(ev.get('code_ratio')):>11s}")
    return 0


def base_heldout(settings, sft_dir: Path, out: Path) -> dict:
    """The base model's greedy held-out numbers under the SFT run's task spec (what RL's "before" is for SFT)."""
    import torch

    from torl.background_loop import BackgroundLoop
    from torl.engines import make_engine
    from torl.engines.models import resolve_model
    from torl.train.config import make_sandbox
    from torl.train.heldout import evaluate_heldout

    torch.set_num_threads(settings.torch_threads or torch.get_num_threads())
    task = settings.task()
    questions = [json.loads(line) for line in (sft_dir / "heldout_questions.jsonl").read_text().splitlines()]
    loop = BackgroundLoop("emergence-base")

    async def build_sandbox():
        return make_sandbox(settings.questions_config())

    sandbox = loop.run(build_sandbox())
    try:
        engine = make_engine("transformers", resolve_model(settings.model))
        return evaluate_heldout(engine, sandbox, loop, task.prompt_template(), questions,
                                task.rollout_config(temperature=0.0), task.reward_scheme, out)
    finally:
        loop.run(sandbox.aclose())
        loop.close()


def load(run_dir: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return summary, rows


def report(run_dir: Path, wall_s: float) -> None:
    summary, rows = load(run_dir)
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    print(f"\nemergence run: {run_dir}  ({len(rows)} steps, {wall_s / 60:.1f} min wall)")
    print(f"{'held-out (greedy)':20s} {'accuracy':>9s} {'code ratio':>11s}")
    for name, ev in (("before", before), ("after", after)):
        if ev:
            print(f"{name:20s} {_fmt(ev.get('accuracy')):>9s} {_fmt(ev.get('code_ratio')):>11s}")
    if before.get("accuracy") is not None and after.get("accuracy") is not None:
        print(f"{'after - before':20s} {after['accuracy'] - before['accuracy']:>+9.3f} "
              f"{after['code_ratio'] - before['code_ratio']:>+11.3f}")
    print(f"\n{'step':>5s} {'code_ratio':>10s} {'accuracy':>9s} {'reward':>7s} {'step_s':>7s}")
    for r in rows:
        print(f"{r['step']:>5d} {_fmt(r.get('tools/code_ratio')):>10s} {_fmt(r.get('rewards/accuracy')):>9s} "
              f"{_fmt(r.get('reward')):>7s} {_fmt(r.get('time/step_s'), 0):>7s}")


def ablation_table(results: dict[int, Path]) -> None:
    print(f"\n{'C':>3s} {'acc before':>10s} {'acc after':>10s} {'code before':>11s} {'code after':>11s} "
          f"{'step_s':>7s} {'x C=0':>6s}")
    step_s = {}
    for c, run_dir in results.items():
        summary, rows = load(run_dir)
        times = [r["time/step_s"] for r in rows if r.get("time/step_s") is not None]
        step_s[c] = sum(times) / len(times) if times else None
        before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
        ratio = "-" if not step_s.get(0) or step_s[c] is None else f"{step_s[c] / step_s[0]:.2f}"
        print(f"{c:>3d} {_fmt(before.get('accuracy')):>10s} {_fmt(after.get('accuracy')):>10s} "
              f"{_fmt(before.get('code_ratio')):>11s} {_fmt(after.get('code_ratio')):>11s} "
              f"{_fmt(step_s[c], 0):>7s} {ratio:>6s}")


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
