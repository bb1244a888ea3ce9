"""`torl eval`: benchmark a model with tool-integrated reasoning; resumable; ToRL-style table."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from torl.tir.templates import template_names

    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on math benchmarks (greedy / avg@k / pass@k) with code execution",
        description="Evaluate a model on math benchmarks with ToRL's tool-integrated protocol. Defaults follow "
        "ToRL's table: greedy decoding, C = 1 tool call. Rerunning the same command resumes an interrupted eval.",
    )
    p.add_argument("--model", help="HF id, local checkpoint, smollm2-135m, or the served model name (--engine openai)")
    p.add_argument("--run", help="a training run directory: its model (last checkpoint; a LoRA run's RUN_DIR/merged; "
                                 "unless --model) with exactly its task spec (template and stops, C, budget, limits, "
                                 "session, reward); flags below override a field")
    p.add_argument("--benchmarks", default="aime24,amc23,math500,minerva_math,olympiadbench",
                   help="comma-separated names (local data dir or HF hub) or .jsonl/.parquet/.csv paths")
    p.add_argument("--max-tool-calls", type=int, help="C: executed code calls per response (0 = none; default 1)")
    p.add_argument("--protocol", choices=("code_blocks", "tool_calls"),
                   help="code_blocks (```python blocks, default) | tool_calls (a chat model's <tool_call> JSON through "
                        "its chat template; template chat_tools unless --template)")
    p.add_argument("--tools", help="tool_calls: comma-separated tools (python, search; default python)")
    p.add_argument("--search-corpus", help="the search tool's JSONL corpus ({\"text\", \"title\"?} per line)")
    p.add_argument("--error-marker", action="store_true", default=None,
                   help="wrap a failed call's output in <error>...</error>")
    p.add_argument("--call-trigger", choices=("output_fence", "block_close", "call_end", "turn_end"),
                   help="what runs a code block: the model's ```output (ToRL, default) or its closing fence")
    p.add_argument("--n", type=int, default=1, help="K samples per problem (K > 1 reports avg@K and pass@K)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, help="response budget, interpreter tokens included (default: the run's "
                                                   "task spec with --run, else 3072 as the GPU recipes train)")
    p.add_argument("--engine", choices=("transformers", "vllm", "openai"), default="transformers",
                   help="transformers (default: embedded, one device) | vllm (use this for real evaluations on a GPU: "
                        "continuous batching, pip install -e '.[gpu]') | openai (a running server, --base-url)")
    p.add_argument("--device", default="auto", help="--engine transformers: auto (default: cuda when torch sees a GPU, "
                                                    "in bf16; else cpu) | cpu | cuda | cuda:N")
    p.add_argument("--base-url", help="--engine openai: the server's /v1 URL, e.g. http://localhost:8000/v1")
    p.add_argument("--api-key", help="--engine openai: bearer token, if the server wants one")
    p.add_argument("--tokenizer", help="--engine openai: the served model's tokenizer (HF id or path; default: --model)")
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    p.add_argument("--template", help=f"prompt template: {', '.join(template_names())} (default: the run's, else torl)")
    p.add_argument("--session", action=argparse.BooleanOptionalAction, default=None,
                   help="one interpreter session per trajectory (Jupyter-like); default: the run's, else off")
    p.add_argument("--max-observation-chars", type=int,
                   help="head+tail of the interpreter output the model sees (default: the run's, else 512)")
    p.add_argument("--out", default=None, help="output dir (default: eval_out/<model name>)")
    p.add_argument("--data-dir", help="dir with <benchmark>.jsonl files (default: $TORL_DATA_DIR, else the benchmarks shipped with torl)")
    p.add_argument("--problem-column", help="column holding the problem text (files without a usual name)")
    p.add_argument("--answer-column", help="column holding the gold answer")
    p.add_argument("--reward-scheme", help="torl (+1/-1, default) | binary | torl_exec_penalty")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=32, help="samples in flight at once")
    p.add_argument("--sandbox-url", help="use a remote sandbox server instead of the local sandbox")
    p.add_argument("--exec-timeout", type=float, help="seconds per code call (default 10)")
    p.add_argument("--label", help="row name in the results table (default: --model)")
    p.add_argument("--tools-off-baseline", action="store_true",
                   help="also run every question with C = 0 (no interpreter), into OUT/tools_off, and report both "
                        "accuracies and their difference per benchmark")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torl.eval.runner import EvalConfig, run_eval
    from torl.eval.summary import print_summary

    evaluated = args.model or args.run or "model"  # neither: EvalConfig says what to pass
    out = args.out or str(Path("eval_out") / Path(evaluated.rstrip("/")).name)
    cfg = EvalConfig(
        model=args.model, run=args.run, benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()], out_dir=out,
        engine=args.engine, device=args.device, base_url=args.base_url, api_key=args.api_key, tokenizer=args.tokenizer, template=args.template,
        max_tool_calls=args.max_tool_calls, call_trigger=args.call_trigger, n=args.n, temperature=args.temperature, top_p=args.top_p,
        max_tokens=args.max_tokens, limit=args.limit, data_dir=args.data_dir, problem_column=args.problem_column,
        answer_column=args.answer_column, reward_scheme=args.reward_scheme, seed=args.seed,
        concurrency=args.concurrency, sandbox_url=args.sandbox_url, exec_timeout=args.exec_timeout,
        model_label=args.label, tools_off_baseline=args.tools_off_baseline, session=args.session,
        max_observation_chars=args.max_observation_chars, protocol=args.protocol,
        tools=tuple(args.tools.split(",")) if args.tools else None, search_corpus=args.search_corpus,
        error_marker=args.error_marker,
    )
    summary = run_eval(cfg, progress=not args.quiet)
    print_summary(summary, out)
    return 0
