"""`torl data …`: one sub-command per curation stage, plus `pipeline` for all of them.

Each stage command reads records (`--input`), writes `<out>/data.<format>`, `stats.json` and
`report.md`, and prints a one-line summary. Library imports stay inside handlers so that
`torl --help` stays instant.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

BENCHMARK_DIR_HELP = "folder of <name>.jsonl benchmark files (default: $TORL_DATA_DIR, else the ones shipped with torl)"


def _user_errors(handler):
    """Turns DataError into the CLI's one-line UserError."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from torl.data.records import DataError
        from torl.errors import UserError

        try:
            return handler(args)
        except DataError as e:
            raise UserError(str(e)) from None

    return wrapped


def _summary(report) -> None:
    removed = ", ".join(f"{k}: {v}" for k, v in report.removed.items()) or "nothing removed"
    print(f"{report.stage}: {report.n_in} in, {report.n_out} out ({removed}) in {report.seconds:.2f} s")
    report.print_warnings()


def _read_inputs(paths: list[str]) -> list[dict]:
    from torl.data.records import read_records

    return [r for p in paths for r in read_records(p)]


def _write(records, report, args) -> None:
    from torl.data.report import write_stage_outputs

    path = write_stage_outputs(records, report, args.out, args.format)
    _summary(report)
    print(f"wrote {path}, {Path(args.out) / 'stats.json'}, {Path(args.out) / 'report.md'}")


@_user_errors
def cmd_ingest(args) -> int:
    from torl.data.ingest import InputSpec, ingest, parse_mapping

    mapping = parse_mapping(args.map) if args.map else None
    specs = [InputSpec(p, args.split, args.subset, mapping, args.source) for p in args.input]
    records, report = ingest(specs, on_malformed="skip" if args.skip_malformed else "error")
    _write(records, report, args)
    return 0


def _filter_rules(args) -> dict:
    rules: dict = {}
    if args.config:
        from torl.data.pipeline import load_config

        rules = load_config(args.config).filter
    for name in args.disable or []:
        rules.setdefault(name, {})["enabled"] = False
    return rules


@_user_errors
def cmd_filter(args) -> int:
    from torl.data.filters import filter_records

    records, report = filter_records(_read_inputs(args.input), _filter_rules(args))
    _write(records, report, args)
    return 0


@_user_errors
def cmd_dedup(args) -> int:
    from torl.data.dedup import deduplicate

    records, report = deduplicate(_read_inputs(args.input), exact=not args.no_exact, near=not args.no_near,
                                  near_threshold=args.threshold, num_perm=args.num_perm,
                                  shingle_size=args.shingle_size)
    _write(records, report, args)
    return 0


@_user_errors
def cmd_decontam(args) -> int:
    from torl.data.decontam import decontaminate

    records, report = decontaminate(_read_inputs(args.input), args.benchmarks, n=args.n,
                                    threshold=args.threshold, min_n=args.min_n,
                                    benchmark_dir=args.benchmark_dir)
    _write(records, report, args)
    return 0


@_user_errors
def cmd_limr(args) -> int:
    from torl.data.limr import limr_select

    records = _read_inputs(args.input) if args.input else None
    threshold = None if args.top_k is not None else args.threshold
    kept, report, scores = limr_select(records, args.run, threshold=threshold, top_k=args.top_k,
                                       steps_per_epoch=args.steps_per_epoch, signal=args.signal)
    _write(kept, report, args)
    with (Path(args.out) / "scores.jsonl").open("w") as f:
        for row in scores:
            f.write(json.dumps(row) + "\n")
    return 0


@_user_errors
def cmd_synth(args) -> int:
    from torl.data.records import write_records
    from torl.data.synthetic import generate_tasks

    records = generate_tasks(args.kinds, args.n, args.seed, args.difficulty)
    path = write_records(records, args.out)
    print(f"wrote {len(records)} tasks ({', '.join(args.kinds or ['all kinds'])}, difficulty "
          f"{args.difficulty}, seed {args.seed}) to {path}")
    return 0


@_user_errors
def cmd_export(args) -> int:
    from torl.data.pipeline import export

    records = _read_inputs(args.input)
    _, report = export(records, args.out, args.template, not args.drop_solution)
    _summary(report)
    print(f"wrote {args.out}")
    return 0


