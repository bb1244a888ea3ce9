"""Health and analytics under protocol tool_calls: void turns (and the SimpleTIR filter), `tools/*` in
`torl eval`'s analytics and in `torl report`, for a training run and an eval dir.

Trajectories come from the real TIR loop: SmolLM2's tokenizer and chat template, scripted turns
(ScriptedEngine), an in-process stand-in sandbox for `python`.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from test_tir_loop import FakeSandbox

from torl.engines.models import resolve_model
from torl.engines.scripted import ScriptedEngine
from torl.metrics.health import health_metrics, is_degenerate, void_turns
from torl.run_layout import RunLayout
from torl.tir.loop import encode_prompt, rollout
from torl.tir.task import TaskSpec
from torl.tir.trajectory import compact_trajectory


def call(code: str) -> str:
    return f'<tool_call>\n{json.dumps({"name": "python", "arguments": {"code": code}})}\n</tool_call>'


MALFORMED = '<tool_call>\n{"name": "python", "arguments": {"code": "print(6*7)"\n</tool_call>'
TASK = TaskSpec(template="chat_tools", protocol="tool_calls", max_tool_calls=2)


@pytest.fixture(scope="module")
def smol():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


def run(tokenizer, turns, task=TASK) -> dict:
    config = task.rollout_config(temperature=1.0, seed=0)
    prompt = encode_prompt(task.prompt_template(), "What is 6*7?", tokenizer, config)
    return asyncio.run(rollout(ScriptedEngine(tokenizer, turns), FakeSandbox(), prompt, config)).to_dict()


def test_void_turns_under_tool_calls(smol):
    called_again = run(smol, [call("print(6)"), call("print(6*7)"), "So \\boxed{42}."])
    gave_up = run(smol, [call("print('\\\\boxed{42}')"), "Hmm."])
    over_budget = run(smol, [call("print(6)"), call("print(7)")], TaskSpec(template="chat_tools", protocol="tool_calls"))
    assert [len(t["calls"]) for t in (called_again, gave_up, over_budget)] == [2, 1, 1]
    assert over_budget["skipped_calls"][0]["reason"] == "over_budget"
    # a turn that calls a tool is not void (it used to be: it holds no ```python block), nor one with
    # a call it wrote past C; a turn that calls nothing and boxes nothing is
    assert [void_turns(t) for t in (called_again, gave_up, over_budget)] == [0, 1, 0]
    assert [is_degenerate(t) for t in (called_again, gave_up, over_budget)] == [False, True, False]
    health = health_metrics([compact_trajectory(t) for t in (called_again, gave_up, over_budget)])
    assert health["health/void_turn_ratio"] == pytest.approx(1 / 4)
    assert health["health/degenerate_ratio"] == pytest.approx(1 / 3)
    # the tool's printed \boxed{42} is not the model's: gave_up and over_budget boxed nothing
    assert health["health/no_boxed_ratio"] == pytest.approx(2 / 3)


def test_eval_analytics_and_report_hold_tools_metrics(smol, tmp_path):
    from torl.analysis.report import build_report
    from torl.eval.runner import EvalConfig, run_eval

    async def engine(cfg):
        return ScriptedEngine(smol, [MALFORMED, call("print(6*7)"), "So \\boxed{42}."])

    async def sandbox(cfg):
        return FakeSandbox()

    data = tmp_path / "data"
    data.mkdir()
    (data / "arith.jsonl").write_text(json.dumps({"id": "a", "problem": "What is 6*7?", "answer": "42"}) + "\n")
    out = tmp_path / "eval"
    summary = run_eval(EvalConfig(model="scripted", benchmarks=["arith"], out_dir=str(out), data_dir=str(data),
                                  overrides={"protocol": "tool_calls", "max_tool_calls": 2,
                                             "max_response_tokens": 300}),
                       engine_factory=engine, sandbox_factory=sandbox, progress=False)
    assert summary["benchmarks"]["arith"]["accuracy"] == 1.0
    analytics = json.loads((out / "analytics.json").read_text())["arith"]
    assert analytics["tools/parse_error_ratio"] == 0.5 and analytics["tools/call_error_ratio"] == 0.5
    assert analytics["tools/python/calls"] == 1.0 and analytics["tools/python/errors"] == 0.0
    assert analytics["code_ratio"] == 1.0 and analytics["calls_per_response"] == 2.0
    assert "| tools/parse_error_ratio | 0.500 |" in (out / "analytics.md").read_text()

    build_report(out, tmp_path / "report")
    report = json.loads((tmp_path / "report" / "analytics.json").read_text())["arith"]
    assert report["tools/parse_error_ratio"] == 0.5 and report["tools/python/calls"] == 1.0
    assert "Tool calls (torl/tools/metrics.py)" in (tmp_path / "report" / "index.html").read_text()


def test_training_report_has_tools_metrics_per_step_and_code_blocks_runs_none(smol, tmp_path):
    from torl.analysis.report import build_report

    def make_run(root, task, trajectories):
        layout = RunLayout(root)
        layout.samples.mkdir(parents=True)
        task.save(root)
        layout.metrics.write_text(json.dumps({"step": 1, "reward": 0.0, "rewards/accuracy": 0.5}) + "\n")
        with layout.sample_file(1).open("w") as f:
            for traj in trajectories:
                f.write(json.dumps({"step": 1, "question_id": "a", "problem": "What is 6*7?", "gold": "42",
                                    "reward": 1.0, "correct": True, "trajectory": compact_trajectory(traj)}) + "\n")

    tools_run = tmp_path / "tools"
    make_run(tools_run, TASK, [run(smol, [MALFORMED, call("print(6*7)"), "So \\boxed{42}."]),
                               run(smol, ["\\boxed{42}"])])
    build_report(tools_run)
    step = json.loads((tools_run / "report" / "analytics_by_step.json").read_text())["1"]
    assert step["tools/parse_error_ratio"] == 0.5 and step["tools/python/calls"] == 0.5
    assert step["code_ratio"] == 0.5

    plain = tmp_path / "plain"
    make_run(plain, TaskSpec(), [run(smol, ["\\boxed{42}"], TaskSpec(template="chat", max_tool_calls=1))])
    build_report(plain)
    step = json.loads((plain / "report" / "analytics_by_step.json").read_text())["1"]
    assert not any(k.startswith("tools/") for k in step)
    assert "Tool calls" not in (plain / "report" / "index.html").read_text()
