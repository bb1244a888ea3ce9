"""`run_eval`: sample every (problem, sample) of every benchmark with the TIR loop, score, summarize.

Samples run concurrently (at most `concurrency` in flight; the engine batches them) and each is
appended to ``trajectories.jsonl`` the moment it is scored, so a killed eval loses at most the
samples in flight; rerunning the same command skips every finished sample. Rows hold the compact
trajectory; `save_ids` keeps its token ids and loss mask too (`torl sft` then trains them exactly).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torl.errors import UserError
from torl.eval.benchmarks import load_benchmark, resolve_benchmark
from torl.eval.store import TrajectoryLog, row_key
from torl.tir.seeds import derive_seed
from torl.tir.task import TaskSpec, resolve_task, run_model
from torl.tir.trajectory import answer_text, compact_trajectory


@dataclasses.dataclass
class EvalConfig:
    model: str | None                     # None with `run`: the run's last checkpoint
    benchmarks: list[str]
    out_dir: str
    engine: str = "transformers"          # transformers | vllm | openai
    device: str = "auto"                  # engine=transformers: auto (cuda if torch sees a GPU, bf16 there) | cpu | cuda[:N]
    base_url: str | None = None           # engine=openai: the server, e.g. http://localhost:8000/v1
    api_key: str | None = None
    tokenizer: str | None = None          # engine=openai: tokenizer of the served model (default: --model)
    run: str | None = None                # a training run directory: evaluate with its task spec
    # Task-spec fields to change, by TaskSpec's names (torl.tir.task); the rest are the run's with
    # `run`, else TaskSpec's defaults (ToRL's protocol, C = 1).
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    n: int = 1                            # samples per problem (K)
    temperature: float = 0.0              # 0 = greedy, ToRL's table
    top_p: float = 1.0
    limit: int | None = None              # first N problems of each benchmark
    data_dir: str | None = None
    problem_column: str | None = None
    answer_column: str | None = None
    seed: int = 0
    concurrency: int = 32
    sandbox_url: str | None = None        # a `torl sandbox serve` / SandboxFusion server instead of the local sandbox
    model_label: str | None = None        # the table's row name (default: the model name)
    tools_off_baseline: bool = False      # also run every question at C = 0 (see torl.eval.tools_off)
    save_ids: bool = False                # rows keep prompt_ids / completion_ids / loss_mask (exact SFT data)
    task: TaskSpec = dataclasses.field(init=False)              # the spec every sample runs under
    task_overrides: dict = dataclasses.field(init=False)        # {field: {from, to}}: what `overrides` changed

    def __post_init__(self):
        if self.concurrency < 1:
            raise UserError("--concurrency must be >= 1")
        try:
            self.task, self.task_overrides = resolve_task(self.run, self.overrides)
            if self.model is None:
                if not self.run:
                    raise ValueError("name the model to evaluate: --model M, or --run RUN_DIR for a training run's")
                self.model = run_model(self.run)
        except ValueError as e:
            raise UserError(str(e)) from None
        if self.engine == "transformers":
            from torl.engines.models import pick_device

            self.device = pick_device(self.device)  # InvalidDevice is the user's one-line error
        if self.n < 1:
            raise UserError("--n must be >= 1")
        if self.n > 1 and self.temperature <= 0:
            raise UserError("--n > 1 with greedy decoding repeats one sample; set --temperature > 0 (e.g. 0.6)")
        if not self.benchmarks:
            raise UserError("--benchmarks is empty; name at least one benchmark")
        if self.tools_off_baseline and self.task.max_tool_calls == 0:
            raise UserError("--tools-off-baseline compares with C = 0, but this eval already runs with "
                            "max_tool_calls = 0; drop one of the two")

    def tools_off(self) -> EvalConfig:
        """The same eval with the interpreter off (C = 0), in its own dir `<out_dir>/tools_off`."""
        from torl.eval.tools_off import TOOLS_OFF_DIR

        return dataclasses.replace(self, overrides={**self.overrides, "max_tool_calls": 0}, tools_off_baseline=False,
                                   out_dir=str(Path(self.out_dir) / TOOLS_OFF_DIR),
                                   model_label=f"{self.model_label or self.model} (tools off)")

    def settings(self) -> dict:
        """What the results record: the flat keys tables and resume checks read come from the task."""
        d = dataclasses.asdict(self)
        task = self.task
        d.update(template=task.template, max_tool_calls=task.max_tool_calls,
                 max_response_tokens=task.max_response_tokens, exec_timeout_s=task.exec_timeout_s,
                 reward_scheme=task.reward_scheme)
        del d["overrides"]
        d["task"], d["task_overrides"] = task.to_dict(), self.task_overrides
        d["label"] = self.model_label or self.model
        return d


def sample_seed(seed: int, benchmark: str, question_id: str, sample: int) -> int:
    """Per-sample seed independent of scheduling order, so a resumed eval samples the same thing."""
    return derive_seed(seed, benchmark, str(question_id), sample)


def load_all(cfg: EvalConfig) -> dict[str, list[dict]]:
    """Every benchmark's problems (each already cut to `limit`); fails before any model is loaded."""
    for name in cfg.benchmarks:  # every name checked before any (possibly slow) loading
        resolve_benchmark(name, cfg.data_dir)
    return {
        name: load_benchmark(name, data_dir=cfg.data_dir, problem_column=cfg.problem_column,
                             answer_column=cfg.answer_column, limit=cfg.limit)
        for name in cfg.benchmarks
    }