@_user_errors
def cmd_pipeline(args) -> int:
    from torl.data.ingest import InputSpec, parse_mapping
    from torl.data.pipeline import PipelineConfig, load_config, run_pipeline

    config = load_config(args.config) if args.config else PipelineConfig()
    if args.input:  # command-line inputs replace the config's
        mapping = parse_mapping(args.map) if args.map else None
        config.inputs = [InputSpec(p, args.split, None, mapping, args.source) for p in args.input]
    if not config.inputs:
        from torl.data.records import DataError

        raise DataError("no inputs: pass --input PATH or list `inputs:` in the --config file")
    if args.skip_malformed:
        config.on_malformed = "skip"
    if args.benchmarks is not None:
        config.decontam.benchmarks = args.benchmarks
    if args.benchmark_dir:
        config.decontam.benchmark_dir = args.benchmark_dir
    if args.format:
        config.output.format = args.format
    if args.template:
        config.output.template = args.template
    for flag, section in (("no_dedup", config.dedup), ("no_decontam", config.decontam)):
        if getattr(args, flag):
            section.enabled = False
    run_pipeline(config, args.out, progress=True)
    return 0


@_user_errors
def cmd_sample(args) -> int:
    from torl.data.sample import (
        SampleConfig,
        SampleFilters,
        check_out_dir,
        load_questions,
        sample_questions,
        summary_line,
        write_outputs,
    )
    from torl.tir.task_flags import task_overrides

    filters = SampleFilters(require_code=not args.allow_no_code, require_clean_calls=not args.allow_failed_calls,
                            max_length=args.max_length)
    cfg = SampleConfig(
        out_dir=args.out, model=args.model, run=args.run, engine=args.engine, base_url=args.base_url,
        api_key=args.api_key, tokenizer=args.tokenizer, device=args.device, overrides=task_overrides(args), k=args.k, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        concurrency=args.concurrency, sandbox_url=args.sandbox_url, filters=filters,
        max_sandbox_error_share=args.max_sandbox_error_share)
    check_out_dir(args.out)  # before any model work
    questions = load_questions(args.input, args.benchmark, data_dir=args.data_dir, problem_column=args.problem_column,
                               answer_column=args.answer_column, limit=args.limit)
    result = sample_questions(questions, cfg, progress=not args.quiet)
    path = write_outputs(result, cfg)
    print(summary_line(result))
    print(f"wrote {path}, with task_spec.json, stats.json and report.md beside it")
    return 0


