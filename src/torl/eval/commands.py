"""`torl eval`: benchmark a model with tool-integrated reasoning; resumable; ToRL-style table."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from torl.tir.task_flags import add_task_arguments

    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on math benchmarks (greedy / avg@k / pass@k) with code execution",
        description="Evaluate a model on math benchmarks with ToRL's tool-integrated protocol. Defaults follow "
        "ToRL's table: greedy decoding, C = 1 tool call. Rerunning the same command resumes an interrupted eval.",
    )
    p.add_argument("--model", help="HF id, local checkpoint, smollm2-135m, or the served model name (--engine openai)")
    p.add_argument("--run", help="a training run directory: its model (last checkpoint; a LoRA run's RUN_DIR/merged; "
                                 "unless --model) with exactly its task spec (template and stops, C, budget, limits, "
                                 "session, reward, tools); the task-spec flags override a field")
    p.add_argument("--benchmarks", default="aime24,amc23,math500,minerva_math,olympiadbench",
                   help="comma-separated names (local data dir or HF hub) or .jsonl/.parquet/.csv paths")
    p.add_argument("--n", type=int, default=1, help="K samples per problem (K > 1 reports avg@K and pass@K)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--engine", choices=("transformers", "vllm", "openai"), default="transformers",
                   help="transformers (default: embedded, one device) | vllm (use this for real evaluations on a GPU: "
                        "continuous batching, pip install -e '.[gpu]') | openai (a running server, --base-url)")
    p.add_argument("--device", default="auto", help="--engine transformers: auto (default: cuda when torch sees a GPU, "
                                                    "in bf16; else cpu) | cpu | cuda | cuda:N")
    p.add_argument("--base-url", help="--engine openai: the server's /v1 URL, e.g. http://localhost:8000/v1")
    p.add_argument("--api-key", help="--engine openai: bearer token, if the server wants one")
    p.add_argument("--tokenizer", help="--engine openai: the served model's tokenizer (HF id or path; default: --model)")
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    p.add_argument("--out", default=None, help="output dir (default: eval_out/<model name>)")
    p.add_argument("--data-dir", help="dir with <benchmark>.jsonl files (default: $TORL_DATA_DIR, else the benchmarks shipped with torl)")
    p.add_argument("--problem-column", help="column holding the problem text (files without a usual name)")
    p.add_argument("--answer-column", help="column holding the gold answer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=32, help="samples in flight at once")
    p.add_argument("--sandbox-url", help="use a remote sandbox server instead of the local sandbox")
    p.add_argument("--label", help="row name in the results table (default: --model)")
    p.add_argument("--tools-off-baseline", action="store_true",
                   help="also run every question with C = 0 (no interpreter), into OUT/tools_off, and report both "
                        "accuracies and their difference per benchmark")
    p.add_argument("--save-ids", action="store_true",
                   help="trajectories.jsonl rows also keep prompt_ids, completion_ids and loss_mask as sampled, so "
                        "`torl sft --data OUT/trajectories.jsonl` trains them exactly (never re-tokenized)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_task_arguments(p, base="the run's with --run, else ToRL's: template torl, C = 1, 3072 tokens; switching "
                               "--protocol to tool_calls picks template chat_tools")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torl.eval.runner import EvalConfig, run_eval
    from torl.eval.summary import print_summary
    from torl.tir.task_flags import task_overrides

    evaluated = args.model or args.run or "model"  # neither: EvalConfig says what to pass
    out = args.out or str(Path("eval_out") / Path(evaluated.rstrip("/")).name)
    cfg = EvalConfig(
        model=args.model, run=args.run, benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()],
        out_dir=out, engine=args.engine, device=args.device, base_url=args.base_url, api_key=args.api_key,
        tokenizer=args.tokenizer, overrides=task_overrides(args), n=args.n, temperature=args.temperature,
        top_p=args.top_p, limit=args.limit, data_dir=args.data_dir, problem_column=args.problem_column,
        answer_column=args.answer_column, seed=args.seed, concurrency=args.concurrency, sandbox_url=args.sandbox_url,
        model_label=args.label, tools_off_baseline=args.tools_off_baseline, save_ids=args.save_ids,
    )
    summary = run_eval(cfg, progress=not args.quiet)
    print_summary(summary, out)
    return 0