def run_eval(
    cfg: EvalConfig,
    *,
    engine_factory: Callable[[EvalConfig], object] | None = None,
    sandbox_factory: Callable[[EvalConfig], object] | None = None,
    scorer: Callable | None = None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the eval, write every output file, return the summary (see `summary.py`).

    Factories build the engine / sandbox inside the event loop (defaults: `build_engine`,
    `build_sandbox`); `scorer(text, gold, calls) -> RewardResult` defaults to `torl.reward.score`.
    """
    from torl.eval.manifest import build_manifest
    from torl.eval.summary import summarize, write_outputs
    from torl.eval.tools_off import tools_off_comparison

    benchmarks = load_all(cfg)
    # The tools-off baseline is a second eval (own dir, own resume) sharing the engine with the main one.
    evals = [cfg, cfg.tools_off()] if cfg.tools_off_baseline else [cfg]
    logs = [TrajectoryLog(e.out_dir) for e in evals]
    try:
        jobs = []
        for e, log in zip(evals, logs):
            log.open(e.settings())
            done = log.done()
            todo = [(name, problem, s) for name, problems in benchmarks.items() for problem in problems
                    for s in range(e.n) if (name, problem["question_id"], s) not in done]
            if todo:
                jobs.append((e, todo, log))
        if jobs:
            asyncio.run(_sample_all(jobs, engine_factory or build_engine, sandbox_factory or build_sandbox,
                                    scorer or _default_scorer(cfg), progress))
    finally:
        for log in logs:
            log.close()
    wanted = {(name, p["question_id"], s) for name, problems in benchmarks.items() for p in problems for s in range(cfg.n)}
    finished = [(e, [r for r in log.rows() if row_key(r) in wanted]) for e, log in zip(evals, logs)]
    summaries = [summarize(rows, e) for e, rows in finished]
    for summary, e in zip(summaries, evals):  # how to get these numbers again (torl.eval.manifest)
        summary["manifest"] = build_manifest(e, benchmarks)
    if cfg.tools_off_baseline:
        summaries[0]["tools_off_baseline"] = tools_off_comparison(summaries[0], summaries[1], evals[1].out_dir)
    for summary, (e, rows) in zip(summaries, finished):
        write_outputs(summary, rows, Path(e.out_dir))
    return summaries[0]


def _default_scorer(cfg: EvalConfig):
    from torl.reward import score

    def scorer(text: str, gold: str, calls: list[dict]):
        return score(text, gold, scheme=cfg.task.reward_scheme, calls=calls)

    return scorer


async def _sample_all(jobs, engine_factory, sandbox_factory, scorer, progress) -> None:
    """Run each (cfg, todo, log) job in turn on one engine (and one sandbox, if any job uses tools)."""
    cfg = jobs[0][0]
    template = cfg.task.prompt_template()
    sandbox = engine = None
    try:
        sandbox = await sandbox_factory(cfg) if any(c.task.max_tool_calls > 0 for c, _, _ in jobs) else None
        engine = await engine_factory(cfg)
        for job_cfg, todo, log in jobs:
            await _sample_with(job_cfg, todo, log, template, engine, sandbox, scorer, progress)
    finally:
        if engine is not None:
            await engine.aclose()
        if sandbox is not None:
            await sandbox.aclose()


async def _sample_with(cfg, todo, log: TrajectoryLog, template, engine, sandbox, scorer, progress) -> None:
    from tqdm import tqdm

    from torl.tir.loop import encode_prompt, rollout

    rollout_config = cfg.task.rollout_config(temperature=cfg.temperature, top_p=cfg.top_p, logprobs=False)
    prompts: dict[tuple[str, str], list[int]] = {}
    gate = asyncio.Semaphore(cfg.concurrency)
    bar = tqdm(total=len(todo), desc="eval", unit="sample", disable=not progress)

    async def one(name: str, problem: dict, sample: int) -> None:
        async with gate:
            key = (name, problem["question_id"])
            if key not in prompts:
                try:
                    prompts[key] = encode_prompt(template, problem["problem"], engine.tokenizer, rollout_config)
                except ValueError as e:  # e.g. a chat template on a tokenizer without one
                    raise UserError(str(e)) from None
            config = dataclasses.replace(rollout_config, seed=sample_seed(cfg.seed, name, problem["question_id"], sample))
            traj = (await rollout(engine, sandbox, prompts[key], config)).to_dict()
        # Checking runs in worker processes; a thread keeps the event loop generating meanwhile.
        result = None if traj["sandbox_error"] else await asyncio.to_thread(scorer, answer_text(traj), problem["gold"], traj["calls"])
        log.append({
            "benchmark": name, "question_id": problem["question_id"], "sample": sample,
            "problem": problem["problem"], "gold": problem["gold"],
            "correct": None if result is None else bool(result.correct),
            "reward": None if result is None else float(result.reward),
            "extracted": None if result is None else result.extracted,
            "reason": "sandbox_error" if result is None else result.reason,
            "trajectory": compact_trajectory(traj, with_ids=cfg.save_ids),  # the ids as sampled, never re-tokenized
        })
        bar.update(1)

    try:
        async with asyncio.TaskGroup() as group:
            for name, problem, sample in todo:
                group.create_task(one(name, problem, sample))
    except ExceptionGroup as group_error:  # one sample failed and cancelled the rest: report that failure
        raise group_error.exceptions[0]
    finally:
        bar.close()


async def build_sandbox(cfg: EvalConfig):
    """The local sandbox (or the remote one at ``--sandbox-url``), health-checked before any model work."""
    from torl.sandbox import SandboxUnavailable, make_sandbox

    sandbox = make_sandbox(url=cfg.sandbox_url) if cfg.sandbox_url else make_sandbox()
    try:
        await sandbox.health_check()
    except SandboxUnavailable as e:
        await sandbox.aclose()
        raise UserError(f"the sandbox is not usable: {e}; check it with `torl sandbox check`") from None
    return sandbox


async def build_engine(cfg: EvalConfig):
    """The generation engine for `cfg.engine`; an OpenAI-compatible server is probed first."""
    from torl.engines import make_engine

    if cfg.engine == "openai":
        if not cfg.base_url:
            raise UserError("--engine openai needs --base-url (e.g. http://localhost:8000/v1)")
        served = await probe_server(cfg.base_url, cfg.api_key)
        if served and cfg.model not in served:
            raise UserError(f"the server at {cfg.base_url} serves {', '.join(served)}, not {cfg.model!r}; fix --model")
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        extra = {"api_key": cfg.api_key} if cfg.api_key else {}
        return make_engine("openai", cfg.model, base_url=cfg.base_url, tokenizer=tokenizer, **extra)
    if cfg.base_url:
        raise UserError(f"--base-url only applies to --engine openai (got --engine {cfg.engine})")
    device = {"device": cfg.device} if cfg.engine == "transformers" else {}
    try:
        return make_engine(cfg.engine, cfg.model, seed=cfg.seed, **device)
    except (ValueError, ImportError, OSError) as e:
        raise UserError(f"cannot start engine {cfg.engine!r} for model {cfg.model!r}: {e}") from None


def load_tokenizer(name: str):
    """The HF tokenizer for a model name (built-in short name, local dir or hub id)."""
    from transformers import AutoTokenizer

    from torl.engines.models import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(name))
    except (ValueError, OSError) as e:
        raise UserError(f"cannot load a tokenizer for {name!r} ({str(e).splitlines()[0][:160]}); "
                        "pass --tokenizer with the served model's HF id or local path") from None


async def probe_server(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> list[str]:
    """GET ``<base_url>/models``; one clear UserError when the server cannot be reached. Returns model ids."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as e:
        raise UserError(f"cannot reach the OpenAI-compatible server at {base_url} ({type(e).__name__}); "
                        "start it or fix --base-url") from None
    if response.status_code != 200:
        raise UserError(f"{url} answered HTTP {response.status_code}; is --base-url an OpenAI-compatible /v1 endpoint?")
    try:
        return [m["id"] for m in response.json().get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{url} did not return an OpenAI model list; is --base-url an OpenAI-compatible /v1 endpoint?") from None
