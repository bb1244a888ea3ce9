"""CPU GRPO step cost: `torl train` (tool-integrated rollouts) vs plain TRL GRPO (no tools), one run.

    python bench/train_step.py                     # SmolLM2-135M, 2 prompts x 4 samples, 64 tokens, 2 steps
    python bench/train_step.py --steps 3 --generations 8
    python bench/train_step.py --compare health    # the same torl step with health_checks on vs off
    python bench/train_step.py --compare zero-signal   # zero_signal_updates compute vs coast vs skip
    python bench/train_step.py --compare share-prompt  # the update with share_prompt_forward off vs on

Both sides use the same model, prompts (few-shot ToRL template on arithmetic), GRPO settings and
response budget; plain TRL generates with `model.generate` inside GRPOTrainer, torl through its
rollout function (engine sharing the trainer's module + sandbox + reward + metrics + dumps).
Step 1 of each side is a warm-up and is not counted. Reported: seconds per step, generated (model)
tokens per step, tokens/s, and the ratio torl / plain in seconds per generated token
(target: <= 1.15). Tool calls add interpreter tokens the model must read (prefill), which plain
TRL never has: that cost is part of what is measured.

`--compare health`: two torl runs that differ only in `health_checks` (the health/* ratios and the
alarm monitor); reported: seconds per step of each, their ratio, and the health work itself timed
directly on the run's own trajectories and metrics rows, as a share of the step (target: <= 3%;
the end-to-end ratio of two runs carries the machine's noise, the direct share does not).

`--compare zero-signal`: three torl runs on batches with no GRPO signal at all (a scripted policy
on the real model answers every question wrong, so every group's rewards are equal), one per
`zero_signal_updates` mode; generation is then nearly free, so a step is its update (TRL's
forward/backward and the optimizer step under `compute`). Reported: seconds per step and the ratio
of each mode to `compute`.

`--compare share-prompt`: two torl runs that differ only in `share_prompt_forward` (one forward of a
group's shared prompt in the update instead of one per sample), on the same no-signal batches with
`zero_signal_updates: compute`, so every step runs TRL's full update and nothing else varies.
Reported: update seconds per step of each, their ratio, and the loss/grad_norm of each step side by
side (equal up to float rounding: the gradient is the same).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def common_settings(args) -> dict:
    return {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "num_generations": args.generations,
            "per_device_train_batch_size": args.prompts * args.generations, "gradient_accumulation_steps": 1,
            "temperature": 1.0, "learning_rate": 1e-6, "beta": 0.0,
            "loss_type": "dapo", "max_steps": args.steps + 1, "logging_steps": 1, "save_strategy": "no", "seed": 0}


def questions(args) -> list[dict]:
    from torl.data.synthetic import generate_tasks

    return generate_tasks(["arithmetic"], 64, seed=0, difficulty=2)


def run_plain_trl(args, workdir: Path) -> list[tuple[float, float]]:
    """(seconds, generated tokens) per step for GRPOTrainer's own generation, no tools."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from torl.engines.models import resolve_model
    from torl.reward import score
    from torl.tir.templates import get_template

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    template = get_template("torl_fewshot")
    rows = [{"prompt": template.render(q["problem"]), "gold": q["answer"]} for q in questions(args)]

    def reward(completions, gold, **_):
        return [score(text, answer).reward for text, answer in zip(completions, gold)]

    steps: list[tuple[float, float]] = []
    responses = args.prompts * args.generations

    class Record(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "step_time" in logs:
                steps.append((logs["step_time"], logs["completions/mean_length"] * responses))

    config = GRPOConfig(output_dir=str(workdir / "plain"), report_to=[], max_completion_length=args.max_tokens,
                        **common_settings(args))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[Record()])
    trainer.train()
    return steps


def run_torl(args, workdir: Path) -> list[tuple[float, float]]:
    rows = torl_rows(args, workdir / "torl")
    responses = args.prompts * args.generations
    return [(r["time/step_s"], r["lengths/model_tokens"] * responses) for r in rows]


def torl_rows(args, run_dir: Path, engine_factory=None, **settings) -> list[dict]:
    """metrics.jsonl rows of one `torl train` run (warm-up step included) with `settings` on top."""
    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training

    recipe = dict(model=args.model, engine="transformers", template="torl_fewshot", max_tool_calls=1,
                  extra_stop=[], train_tasks=["arithmetic"], train_task_difficulty=2, train_task_count=64,
                  run_dir=str(run_dir), report_to=["none"], max_response_tokens=args.max_tokens, **common_settings(args))
    recipe.pop("save_strategy")
    recipe["save_steps"] = 10_000
    recipe.update(settings)
    config = run_dir.parent / f"{run_dir.name}.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert run_training(*parse_train_args(["--config", str(config)]), engine_factory=engine_factory) == 0
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def compare_health(args, workdir: Path) -> None:
    """health_checks on vs off: end to end, and the health work itself timed on the run's own data."""
    import time

    from torl.metrics.alarms import HealthMonitor
    from torl.metrics.health import health_metrics
    from torl.run_layout import RunLayout

    on = torl_rows(args, workdir / "health-on", health_checks=True)
    off = torl_rows(args, workdir / "health-off", health_checks=False)
    on_s, off_s = (statistics.mean(r["time/step_s"] for r in rows[1:]) for rows in (on, off))
    on_tok, off_tok = (statistics.mean(r["lengths/model_tokens"] for r in rows[1:]) for rows in (on, off))
    # The same computations the step runs, on the trajectories and rows the "on" run produced.
    batches = [[json.loads(line)["trajectory"] for line in path.read_text().splitlines()]
               for path in RunLayout(workdir / "health-on").sample_files()]
    repeats = 20
    started = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            health_metrics(batch)
        monitor = HealthMonitor()
        for step, row in enumerate(on, 1):
            monitor.update(step, row)
            monitor.alarm_metrics()
    health_s = (time.perf_counter() - started) / (repeats * len(batches))
    print(f"\n{'health_checks':14s} {'s/step':>8s} {'model tokens/response':>22s}")
    print(f"{'on':14s} {on_s:>8.2f} {on_tok:>22.1f}\n{'off':14s} {off_s:>8.2f} {off_tok:>22.1f}")
    print(f"\non / off, seconds per step: {on_s / off_s:.3f}x (end to end, one run each: machine noise included)")
    print(f"health work per step, timed directly: {1000 * health_s:.2f} ms = {100 * health_s / off_s:.3f}% of a step "
          f"({len(batches[0])} responses; target <= 3%)")


