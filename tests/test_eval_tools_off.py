"""`torl eval --tools-off-baseline`: the same questions at C = 0, next to the main results."""

import argparse
import json
from types import SimpleNamespace

import pytest

from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.errors import UserError
from torl.eval.runner import EvalConfig, run_eval
from torl.sandbox.base import Sandbox
from torl.sandbox.result import ExecResult, ExecStatus


def boxed_scorer(text, gold, calls):
    from torl.metrics.values import final_boxed, same_value

    got = final_boxed(text)
    ok = got is not None and same_value(got, gold)
    return SimpleNamespace(reward=1.0 if ok else -1.0, correct=ok, extracted=got, reason="ok" if ok else "wrong")


def script(prompt_ids, turn, tokenizer):
    """'6*7' problems compute with code, then box the output; others box 4 without code.

    Without tools the first turn runs on past ```output to EOS: no output, no answer."""
    if "6*7" in tokenizer.decode(prompt_ids):
        return ["Compute it.\n```python\nprint(6*7)\n```\n```output", "So \\boxed{42}."][turn]
    return "2+2 = \\boxed{4}."


class EchoSandbox(Sandbox):
    """Answers `print(6*7)` with 42 in-process and counts its runs."""

    def __init__(self):
        self.runs = 0

    async def run(self, code, *, timeout=None, memory_mb=None, session=None):
        self.runs += 1
        return ExecResult(ExecStatus.OK, stdout="42\n", exit_code=0)

    async def open_session(self):
        return "s"

    async def close_session(self, session):
        pass

    async def health_check(self):
        pass

    async def aclose(self):
        pass


class Factories:
    def __init__(self):
        self.engines = 0
        self.sandbox = EchoSandbox()

    async def engine(self, cfg):
        self.engines += 1
        tok = ToyTokenizer()
        return ScriptedEngine(tok, lambda p, t: script(p, t, tok))

    async def make_sandbox(self, cfg):
        return self.sandbox

    def kwargs(self):
        return {"engine_factory": self.engine, "sandbox_factory": self.make_sandbox, "scorer": boxed_scorer,
                "progress": False}


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "problem": "What is 6*7?", "answer": "42"},
        {"id": "b", "problem": "What is 2+2?", "answer": "4"},
    ]))
    (d / "code.jsonl").write_text(json.dumps({"id": "c", "problem": "6*7 again", "answer": "42"}) + "\n")
    return d


def config(tmp_path, data, **kw):
    """An EvalConfig over `data`; keywords named like task-spec fields change the task."""
    from torl.tir.task import task_field_names

    task = {"max_response_tokens": 200, **{k: kw.pop(k) for k in list(kw) if k in task_field_names()}}
    base = {"model": "scripted", "benchmarks": ["arith", "code"], "out_dir": str(tmp_path / "out"),
            "data_dir": str(data), "concurrency": 4, "overrides": task}
    return EvalConfig(**{**base, **kw})


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_baseline_runs_at_c0_next_to_the_main_eval(tmp_path, data, capsys):
    from torl.eval.summary import print_summary

    f = Factories()
    cfg = config(tmp_path, data, tools_off_baseline=True)
    summary = run_eval(cfg, **f.kwargs())
    out, off = tmp_path / "out", tmp_path / "out" / "tools_off"
    assert f.engines == 1  # one engine serves both evals
    assert f.sandbox.runs == 2  # only the main eval ran code: a and c
    # the main eval is exactly what it would be without the flag
    assert summary["benchmarks"]["arith"]["accuracy"] == 1.0 and summary["benchmarks"]["code"]["accuracy"] == 1.0
    assert len(lines(out / "trajectories.jsonl")) == 3
    # the baseline: its own complete eval dir, C = 0 recorded as an override
    off_rows = lines(off / "trajectories.jsonl")
    assert len(off_rows) == 3 and all(not r["trajectory"]["calls"] for r in off_rows)
    off_settings = json.loads((off / "config.json").read_text())
    assert off_settings["max_tool_calls"] == 0 and off_settings["task_overrides"]["max_tool_calls"] == {"from": 1, "to": 0}
    main_settings = json.loads((out / "config.json").read_text())
    assert "max_tool_calls" not in main_settings["task_overrides"] and main_settings["tools_off_baseline"] is True
    off_results = json.loads((off / "results.json").read_text())
    assert off_results["benchmarks"]["arith"]["accuracy"] == 0.5 and off_results["benchmarks"]["code"]["accuracy"] == 0.0
    assert (off / "analytics.json").exists() and "(tools off)" in (off / "results.md").read_text()
    # both accuracies and the difference, per benchmark and on average
    comparison = json.loads((out / "results.json").read_text())["tools_off_baseline"]
    assert comparison["out_dir"] == str(off) and comparison["max_tool_calls"] == 1
    assert comparison["benchmarks"]["arith"] == {"with_tools": 1.0, "tools_off": 0.5, "difference": 0.5}
    assert comparison["benchmarks"]["code"] == {"with_tools": 1.0, "tools_off": 0.0, "difference": 1.0}
    assert comparison["average"] == {"with_tools": 1.0, "tools_off": 0.25, "difference": 0.75}
    md = (out / "results.md").read_text()
    assert "Tools-off baseline: greedy accuracy with C = 1 vs C = 0" in md
    assert "| tools off (C = 0) | 50.0 | 0.0 | 25.0 |" in md and "| difference | +50.0 | +100.0 | +75.0 |" in md
    print_summary(summary, cfg.out_dir)
    printed = capsys.readouterr().out
    assert "Tools-off baseline" in printed and "+75.0" in printed


def test_baseline_resumes_on_its_own(tmp_path, data):
    f = Factories()
    run_eval(config(tmp_path, data), **f.kwargs())  # the main eval alone first
    main_log = tmp_path / "out" / "trajectories.jsonl"
    before = main_log.read_text()
    summary = run_eval(config(tmp_path, data, tools_off_baseline=True), **f.kwargs())
    assert main_log.read_text() == before  # nothing of the main eval redone
    assert f.sandbox.runs == 2  # the baseline runs no code
    assert summary["tools_off_baseline"]["average"]["tools_off"] == 0.25
    engines = f.engines
    run_eval(config(tmp_path, data, tools_off_baseline=True), **f.kwargs())
    assert f.engines == engines  # both finished: no engine built
    # without the flag the main results lose the comparison but keep everything else
    plain = run_eval(config(tmp_path, data), **f.kwargs())
    assert "tools_off_baseline" not in plain and plain["benchmarks"]["arith"]["accuracy"] == 1.0


def test_baseline_needs_tools_in_the_main_eval(tmp_path, data):
    with pytest.raises(UserError, match="--tools-off-baseline.*max_tool_calls = 0"):
        config(tmp_path, data, max_tool_calls=0, tools_off_baseline=True)


def test_cli_flag_reaches_the_eval(tmp_path, data, monkeypatch, capsys):
    from torl.eval import runner
    from torl.eval.commands import register

    f, real = Factories(), runner.run_eval
    monkeypatch.setattr(runner, "run_eval", lambda cfg, progress=True: real(cfg, **f.kwargs()))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--model", "scripted", "--benchmarks", "arith", "--data-dir", str(data),
                              "--out", str(tmp_path / "cli"), "--max-tokens", "200", "--tools-off-baseline", "--quiet"])
    assert args.func(args) == 0
    assert "Tools-off baseline" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "tools_off" / "config.json").read_text())["max_tool_calls"] == 0
