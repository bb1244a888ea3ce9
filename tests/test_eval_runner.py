"""`run_eval` end to end with a scripted engine: real TIR loop, real local sandbox, outputs, resume."""

import json
from types import SimpleNamespace

import pytest

from torl.cli import UserError
from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.eval.runner import EvalConfig, probe_server, run_eval
from torl.eval.store import TrajectoryLog
from torl.sandbox.base import Sandbox
from torl.sandbox.result import ExecResult, ExecStatus
from torl.tir.trajectory import compact_trajectory


def boxed_scorer(text, gold, calls):
    """A test scorer: the last boxed value equals the gold value (torl.reward has its own tests)."""
    from torl.metrics.values import final_boxed, same_value

    got = final_boxed(text)
    ok = got is not None and same_value(got, gold)
    return SimpleNamespace(reward=1.0 if ok else -1.0, correct=ok, extracted=got, reason="ok" if ok else "wrong")


def script(prompt_ids, turn, tokenizer):
    """Problems mentioning '6*7' use code then box 42; others answer 4 without code."""
    prompt = tokenizer.decode(prompt_ids)
    if "6*7" in prompt:
        return ["Compute it.\n```python\nprint(6*7)\n```\n```output", "So \\boxed{42}."][turn]
    return "2+2 = \\boxed{4}."


class Factories:
    def __init__(self, sandbox=None):
        self.engines = 0
        self.sandbox = sandbox

    async def engine(self, cfg):
        self.engines += 1
        tok = ToyTokenizer()
        return ScriptedEngine(tok, lambda p, t: script(p, t, tok))

    async def make_sandbox(self, cfg):
        if self.sandbox is not None:
            return self.sandbox
        from torl.eval.runner import build_sandbox

        return await build_sandbox(cfg)


@pytest.fixture
def bench_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "arith.jsonl").write_text(
        json.dumps({"id": "a", "problem": "What is 6*7?", "answer": "42"}) + "\n"
        + json.dumps({"id": "b", "problem": "What is 2+2?", "answer": "4"}) + "\n"
        + json.dumps({"id": "c", "problem": "What is 2+3?", "answer": "5"}) + "\n"
    )
    (data / "tiny.jsonl").write_text(json.dumps({"id": "t", "problem": "6*7 again", "answer": "41"}) + "\n")
    return data


def config(tmp_path, data, **kw):
    """An EvalConfig over `data`; keywords named like task-spec fields change the task."""
    from torl.tir.task import task_field_names

    task = {"max_response_tokens": 200, **{k: kw.pop(k) for k in list(kw) if k in task_field_names()}}
    base = {"model": "scripted", "benchmarks": ["arith", "tiny"], "out_dir": str(tmp_path / "out"),
            "data_dir": str(data), "concurrency": 4, "overrides": task}
    return EvalConfig(**{**base, **kw})


