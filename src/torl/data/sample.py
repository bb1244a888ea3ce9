"""Rejection sampling of tool-integrated trajectories (`torl data sample`): SFT data from any engine.

K samples per question run the real TIR loop (engine + sandbox) under one task spec; a sample is
kept when it is correct and passes every filter, and identical responses to one question are kept
once. Each sample is judged by its FIRST failing check, in this order, so the counts add up
(sampled = kept + every drop reason):

    sandbox_error   our sandbox failed (infrastructure): not scored, never a wrong answer
    incorrect       the reward's verdict (torl.reward, the task spec's scheme)
    truncated       the response hit the task's token budget: it never ended
    no_code         no code call ran                                   (--allow-no-code turns it off)
    failed_call     a call ended in an error, timeout, memory or output limit  (--allow-failed-calls)
    unrun_code      a complete ```python block never ran (over C, or written in the last turn)  (idem)
    too_long        more than --max-length response tokens (model + interpreter, prompt excluded)
    duplicate       the same response text as an earlier kept sample of this question

Every kept row is a `Trajectory.to_dict()` (token ids, loss mask: `torl sft` trains it exactly as
sampled) plus the text form `problem`, `answer`, `response` (= `text`, the output blocks included)
for tokenizers other than the sampler's. The output directory holds:

    trajectories.jsonl   the kept rows
    task_spec.json       the spec they were sampled under (`TaskSpec.load(OUT)` reads it)
    stats.json           counts, per-question kept/sampled, pass@K, settings
    report.md            the same, readable

Nothing is written until every sample is done; the files go to a temporary directory renamed into
place, so a failure (a teacher endpoint down or answering garbage, a broken sandbox) leaves no
half-written output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torl.data.report import StageReport
from torl.errors import UserError
from torl.tir.seeds import derive_seed
from torl.tir.task import TaskSpec, resolve_task, run_model

DATA_FILE = "trajectories.jsonl"
OUTPUT_FILES = (DATA_FILE, "task_spec.json", "stats.json", "report.md")
DROP_REASONS = ("sandbox_error", "incorrect", "truncated", "no_code", "failed_call", "unrun_code", "too_long",
                "duplicate")


@dataclasses.dataclass(frozen=True)
class SampleFilters:
    require_code: bool = True             # at least one code call ran
    require_clean_calls: bool = True      # every call ran without error, and every complete block ran
    max_length: int | None = None         # response tokens (model + interpreter); None = the task's budget

    def __post_init__(self):
        if self.max_length is not None and self.max_length < 1:
            raise UserError("--max-length must be >= 1 (response tokens)")


@dataclasses.dataclass
class SampleConfig:
    """What `torl data sample` runs. Engine and task-spec fields mean what `torl eval`'s do."""

    out_dir: str
    model: str | None = None              # None with `run`: the run's last checkpoint
    run: str | None = None                # a training run: sample under its task spec
    engine: str = "transformers"          # transformers | vllm | openai (a teacher endpoint)
    base_url: str | None = None
    api_key: str | None = None
    tokenizer: str | None = None          # engine=openai: the served model's tokenizer (default: model)
    device: str = "auto"                  # engine=transformers: auto (cuda in bf16 when torch sees a GPU) | cpu | cuda[:N]
    # Task-spec fields to change, by TaskSpec's names (torl.tir.task); the rest are the run's or the defaults.
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    k: int = 4                            # samples per question
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    concurrency: int = 32
    sandbox_url: str | None = None
    filters: SampleFilters = dataclasses.field(default_factory=SampleFilters)
    max_sandbox_error_share: float = 0.1  # more samples than this lost to OUR sandbox stops the run
    task: TaskSpec = dataclasses.field(init=False)
    task_overrides: dict = dataclasses.field(init=False)

    def __post_init__(self):
        if self.k < 1 or self.concurrency < 1:
            raise UserError("--k and --concurrency must be >= 1")
        if self.k > 1 and self.temperature <= 0:
            raise UserError("--k > 1 with greedy decoding repeats one sample; set --temperature > 0 (e.g. 0.7)")
        if not 0 <= self.max_sandbox_error_share <= 1:
            raise UserError("--max-sandbox-error-share must be between 0 and 1")
        try:
            self.task, self.task_overrides = resolve_task(self.run, self.overrides)
            if self.model is None:
                if not self.run:
                    raise ValueError("name the sampling model: --model M (or a teacher's served name with "
                                     "--engine openai), or --run RUN_DIR for a training run's")
                self.model = run_model(self.run)
        except ValueError as e:
            raise UserError(str(e)) from None
        if self.engine == "transformers":
            from torl.engines.models import pick_device

            self.device = pick_device(self.device)  # InvalidDevice is the user's one-line error
        if self.filters.require_code and self.task.max_tool_calls == 0:
            raise UserError("the task allows no code calls (max_tool_calls = 0), so every sample would fail the "
                            "code filter; raise --max-tool-calls or pass --allow-no-code")

    def settings(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("task", "api_key", "overrides")}
        d["task"], d["task_overrides"] = self.task.to_dict(), self.task_overrides
        return d


