"""What the reward reads: the model's own segments (`torl.tir.trajectory.answer_text`), never a tool's output.

A tool result that holds a ``\\boxed{}`` is something the model read. Every call site that scores a
trajectory -- the GRPO reward, `torl eval`, the trainer's held-out check, `torl data sample` --
must grade the model's own answer, and give nothing to a model that wrote none. Protocol
tool_calls with SmolLM2's real tokenizer and chat template; protocol code_blocks with a program
whose output holds a fence, which used to close the ```output block early and leave the printed
box in the prose.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from test_tir_loop import FakeSandbox

from torl.background_loop import BackgroundLoop
from torl.engines.models import resolve_model
from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.tir.loop import RolloutConfig, encode_prompt, rollout
from torl.tir.task import TaskSpec
from torl.tir.templates import get_template
from torl.tir.trajectory import answer_text
from torl.train.heldout import evaluate_heldout
from torl.train.rewards import score_trajectories

BOXING_TOOL_CALL = '<tool_call>\n{"name": "python", "arguments": {"code": "print(\'\\\\\\\\boxed{42}\')"}}\n</tool_call>'
# A program whose output is "```\n\boxed{42}": it closes the ```output block early in the full text.
FENCE_PRINTER = "```python\nprint('`' * 3 + '\\n\\\\boxed{42}')\n```\n```output"
TOOLS = TaskSpec(template="chat_tools", protocol="tool_calls", max_tool_calls=1)


@pytest.fixture(scope="module")
def smol():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


def tool_call_trajectory(tokenizer, final_turn: str) -> dict:
    config = TOOLS.rollout_config(temperature=1.0, seed=0)
    prompt = encode_prompt(TOOLS.prompt_template(), "What is 6*7?", tokenizer, config)
    engine = ScriptedEngine(tokenizer, [BOXING_TOOL_CALL, final_turn])
    return asyncio.run(rollout(engine, FakeSandbox(), prompt, config)).to_dict()


def test_answer_text_keeps_only_the_models_segments():
    traj = {"text": "ignored", "segments": [
        {"kind": "model", "text": 'Run it.\n<tool_call>{"name": "f", "arguments": {"x": "\\\\boxed{1}"}}</tool_call>'},
        {"kind": "tool", "text": "\ntool\n\\boxed{42}\n\nassistant\n"},
        {"kind": "model", "text": "So \\boxed{7}.\n<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": \"\\\\boxed{9}"},
    ]}
    text = answer_text(traj)
    assert "\\boxed{7}" in text and "42" not in text and "boxed{1}" not in text and "boxed{9}" not in text
    assert "Run it." in text
    assert answer_text({"text": "\\boxed{5}"}) == "\\boxed{5}"  # an old dump without segments: its text


def test_a_tool_results_box_is_never_the_models_answer(smol):
    answered = tool_call_trajectory(smol, "The tool printed something; I say \\boxed{7}.")
    silent = tool_call_trajectory(smol, "I am not sure.")
    for traj in (answered, silent):
        assert traj["calls"][0]["observation"] == "\\boxed{42}" and "\\boxed{42}" in traj["text"]  # the model read it
    got = score_trajectories([answered, answered, silent], ["7", "42", "42"], "torl")
    assert [(r.extracted, r.correct, r.reward) for r in got] == [("7", True, 1.0), ("7", False, -1.0),
                                                                 (None, False, -1.0)]
    assert got[2].reason == "no_answer"


def test_heldout_check_scores_the_models_answer(smol, tmp_path):
    questions = [{"question_id": "q", "problem": "What is 6*7?", "gold": "42"}]
    config = TOOLS.rollout_config(temperature=0.0, seed=0)
    loop = BackgroundLoop("test-answer-text")
    try:
        summary = evaluate_heldout(ScriptedEngine(smol, [BOXING_TOOL_CALL, "I am not sure."]), FakeSandbox(), loop,
                                   TOOLS.prompt_template(), questions, config, "torl", tmp_path / "heldout.jsonl")
    finally:
        loop.close()
    row = json.loads((tmp_path / "heldout.jsonl").read_text())
    assert summary["accuracy"] == 0.0 and row["correct"] is False and row["extracted"] is None


def test_code_blocks_output_holding_a_fence_does_not_leak_its_box():
    tok = ToyTokenizer()
    config = RolloutConfig(max_tool_calls=1, max_response_tokens=300)
    prompt = get_template("torl").encode("What is 6*7?", tok)
    traj = asyncio.run(rollout(ScriptedEngine(tok, [FENCE_PRINTER, "I am not sure."]), FakeSandbox(), prompt,
                               config)).to_dict()
    assert traj["calls"][0]["observation"] == "```\n\\boxed{42}"
    from torl.reward import extract_answer

    assert extract_answer(traj["text"]) == "42"  # the whole text misleads the fence-based extraction
    assert [r.reason for r in score_trajectories([traj], ["42"], "torl")] == ["no_answer"]


def test_eval_and_data_sample_score_the_models_answer(tmp_path):
    from torl.data.sample import SampleConfig, sample_questions
    from torl.eval.runner import EvalConfig, run_eval

    def script(tok):
        return lambda prompt, turn: [FENCE_PRINTER, "I am not sure."][turn]

    async def engine(cfg):
        tok = ToyTokenizer()
        return ScriptedEngine(tok, script(tok))

    async def sandbox(cfg):
        return FakeSandbox()

    data = tmp_path / "data"
    data.mkdir()
    (data / "arith.jsonl").write_text(json.dumps({"id": "a", "problem": "What is 6*7?", "answer": "42"}) + "\n")
    summary = run_eval(EvalConfig(model="scripted", benchmarks=["arith"], out_dir=str(tmp_path / "eval"),
                                  data_dir=str(data), overrides={"max_response_tokens": 300}),
                       engine_factory=engine, sandbox_factory=sandbox, progress=False)
    row = json.loads((tmp_path / "eval" / "trajectories.jsonl").read_text())
    assert summary["benchmarks"]["arith"]["accuracy"] == 0.0
    assert (row["correct"], row["extracted"], row["reason"]) == (False, None, "no_answer")

    result = sample_questions([{"question_id": "a", "problem": "What is 6*7?", "gold": "42"}],
                              SampleConfig(out_dir=str(tmp_path / "sample"), model="scripted", k=1,
                                           overrides={"max_response_tokens": 300}),
                              engine_factory=engine, sandbox_factory=sandbox)
    assert result.rows == [] and result.report.removed == {"incorrect": 1}