def test_eval_runs_scores_and_writes_everything(tmp_path, bench_files):
    f = Factories()
    summary = run_eval(config(tmp_path, bench_files), engine_factory=f.engine, sandbox_factory=f.make_sandbox,
                       scorer=boxed_scorer, progress=False)
    out = tmp_path / "out"
    assert summary["benchmarks"]["arith"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["benchmarks"]["tiny"]["accuracy"] == 0.0
    assert summary["average"]["accuracy"] == pytest.approx((2 / 3 + 0) / 2)
    rows = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    by_id = {r["question_id"]: r for r in rows}
    call = by_id["a"]["trajectory"]["calls"][0]
    assert call["result"]["status"] == "ok" and call["result"]["stdout"].strip() == "42"  # really executed
    assert "completion_ids" not in by_id["a"]["trajectory"] and by_id["a"]["trajectory"]["completion_tokens"] > 0
    md = (out / "results.md").read_text()
    assert "| Model | arith | tiny | Average |" in md and "| scripted | 66.7 | 0.0 | 33.3 |" in md
    analytics = json.loads((out / "analytics.json").read_text())
    assert analytics["arith"]["code_ratio"] == pytest.approx(1 / 3) and analytics["tiny"]["code_ratio"] == 1.0
    assert analytics["arith"]["accuracy_with_code"] == 1.0 and analytics["arith"]["accuracy_without_code"] == 0.5
    assert "code_ratio" in (out / "analytics.md").read_text()
    assert json.loads((out / "results.json").read_text())["settings"]["max_tool_calls"] == 1


def test_eval_resumes_without_redoing_finished_samples(tmp_path, bench_files):
    f = Factories()
    kw = {"engine_factory": f.engine, "sandbox_factory": f.make_sandbox, "scorer": boxed_scorer, "progress": False}
    run_eval(config(tmp_path, bench_files, limit=1), **kw)
    log = tmp_path / "out" / "trajectories.jsonl"
    assert len(log.read_text().splitlines()) == 2
    # a torn last line (killed mid-write) is dropped and redone
    with log.open("a") as fh:
        fh.write('{"benchmark": "arith", "question_id": "b", "sam')
    summary = run_eval(config(tmp_path, bench_files, limit=2), **kw)
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert summary["benchmarks"]["arith"]["problems"] == 2
    # nothing left to do: no engine is even built
    engines_before = f.engines
    run_eval(config(tmp_path, bench_files, limit=2), **kw)
    assert f.engines == engines_before
    # other settings in the same dir are refused
    with pytest.raises(UserError, match="other settings.*max_tool_calls"):
        run_eval(config(tmp_path, bench_files, limit=2, max_tool_calls=2), **kw)


def test_resume_refuses_a_different_task_spec(tmp_path, bench_files):
    """The whole task spec is the fingerprint: a field no flag sets (observation length) still counts."""
    from torl.tir.task import TaskSpec

    run = tmp_path / "train_run"
    run.mkdir()
    TaskSpec(max_observation_chars=512).save(run)
    kw = {"engine_factory": Factories().engine, "sandbox_factory": Factories().make_sandbox, "scorer": boxed_scorer,
          "progress": False}
    run_eval(config(tmp_path, bench_files, limit=1, run=str(run)), **kw)
    run_eval(config(tmp_path, bench_files, limit=1, run=str(run)), **kw)  # same spec: resumes
    TaskSpec(max_observation_chars=256).save(run)
    with pytest.raises(UserError, match=r"other settings \(task.max_observation_chars: 512 -> 256\)"):
        run_eval(config(tmp_path, bench_files, limit=1, run=str(run)), **kw)
    with pytest.raises(UserError, match=r"task.exec_timeout_s: 10.0 -> 3.0"):
        run_eval(config(tmp_path, bench_files, limit=1, exec_timeout_s=3.0), **kw)


def test_n_samples_report_avg_and_pass_at_k(tmp_path, bench_files):
    f = Factories()
    summary = run_eval(config(tmp_path, bench_files, benchmarks=["arith"], n=3, temperature=0.7),
                       engine_factory=f.engine, sandbox_factory=f.make_sandbox, scorer=boxed_scorer, progress=False)
    s = summary["benchmarks"]["arith"]
    assert s["samples"] == 9 and s["k"] == 3
    assert s["accuracy"] == pytest.approx(2 / 3) and s["pass_at_k"] == pytest.approx(2 / 3)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "avg@3" in md and "pass@3" in md


class BrokenSandbox(Sandbox):
    """Fails on our side for every run (a crashed worker, say)."""

    async def run(self, code, *, timeout=None, memory_mb=None, session=None):
        return ExecResult(ExecStatus.SANDBOX_ERROR, sandbox_message="worker died")

    async def open_session(self):
        return "s"

    async def close_session(self, session):
        pass

    async def health_check(self):
        pass

    async def aclose(self):
        pass


def test_sandbox_errors_are_counted_not_scored_and_retried(tmp_path, bench_files, capsys):
    from torl.eval.summary import print_summary

    f = Factories(sandbox=BrokenSandbox())
    cfg = config(tmp_path, bench_files, benchmarks=["arith"])
    summary = run_eval(cfg, engine_factory=f.engine, sandbox_factory=f.make_sandbox, scorer=boxed_scorer, progress=False)
    s = summary["benchmarks"]["arith"]
    assert s["unscored_samples"] == 1 and s["sandbox_errors"] == 2  # one retry inside the loop
    assert s["accuracy"] == pytest.approx(1 / 2)  # over the 2 scored problems, the failure is not a wrong answer
    print_summary(summary, cfg.out_dir)
    assert "sandbox failure" in capsys.readouterr().out
    assert "sandbox failure" in (tmp_path / "out" / "results.md").read_text()
    # the failed sample is not done: a rerun with a working sandbox retries it and supersedes the row
    assert TrajectoryLog(cfg.out_dir).done() == {("arith", "b", 0), ("arith", "c", 0)}
    summary = run_eval(cfg, engine_factory=Factories().engine, sandbox_factory=Factories().make_sandbox,
                       scorer=boxed_scorer, progress=False)
    assert summary["benchmarks"]["arith"]["unscored_samples"] == 0
    assert summary["benchmarks"]["arith"]["accuracy"] == pytest.approx(2 / 3)


def test_config_mistakes_are_user_errors(tmp_path, bench_files):
    with pytest.raises(UserError, match="--temperature"):
        config(tmp_path, bench_files, n=4)
    with pytest.raises(UserError, match="unknown benchmark 'nope'"):
        run_eval(config(tmp_path, bench_files, benchmarks=["nope"]), progress=False)
    assert not (tmp_path / "out").exists()  # failed before touching the output dir


async def test_unreachable_server_is_one_clear_line():
    with pytest.raises(UserError, match=r"cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1.*--base-url"):
        await probe_server("http://127.0.0.1:9/v1", timeout=2)


def test_compact_drops_token_lists():
    d = compact_trajectory({"prompt_ids": [1, 2], "completion_ids": [3, 4, 5], "loss_mask": [1, 1, 0], "logprobs": None, "text": "x"})
    assert d == {"text": "x", "prompt_tokens": 2, "completion_tokens": 3}