class EngineFailure(UserError):
    """The sampling engine (a teacher endpoint) failed or answered something unusable."""


class _CheckedTeacher:
    """An OpenAI-compatible engine whose answers are checked before the TIR loop uses them.

    Any failure to get or read an answer is the endpoint's, not a wrong answer of the model: it
    becomes one line (EngineFailure). Token ids outside the tokenizer's vocabulary mean a garbage
    answer or a --tokenizer that is not the served model's; they would decode to nothing silently.
    """

    def __init__(self, engine, base_url: str):
        self._engine = engine
        self.tokenizer = engine.tokenizer
        self._url = base_url
        self._vocab = len(engine.tokenizer)

    async def generate(self, prompt_ids, params):
        try:
            generation = await self._engine.generate(prompt_ids, params)
        except Exception as e:  # noqa: BLE001 - whatever the endpoint sent, reading it failed: its failure, one line
            detail = " ".join(str(e).split())[:300]
            raise EngineFailure(f"the engine at {self._url} failed ({type(e).__name__}: {detail}); "
                                "check the server, --base-url and --model") from None
        bad = [i for i in generation.token_ids if not 0 <= i < self._vocab]
        if not generation.token_ids or bad:
            what = f"token ids {bad[:3]} outside the tokenizer's {self._vocab}" if bad else "no tokens"
            raise EngineFailure(f"the engine at {self._url} answered {what}; is --tokenizer the served model's "
                                "tokenizer, and the server an OpenAI-compatible completions endpoint?")
        return generation

    async def aclose(self) -> None:
        await self._engine.aclose()


def judge(traj: dict, correct: bool | None, filters: SampleFilters) -> str | None:
    """The first check `traj` fails (a DROP_REASONS name, duplicates aside), or None to keep it."""
    for reason, fails in _checks(traj, correct, filters):
        if fails:
            return reason
    return None


def active_checks(filters: SampleFilters) -> list[str]:
    """The checks `filters` applies, in judging order (duplicates aside)."""
    off = {"no_code"} if not filters.require_code else set()
    off |= {"failed_call", "unrun_code"} if not filters.require_clean_calls else set()
    off |= {"too_long"} if filters.max_length is None else set()
    return [r for r in DROP_REASONS[:-1] if r not in off]


def _checks(traj: dict, correct: bool | None, filters: SampleFilters):
    """(reason, fails) for each active check, in judging order."""
    calls = [c for c in traj["calls"] if c.get("executed", True)]
    fails = {
        "sandbox_error": lambda: bool(traj["sandbox_error"]),
        "incorrect": lambda: not correct,
        "truncated": lambda: bool(traj["truncated"]),
        "no_code": lambda: not calls,
        "failed_call": lambda: any(c["result"]["status"] != "ok" for c in calls),
        "unrun_code": lambda: bool(traj["skipped_calls"]),
        "too_long": lambda: len(traj["completion_ids"]) > filters.max_length,
    }
    for reason in active_checks(filters):
        yield reason, fails[reason]()


def training_row(traj: dict, question: dict) -> dict:
    """A kept sample: the trajectory's id form plus the text form `torl sft` also reads."""
    return {**traj, "problem": question["problem"], "answer": question["gold"], "response": traj["text"]}


@dataclasses.dataclass
class SampleResult:
    rows: list[dict]                      # kept, in question order then sample order
    report: StageReport


def sample_questions(
    questions: list[dict],
    cfg: SampleConfig,
    *,
    engine_factory: Callable | None = None,
    sandbox_factory: Callable | None = None,
    scorer: Callable | None = None,
    progress: bool = False,
) -> SampleResult:
    """Run K samples of every question (`torl.question` dicts), judge them, return kept rows and the report.

    Factories are async callables `(cfg) -> engine / sandbox` (defaults: `torl eval`'s builders,
    which probe a teacher endpoint and health-check the sandbox first); `scorer(text, gold, calls)`,
    text being the trajectory's `answer_text` (the model's own segments), defaults to `torl.reward.score`
    under the task's reward scheme.
    """
    if not questions:
        raise UserError("no questions to sample: the input is empty")
    ids = [q["question_id"] for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"question id {dup!r} appears more than once in the input; give every question its own id")
    started = time.monotonic()
    samples = asyncio.run(_sample_all(questions, cfg, engine_factory or _build_engine,
                                      sandbox_factory or _build_sandbox, scorer or _default_scorer(cfg), progress))
    result = _select(questions, samples, cfg)
    result.report.finish(len(result.rows), time.monotonic() - started)
    lost = result.report.removed.get("sandbox_error", 0)
    if lost > cfg.max_sandbox_error_share * result.report.n_in:
        raise UserError(f"the sandbox failed on our side in {lost} of {result.report.n_in} samples (more than "
                        f"--max-sandbox-error-share {cfg.max_sandbox_error_share:g}); nothing written: check it with "
                        "`torl sandbox check` and rerun")
    return result


