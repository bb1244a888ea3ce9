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
    from torl.tir.templates import template_names

    p = subparsers.add_parser("rollout", help="run one tool-integrated trajectory and show it",
                              description="Generate one TIR trajectory: reasoning, code, interpreter output, answer.")
    p.add_argument("--model", default=None, help="HF id, local checkpoint, or smollm2-135m (default; with --run: "
                                                   "the run's model)")
    p.add_argument("--run", default=None, help="a training run directory: its model and exactly its task spec; "
                                               "the flags below override single fields")
    p.add_argument("--question", required=True)
    p.add_argument("--answer", default=None, help="gold answer: also print the reward")
    p.add_argument("--engine", default="transformers", choices=["transformers", "vllm", "openai"])
    p.add_argument("--base-url", default=None, help="openai engine: the server's /v1 URL")
    p.add_argument("--template", default=None, help=f"prompt template: {', '.join(template_names())} (default: the "
                                                     "run's; smollm2-135m: torl_fewshot; else torl)")
    p.add_argument("--max-tool-calls", type=int, default=None, help="C (default 1)")
    p.add_argument("--call-trigger", default=None, choices=("output_fence", "block_close", "call_end", "turn_end"),
                   help="what runs a call: code_blocks: the model's ```output (ToRL; the default but for smollm2-135m) or "
                        "its closing fence (smollm2-135m's default); "
                        "tool_calls: </tool_call> (default) or the end of the model's turn")
    p.add_argument("--protocol", default=None, choices=("code_blocks", "tool_calls"),
                   help="code_blocks (```python blocks, default) or tool_calls (a chat model's <tool_call> JSON; "
                        "template chat_tools unless --template)")
    p.add_argument("--tools", default=None, help="tool_calls: comma-separated tools (python, search; default python)")
    p.add_argument("--search-corpus", default=None, help="the search tool's JSONL corpus ({\"text\", \"title\"?})")
    p.add_argument("--error-marker", action="store_true", default=None,
                   help="wrap a failed call's output in <error>...</error>")
    p.add_argument("--session", action=argparse.BooleanOptionalAction, default=None,
                   help="one interpreter session per trajectory (Jupyter-like); default: the run's, else off")
    p.add_argument("--max-observation-chars", type=int, default=None,
                   help="head+tail of the interpreter output the model sees (default: the run's, else 512)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help=f"response budget, interpreter tokens included (default: the run's; smollm2-135m: "
                        f"{SMALL_MODEL_PROTOCOL['max_response_tokens']}; else 3072, or {CPU_BUDGET} on the CPU)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="--engine transformers: auto (default: cuda when torch sees a GPU, "
                                                    "in bf16; else cpu) | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the trajectory as JSON (Trajectory.to_dict)")
    p.set_defaults(func=run_rollout)


def run_rollout(args: argparse.Namespace) -> int:
    from torl.engines.models import BUILTIN_MODELS, pick_device
    from torl.errors import UserError
    from torl.tir.task import TaskSpec, run_model

    try:
        if args.engine == "transformers":
            args.device = pick_device(args.device)
        args.model = args.model or (run_model(args.run) if args.run else "smollm2-135m")
        if args.run:
            base = TaskSpec.load(args.run)
        elif args.model.lower() in BUILTIN_MODELS:  # the protocol the small model follows, not ToRL's
            base = TaskSpec(**SMALL_MODEL_PROTOCOL)
        else:
            base = TaskSpec(max_response_tokens=CPU_BUDGET) if args.device == "cpu" else TaskSpec()
        # the tool-call flags; getattr: a Namespace built by a caller of run_rollout may predate them
        protocol, tools = getattr(args, "protocol", None), getattr(args, "tools", None)
        template, call_trigger = args.template, args.call_trigger
        if protocol == "tool_calls" and base.protocol != "tool_calls":  # the code_blocks defaults do not apply
            template = template or "chat_tools"
            call_trigger = call_trigger or "call_end"
        task, _ = base.override(template=template, max_tool_calls=args.max_tool_calls, call_trigger=call_trigger,
                                max_response_tokens=args.max_tokens, session=args.session,
                                max_observation_chars=args.max_observation_chars, protocol=protocol,
                                tools=tuple(tools.split(",")) if tools else None,
                                search_corpus=getattr(args, "search_corpus", None),
                                error_marker=getattr(args, "error_marker", None))
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

        reward = score(trajectory.text, args.answer, scheme=task.reward_scheme, calls=trajectory.calls)
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
