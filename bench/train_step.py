"""CPU GRPO step cost: `torl train` (tool-integrated rollouts) vs plain TRL GRPO (no tools), one run.

    python bench/train_step.py                     # SmolLM2-135M, 2 prompts x 4 samples, 64 tokens, 2 steps
    python bench/train_step.py --steps 3 --generations 8

Both sides use the same model, prompts (few-shot ToRL template on arithmetic), GRPO settings and
response budget; plain TRL generates with `model.generate` inside GRPOTrainer, torl through its
rollout function (engine sharing the trainer's module + sandbox + reward + metrics + dumps).
Step 1 of each side is a warm-up and is not counted. Reported: seconds per step, generated (model)
tokens per step, tokens/s, and the ratio torl / plain in seconds per generated token
(target: <= 1.15). Tool calls add interpreter tokens the model must read (prefill), which plain
TRL never has: that cost is part of what is measured.
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
    return dict(use_cpu=True, bf16=False, gradient_checkpointing=False, num_generations=args.generations,
                per_device_train_batch_size=args.prompts * args.generations, gradient_accumulation_steps=1,
                max_completion_length=args.max_tokens, temperature=1.0, learning_rate=1e-6, beta=0.0,
                loss_type="dapo", max_steps=args.steps + 1, logging_steps=1, save_strategy="no", seed=0)


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

    config = GRPOConfig(output_dir=str(workdir / "plain"), report_to=[], **common_settings(args))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[Record()])
    trainer.train()
    return steps


def run_torl(args, workdir: Path) -> list[tuple[float, float]]:
    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training

    recipe = dict(model=args.model, engine="transformers", template="torl_fewshot", max_tool_calls=1,
                  stop_strings=[], train_tasks=["arithmetic"], train_task_difficulty=2, train_task_count=64,
                  run_dir=str(workdir / "torl"), report_to=["none"], **common_settings(args))
    recipe.pop("save_strategy")
    recipe["save_steps"] = 10_000
    config = workdir / "torl.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert run_training(*parse_train_args(["--config", str(config)])) == 0
    rows = [json.loads(line) for line in (workdir / "torl" / "metrics.jsonl").read_text().splitlines()]
    responses = args.prompts * args.generations
    return [(r["time/step_s"], r["lengths/model_tokens"] * responses) for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=2, help="measured steps per side (after one warm-up step)")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
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