async def _sample_all(questions, cfg: SampleConfig, engine_factory, sandbox_factory, scorer, progress):
    """{(question_id, sample): (trajectory dict, correct or None)} for every sample."""
    from tqdm import tqdm

    from torl.tir.loop import encode_prompt, rollout
    from torl.tir.trajectory import answer_text

    template = cfg.task.prompt_template()
    rollout_config = cfg.task.rollout_config(temperature=cfg.temperature, top_p=cfg.top_p, logprobs=False)
    gate = asyncio.Semaphore(cfg.concurrency)
    out: dict[tuple[str, int], tuple[dict, bool | None]] = {}
    bar = tqdm(total=len(questions) * cfg.k, desc="sample", unit="sample", disable=not progress)
    sandbox = engine = None
    try:
        sandbox = await sandbox_factory(cfg) if cfg.task.max_tool_calls > 0 else None
        engine = await engine_factory(cfg)
        prompts = {}
        for q in questions:
            try:
                prompts[q["question_id"]] = encode_prompt(template, q["problem"], engine.tokenizer, rollout_config)
            except ValueError as e:  # e.g. a chat template on a tokenizer without one
                raise UserError(str(e)) from None

        async def one(q: dict, s: int) -> None:
            async with gate:
                config = dataclasses.replace(rollout_config, seed=derive_seed(cfg.seed, "sample", q["question_id"], s))
                meta = {"question_id": q["question_id"], "sample": s, "model": cfg.model,
                        "tokenizer": cfg.tokenizer or cfg.model}  # whose token ids these are
                traj = (await rollout(engine, sandbox, prompts[q["question_id"]], config, metadata=meta)).to_dict()
            # Checking runs in worker processes; a thread keeps the event loop generating meanwhile.
            correct = None if traj["sandbox_error"] else bool(
                (await asyncio.to_thread(scorer, answer_text(traj), q["gold"], traj["calls"])).correct)
            out[(q["question_id"], s)] = (traj, correct)
            bar.update(1)

        try:
            async with asyncio.TaskGroup() as group:
                for q in questions:
                    for s in range(cfg.k):
                        group.create_task(one(q, s))
        except ExceptionGroup as group_error:  # the first failure cancelled the rest: report that one
            raise group_error.exceptions[0] from None
    finally:
        bar.close()
        if engine is not None:
            await engine.aclose()
        if sandbox is not None:
            await sandbox.aclose()
    return out


def _select(questions, samples, cfg: SampleConfig) -> SampleResult:
    from torl.eval.accuracy import benchmark_scores

    report = StageReport("sample")
    rows, per_question, failing = [], [], dict.fromkeys(active_checks(cfg.filters), 0)
    for q in questions:
        qid = q["question_id"]
        seen: set[str] = set()
        entry = {"question_id": qid, "sampled": cfg.k, "correct": 0, "kept": 0, "dropped": {}, "flags": []}
        for s in range(cfg.k):
            traj, correct = samples[(qid, s)]
            report.n_in += 1
            entry["flags"].append(correct)
            entry["correct"] += bool(correct)
            for reason, fails in _checks(traj, correct, cfg.filters):
                failing[reason] += bool(fails)
                if reason == "sandbox_error" and fails:
                    break  # not scored: the other checks say nothing about the model
            reason = judge(traj, correct, cfg.filters)
            if reason is None and traj["text"] in seen:
                reason = "duplicate"
            if reason is not None:
                report.remove(reason, {"id": qid, "problem": q["problem"], "answer": q["gold"]},
                              sample=s, response=traj["text"])
                entry["dropped"][reason] = entry["dropped"].get(reason, 0) + 1
                continue
            seen.add(traj["text"])
            entry["kept"] += 1
            rows.append(training_row(traj, q))
        per_question.append(entry)
    scores = benchmark_scores([e.pop("flags") for e in per_question], cfg.k)
    report.details = {
        "questions": len(questions),
        "k": cfg.k,
        f"pass@{cfg.k}": scores["pass_at_k"],
        "pass_at_k_questions": scores["pass_at_k_problems"],  # those with K scored samples (no sandbox error)
        "accuracy": scores["accuracy"],
        "questions_with_kept": sum(e["kept"] > 0 for e in per_question),
        "sandbox_error_samples": report.removed.get("sandbox_error", 0),
        "failing_each_check": failing,
        "per_question": per_question,
        "settings": cfg.settings(),
    }
    return SampleResult(rows, report)