def always_wrong_engine(kind, model, tokenizer, model_path, grpo_cfg):
    """A scripted ToRL-format policy that boxes a wrong number: every group's rewards are equal (no signal)."""
    from torl.engines.scripted import ScriptedEngine

    def script(prompt_ids, turn):
        if turn == 0:
            return "Let me compute it with Python first.\n```python\nprint(12 * 34)\n```\n```output"
        return "So the answer is \\boxed{-7777}."

    return ScriptedEngine(tokenizer, script), False


def compare_zero_signal(args, workdir: Path) -> None:
    results = {}
    for mode in ("compute", "coast", "skip"):
        rows = torl_rows(args, workdir / f"zero-{mode}", engine_factory=always_wrong_engine,
                         zero_signal_updates=mode)[1:]
        assert all(r["signal/informative_groups"] == 0 for r in rows), "a batch had signal: not what is measured"
        results[mode] = (statistics.mean(r["time/step_s"] for r in rows),
                         statistics.mean(r["time/update_s"] for r in rows), rows[0]["lengths/model_tokens"])
    print(f"\n{'zero_signal_updates':20s} {'s/step':>8s} {'update s':>9s} {'vs compute':>11s}")
    for mode, (step_s, update_s, _) in results.items():
        print(f"{mode:20s} {step_s:>8.3f} {update_s:>9.3f} {step_s / results['compute'][0]:>10.3f}x")
    print(f"\n(no-signal batches of {args.prompts * args.generations} responses, "
          f"{results['compute'][2]:.0f} model tokens each; ratio = seconds per step / compute's)")


def compare_share_prompt(args, workdir: Path) -> None:
    runs = {share: torl_rows(args, workdir / f"share-{share}", engine_factory=always_wrong_engine,
                             zero_signal_updates="compute", share_prompt_forward=share) for share in (False, True)}
    update = {share: statistics.mean(r["time/update_s"] for r in rows[1:]) for share, rows in runs.items()}
    print(f"\n{'share_prompt_forward':21s} {'update s/step':>14s}")
    for share in (False, True):
        print(f"{str(share).lower():21s} {update[share]:>14.3f}")
    print(f"\non / off, update seconds per step: {update[True] / update[False]:.3f}x")
    print(f"\n{'step':>4s} {'loss off':>12s} {'loss on':>12s} {'grad_norm off':>14s} {'grad_norm on':>13s}")
    for off, on in zip(runs[False], runs[True], strict=True):
        print(f"{off['step']:>4d} {off['loss']:>12.6f} {on['loss']:>12.6f} {off['grad_norm']:>14.6f} {on['grad_norm']:>13.6f}")
    tokens = runs[True][0]["lengths/model_tokens"]
    print(f"\n({args.prompts} prompts x {args.generations} samples per step, {tokens:.0f} model tokens per response)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=2, help="measured steps per side (after one warm-up step)")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--compare", choices=("plain", "health", "zero-signal", "share-prompt"), default="plain",
                    help="plain: torl vs plain TRL; health: health_checks on vs off; "
                         "zero-signal: zero_signal_updates compute vs coast vs skip; "
                         "share-prompt: share_prompt_forward off vs on")
    ap.add_argument("--smoke", action="store_true",
                    help="the smallest run that exercises every path (1 step, 16 tokens): checks the bench still works; "
                         "its ratio means little")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.prompts, args.generations, args.max_tokens = 1, 1, 2, 16
    if args.compare != "plain":
        with tempfile.TemporaryDirectory() as tmp:
            compare = {"health": compare_health, "zero-signal": compare_zero_signal,
                       "share-prompt": compare_share_prompt}[args.compare]
            compare(args, Path(tmp))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        plain = run_plain_trl(args, Path(tmp))[1:]
        torl = run_torl(args, Path(tmp))[1:]

    def per_token(steps):
        return sum(s for s, _ in steps) / max(1.0, sum(t for _, t in steps))

    print(f"\n{'side':12s} {'s/step':>8s} {'gen tok/step':>13s} {'tok/s':>7s} {'s/token':>8s}")
    for name, steps in (("plain TRL", plain), ("torl", torl)):
        secs = statistics.mean(s for s, _ in steps)
        toks = statistics.mean(t for _, t in steps)
        print(f"{name:12s} {secs:>8.1f} {toks:>13.0f} {toks / secs:>7.2f} {per_token(steps):>8.3f}")
    ratio = per_token(torl) / per_token(plain)
    print(f"\ntorl / plain TRL, seconds per generated token: {ratio:.2f}x (target <= 1.15x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