def _register_sample(sub) -> None:
    """`torl data sample`: its flags are `torl eval`'s where they mean the same thing."""
    p = sub.add_parser("sample", help="rejection-sample tool-integrated trajectories (SFT data) with any engine",
                       description="K samples per question under a task spec, run with the sandbox; keeps the correct "
                                   "ones that pass the filters, once per distinct response; writes them with their "
                                   "task spec and a report (see torl.data.sample)")
    p.add_argument("--input", action="append", help="normalized records (.jsonl/.parquet: id, problem, answer, source); "
                                                    "repeatable")
    p.add_argument("--benchmark", help="or a benchmark name or file, read like `torl eval --benchmarks`")
    p.add_argument("--data-dir", help="dir with <benchmark>.jsonl files (default: $TORL_DATA_DIR, else the benchmarks shipped with torl)")
    p.add_argument("--problem-column", help="--benchmark file: column holding the problem text")
    p.add_argument("--answer-column", help="--benchmark file: column holding the gold answer")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--out", required=True, help="output dir: trajectories.jsonl, task_spec.json, stats.json, report.md")
    p.add_argument("--model", help="HF id, local checkpoint, smollm2-135m, or the served model name (--engine openai)")
    p.add_argument("--run", help="a training run directory: its model (unless --model) and its task spec; the "
                                 "task-spec flags override a field")
    p.add_argument("--engine", choices=("transformers", "vllm", "openai"), default="transformers")
    p.add_argument("--base-url", help="--engine openai: the teacher's /v1 URL, e.g. http://localhost:8000/v1")
    p.add_argument("--api-key", help="--engine openai: bearer token, if the server wants one")
    p.add_argument("--tokenizer", help="--engine openai: the served model's tokenizer (HF id or path; default: --model)")
    p.add_argument("--device", default="auto", help="--engine transformers: auto (default: cuda when torch sees a GPU, "
                                                    "in bf16; else cpu) | cpu | cuda | cuda:N")
    p.add_argument("--k", "--n", dest="k", type=int, default=4, help="samples per question (K)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=32, help="samples in flight at once")
    p.add_argument("--sandbox-url", help="use a remote sandbox server instead of the local sandbox")
    p.add_argument("--allow-no-code", action="store_true", help="keep correct responses that ran no code")
    p.add_argument("--allow-failed-calls", action="store_true",
                   help="keep responses with a failed call or a block that never ran (e.g. error recovery)")
    p.add_argument("--max-length", type=int, help="drop responses longer than N tokens (model + interpreter)")
    p.add_argument("--max-sandbox-error-share", type=float, default=0.1,
                   help="stop, writing nothing, when more samples than this share hit OUR sandbox's errors")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from torl.tir.task_flags import add_task_arguments

    add_task_arguments(p, base="the run's with --run, else ToRL's: template torl, C = 1, 3072 tokens")
    p.set_defaults(func=cmd_sample)


def register(subparsers) -> None:
    """Adds `torl data` and its stage sub-commands."""
    data = subparsers.add_parser("data", help="curate training data (ingest, filter, dedup, decontam, LIMR, synthetic)",
                                 description=__doc__.splitlines()[0])
    sub = data.add_subparsers(dest="data_command", required=True, metavar="STAGE")

    def stage(name: str, help_text: str, func, records_in: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if records_in:
            p.add_argument("--input", action="append", required=True, help="normalized records (.jsonl/.parquet); repeatable")
            p.add_argument("--out", required=True, help="output folder (data file, stats.json, report.md)")
            p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
        p.set_defaults(func=func)
        return p

    p = stage("ingest", "read raw datasets (local files or hub ids) into normalized records", cmd_ingest, False)
    p.add_argument("--input", action="append", required=True, help="file (.jsonl/.json/.parquet/.csv) or hub id; repeatable")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--split", default="train")
    p.add_argument("--subset", default=None, help="hub dataset config name")
    p.add_argument("--map", help="column mapping, e.g. problem=question,answer=final,answer_format=gsm8k")
    p.add_argument("--source", help="source name for the records (default: file stem or hub name)")
    p.add_argument("--skip-malformed", action="store_true", help="count unreadable rows instead of stopping")

    p = stage("filter", "drop proof, multiple-choice, multi-part and ungradable questions", cmd_filter)
    p.add_argument("--config", help="YAML with a `filter:` section (rule -> {enabled, params})")
    p.add_argument("--disable", action="append", metavar="RULE", help="turn a rule off; repeatable")

    p = stage("dedup", "remove exact and near (MinHash/LSH) duplicates", cmd_dedup)
    p.add_argument("--no-exact", action="store_true")
    p.add_argument("--no-near", action="store_true")
    p.add_argument("--threshold", type=float, default=0.8, help="Jaccard similarity for near duplicates")
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--shingle-size", type=int, default=3)

    p = stage("decontam", "remove questions overlapping evaluation benchmarks (n-gram overlap)", cmd_decontam)
    p.add_argument("--benchmarks", nargs="+", required=True, help="benchmark names (math500 ...) or files")
    p.add_argument("--benchmark-dir", help=BENCHMARK_DIR_HELP)
    p.add_argument("--n", type=int, default=8, help="n-gram size (smaller for short problems, see --min-n)")
    p.add_argument("--min-n", type=int, default=3)
    p.add_argument("--threshold", type=float, default=0.5, help="share of a benchmark problem's n-grams")

    p = stage("limr", "LIMR selection from a training run's sample dumps", cmd_limr, False)
    p.add_argument("--run", required=True, help="run directory with samples/step_<N>.jsonl")
    p.add_argument("--input", action="append", help="dataset records to select from (default: questions in the dumps)")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--threshold", type=float, default=0.6, help="keep LIM score >= this (LIMR: 0.6)")
    p.add_argument("--top-k", type=int, help="keep the k highest scores instead of a threshold")
    p.add_argument("--steps-per-epoch", type=int, help="group steps into epochs (default: each question's visit order)")
    p.add_argument("--signal", choices=["correct", "reward"], default="correct")

    p = stage("synth", "generate synthetic tasks where code helps", cmd_synth, False)
    from torl.data.synthetic import TASK_KINDS  # stdlib-only module: cheap to import

    p.add_argument("--kinds", nargs="+", choices=TASK_KINDS, help="default: all kinds")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=int, default=1, help="1 (easy) to 5")
    p.add_argument("--out", required=True, help="output file (.jsonl or .parquet)")

    p = stage("export", "write records for the trainer, optionally with a prompt template", cmd_export, False)
    p.add_argument("--input", action="append", required=True)
    p.add_argument("--out", required=True, help="output file (.jsonl or .parquet)")
    p.add_argument("--template", help="bake a `prompt` field with this template (e.g. torl)")
    p.add_argument("--drop-solution", action="store_true")

    p = stage("pipeline", "ingest → filter → dedup → decontam → output with a combined report", cmd_pipeline, False)
    p.add_argument("--input", action="append", help="raw dataset file or hub id; repeatable (overrides config)")
    p.add_argument("--out", required=True)
    p.add_argument("--config", help="pipeline YAML (see torl.data.pipeline)")
    p.add_argument("--split", default="train")
    p.add_argument("--map")
    p.add_argument("--source")
    p.add_argument("--skip-malformed", action="store_true")
    p.add_argument("--benchmarks", nargs="*", help="decontaminate against these (default: all shipped benchmarks)")
    p.add_argument("--benchmark-dir", help=BENCHMARK_DIR_HELP)
    p.add_argument("--format", choices=["jsonl", "parquet"])
    p.add_argument("--template")
    p.add_argument("--no-dedup", action="store_true")
    p.add_argument("--no-decontam", action="store_true")

    _register_sample(sub)
