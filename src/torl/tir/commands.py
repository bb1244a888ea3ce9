"""`torl rollout`: one tool-integrated trajectory for a question, printed readably or as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json

# What SmolLM2-135M follows (the CPU demo's protocol): its few-shot example calls Python, and a block
# runs at its closing fence (it rarely writes ```output itself); a short budget keeps a CPU run brief.
SMALL_MODEL_PROTOCOL = {"template": "torl_fewshot", "call_trigger": "block_close", "max_response_tokens": 256}
CPU_BUDGET = 1024  # other models on the CPU: ToRL's 3072 tokens would take many minutes


def register(subparsers) -> None:
    from torl.tir.task_flags import add_task_arguments

    p = subparsers.add_parser("rollout", help="run one tool-integrated trajectory and show it",
                              description="Generate one TIR trajectory: reasoning, code, interpreter output, answer.")
    p.add_argument("--model", default=None, help="HF id, local checkpoint, or smollm2-135m (default; with --run: "
                                                   "the run's model)")
    p.add_argument("--run", default=None, help="a training run directory: its model and exactly its task spec; "
                                               "the task-spec flags override single fields")
    p.add_argument("--question", required=True)
    p.add_argument("--answer", default=None, help="gold answer: also print the reward")
    p.add_argument("--engine", default="transformers", choices=["transformers", "vllm", "openai"])
    p.add_argument("--base-url", default=None, help="openai engine: the server's /v1 URL")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="--engine transformers: auto (default: cuda when torch sees a GPU, "
                                                    "in bf16; else cpu) | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the trajectory as JSON (Trajectory.to_dict)")
    add_task_arguments(p, base=f"the run's with --run; smollm2-135m: the CPU demo's (torl_fewshot, block_close, "
                               f"{SMALL_MODEL_PROTOCOL['max_response_tokens']} tokens); else ToRL's, with {CPU_BUDGET} "
                               "tokens on the CPU; switching --protocol to tool_calls picks template chat_tools")
    p.set_defaults(func=run_rollout)


def run_rollout(args: argparse.Namespace) -> int:
    from torl.engines.models import BUILTIN_MODELS, pick_device
    from torl.errors import UserError
    from torl.tir.task import TaskSpec, resolve_task, run_model
    from torl.tir.task_flags import task_overrides

    try:
        if args.engine == "transformers":
            args.device = pick_device(args.device)
        args.model = args.model or (run_model(args.run) if args.run else "smollm2-135m")
        base = None
        if not args.run and args.model.lower() in BUILTIN_MODELS:  # the protocol the small model follows, not ToRL's
            base = TaskSpec(**SMALL_MODEL_PROTOCOL)
        elif not args.run and args.device == "cpu":
            base = TaskSpec(max_response_tokens=CPU_BUDGET)
        task, _ = resolve_task(args.run, task_overrides(args), base)
    except ValueError as e:
        raise UserError(str(e)) from None
    trajectory, reward = asyncio.run(_rollout(args, task))
    if args.json:
        data = trajectory.to_dict()
        if reward is not None:
            data["reward"] = {"reward": reward.reward, "correct": reward.correct, "extracted": reward.extracted,
                              "reason": reward.reason}
        print(json.dumps(data, indent=2))
    else:
        _print_readable(trajectory, reward)
    return 0


async def _rollout(args, task):
    from torl.engines import make_engine
    from torl.engines.models import ModelNotFound
    from torl.errors import UserError
    from torl.sandbox import LocalSandbox
    from torl.tir.loop import encode_prompt, rollout

    try:
        if args.engine == "openai":
            from transformers import AutoTokenizer

            from torl.engines.models import resolve_model

            if not args.base_url:
                raise UserError("--engine openai needs --base-url (e.g. http://localhost:8000/v1)")
            engine = make_engine("openai", args.model, base_url=args.base_url,
                                 tokenizer=AutoTokenizer.from_pretrained(resolve_model(args.model)))
        elif args.engine == "vllm":
            engine = make_engine("vllm", args.model)
        else:
            engine = make_engine("transformers", args.model, device=args.device)
    except ModelNotFound as e:
        raise UserError(str(e)) from None
    config = task.rollout_config(temperature=args.temperature, seed=args.seed)
    try:
        prompt = encode_prompt(task.prompt_template(), args.question, engine.tokenizer, config)
    except ValueError as e:
        raise UserError(str(e)) from None
    async with engine:
        if task.max_tool_calls:
            async with LocalSandbox() as sandbox:
                trajectory = await rollout(engine, sandbox, prompt, config)
        else:
            trajectory = await rollout(engine, None, prompt, config)
    reward = None
    if args.answer is not None:
        from torl.reward import score

        reward = score(trajectory.answer_text, args.answer, scheme=task.reward_scheme, calls=trajectory.calls)
    return trajectory, reward


def _print_readable(trajectory, reward) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console()
    call_index = 0
    for segment in trajectory.segments:
        if segment["kind"] == "model":
            console.print(Text(segment["text"]), end="")
        else:
            call = trajectory.calls[call_index]
            call_index += 1
            status = call.error or call.result.status.value
            seconds = call.latency_s or call.result.duration_s
            console.print(Panel(Text(call.observation), title=f"{call.tool}: {status} ({seconds:.2f}s)",
                                border_style="green" if status == "ok" else "red"))
    console.print()
    console.rule()
    from torl.reward import extract_answer

    console.print(f"finish: {trajectory.finish_reason}{' (truncated)' if trajectory.truncated else ''}  "
                  f"tool calls: {trajectory.num_calls}  skipped blocks: {len(trajectory.skipped_calls)}  "
                  f"tokens: {trajectory.model_tokens} model + {trajectory.tool_tokens} interpreter")
    console.print(f"answer: {extract_answer(trajectory.text)}")
    if reward is not None:
        console.print(f"reward: {reward.reward:+g} ({'correct' if reward.correct else reward.reason})")