def check_out_dir(out_dir: str | Path) -> None:
    """Refuse, before any sampling, an output directory holding anything but an earlier sample's files."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; name a directory")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES)
        if other:
            raise UserError(f"--out {out} already holds other files ({', '.join(other[:3])}); "
                            "name a new or empty directory")


def write_outputs(result: SampleResult, cfg: SampleConfig) -> Path:
    """Write every output file into a temporary directory, then swap it into place; returns the data file."""
    out = Path(cfg.out_dir)
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with (tmp / DATA_FILE).open("w", encoding="utf-8") as f:
            for row in result.rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        cfg.task.save(tmp)
        (tmp / "stats.json").write_text(json.dumps(result.report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        (tmp / "report.md").write_text(report_markdown(result.report))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give it a normal directory's mode
        if out.exists():  # an earlier sample's output (check_out_dir): replace it whole
            old = out.parent / f"{tmp.name}.old"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out / DATA_FILE


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def report_markdown(report: StageReport) -> str:
    d = report.details
    k = d["k"]
    lines = ["# torl data sample", "",
             (f"{report.n_out} trajectories kept of {report.n_in} sampled ({d['questions']} questions x {k}); "
              f"pass@{k} {_fmt(d['pass@' + str(k)])}, accuracy {_fmt(d['accuracy'])}; "
              f"{d['questions_with_kept']} questions have a kept trajectory."), "",
             "## Dropped (first failing check; the counts add up)", ""]
    active = set(d["failing_each_check"]) | {"duplicate"}
    lines += [f"- `{reason}`: {report.removed.get(reason, 0)}" if reason in active else f"- `{reason}`: off"
              for reason in DROP_REASONS]
    lines += ["", "Failing each check on its own (a sample can fail several): "
              + ", ".join(f"`{r}` {n}" for r, n in d["failing_each_check"].items()), "",
              "## Per question", "", "| question | sampled | correct | kept | dropped |", "|---|---|---|---|---|"]
    for e in d["per_question"]:
        dropped = ", ".join(f"{r} {n}" for r, n in e["dropped"].items()) or "-"
        lines.append(f"| {e['question_id']} | {e['sampled']} | {e['correct']} | {e['kept']} | {dropped} |")
    lines += ["", "## Settings", "", "```json", json.dumps(d["settings"], indent=1), "```", ""]
    for reason, examples in report.examples.items():
        lines += [f"## Examples dropped by `{reason}`", ""]
        lines += [f"- `{ex['id']}` sample {ex['sample']}: {ex['response']}" for ex in examples]
        lines.append("")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def summary_line(result: SampleResult) -> str:
    r, d = result.report, result.report.details
    k = d["k"]
    dropped = ", ".join(f"{reason}: {n}" for reason, n in r.removed.items()) or "nothing dropped"
    return (f"sample: {r.n_out} kept of {r.n_in} sampled ({dropped}); pass@{k} {_fmt(d['pass@' + str(k)])} "
            f"over {d['pass_at_k_questions']} questions, {d['questions_with_kept']} with a kept trajectory, {r.seconds:.1f} s")


async def _build_engine(cfg: SampleConfig):
    # `torl eval`'s builder: it probes a teacher endpoint first (down: one line) and loads local models.
    from torl.eval.runner import build_engine

    engine = await build_engine(cfg)
    return _CheckedTeacher(engine, cfg.base_url) if cfg.engine == "openai" else engine


async def _build_sandbox(cfg: SampleConfig):
    from torl.eval.runner import build_sandbox

    return await build_sandbox(cfg)


def _default_scorer(cfg: SampleConfig):
    from torl.reward import score

    def scorer(text: str, gold: str, calls: list[dict]):
        return score(text, gold, scheme=cfg.task.reward_scheme, calls=calls)

    return scorer


def load_questions(inputs: list[str] | None, benchmark: str | None, *, data_dir: str | None = None,
                   problem_column: str | None = None, answer_column: str | None = None,
                   limit: int | None = None) -> list[dict]:
    """Questions from normalized record files (`--input`) or a benchmark name or file (`--benchmark`)."""
    if bool(inputs) == bool(benchmark):
        raise UserError("give the questions with --input FILE (data records) or --benchmark NAME, one of the two")
    if benchmark:
        from torl.eval.benchmarks import load_benchmark

        return load_benchmark(benchmark, data_dir=data_dir, problem_column=problem_column,
                              answer_column=answer_column, limit=limit)
    from torl.data.records import DataError, read_records, record_to_question

    try:
        questions = [record_to_question(r) for path in inputs for r in read_records(path)]
    except DataError as e:
        raise UserError(str(e)) from None
    return questions[:limit] if limit else questions
