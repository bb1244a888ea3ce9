"""The SFT cold start under protocol tool_calls: expert tool-call trajectories through SmolLM2's chat
template, trained by `torl sft` with RL's exact token contract (the tool turn masked out).

The expert's trajectories come from the real TIR loop (`torl.sft.tool_expert`), so they are checked
here token for token against the prompt, the model's turns and the tool turn the template writes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_tir_loop import FakeSandbox

from torl.engines.models import resolve_model
from torl.question import make_question
from torl.sft.data import SftDataError, load_examples
from torl.sft.tool_expert import (
    expert_answer,
    expert_call,
    tool_call_expert_rows,
    write_tool_call_expert_data,
)
from torl.tir.chat_tools import ToolTurnRenderer
from torl.tir.loop import encode_prompt
from torl.tir.task import TaskSpec
from torl.train.update.contract import trajectory_problems

REPO = Path(__file__).resolve().parents[1]
TASK = TaskSpec(template="chat_tools_fewshot", protocol="tool_calls", max_tool_calls=1, max_response_tokens=128)
QUESTIONS = [make_question("q1", "Compute $482 \\times 37$.", 17834),
             make_question("q2", "What is the remainder when $7^{100}$ is divided by $13$?", pow(7, 100, 13)),
             make_question("q3", "Compute $12 \\times 10$.", 121),  # a wrong gold: the tool's output disagrees
             make_question("q4", "How many legs does a spider have?", 8)]  # not a kind the expert knows


@pytest.fixture(scope="module")
def smol():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


def test_expert_rows_are_exactly_the_loops_tool_call_trajectories(smol, tmp_path):
    rows, counts = asyncio.run(tool_call_expert_rows(QUESTIONS, TASK, smol, FakeSandbox()))
    assert counts == {"questions": 4, "known": 3, "written": 2, "dropped": 1}
    assert [r["question_id"] for r in rows] == ["q1", "q2"]
    renderer = ToolTurnRenderer(smol, TASK.toolset().schemas())
    config = TASK.rollout_config(temperature=0.0)
    for row, code, printed in zip(rows, ["print(482 * 37)", "print(pow(7, 100, 13))"], ["17834", str(pow(7, 100, 13))],
                                  strict=True):
        traj = row["trajectory"]
        assert traj["prompt_ids"] == encode_prompt(TASK.prompt_template(), row["problem"], smol, config)
        assert "<tools>" in smol.decode(traj["prompt_ids"])  # the tool schema the model sees in RL
        call = smol(expert_call(code), add_special_tokens=False).input_ids
        tool_turn = renderer.encode(renderer.observation_pieces([printed], model_ended_turn=False)[0])
        answer = smol(expert_answer(printed), add_special_tokens=False).input_ids + [smol.eos_token_id]
        assert traj["completion_ids"] == call + tool_turn + answer
        assert traj["loss_mask"] == [1] * len(call) + [0] * len(tool_turn) + [1] * len(answer)
        assert traj["calls"][0]["observation"] == printed and traj["finish_reason"] == "stop"
        assert trajectory_problems(traj, lambda ids: smol.decode(ids, skip_special_tokens=True)) == []

    out = tmp_path / "expert.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, report = load_examples([str(out)], TASK, smol)
    assert report.forms == {"ids": 2} and report.used == 2
    for ex, row in zip(examples, rows, strict=True):
        traj, printed = row["trajectory"], row["trajectory"]["calls"][0]["observation"]
        features = ex.features()
        assert features["input_ids"] == traj["prompt_ids"] + traj["completion_ids"]
        assert features["completion_mask"] == [0] * len(traj["prompt_ids"]) + traj["loss_mask"]
        learned = smol.decode([t for t, m in zip(features["input_ids"], features["completion_mask"], strict=True) if m])
        assert learned.startswith("<tool_call>") and learned.endswith(expert_answer(printed) + smol.eos_token)
        assert "<|im_start|>tool" not in learned  # the tool turn is context, never a target


def test_text_and_segment_rows_are_refused_under_tool_calls(smol, tmp_path):
    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"problem": "Compute $2 \\times 3$.", "answer": "6", "response": "\\boxed{6}"}) + "\n")
    with pytest.raises(SftDataError, match=r"\.jsonl:1: protocol tool_calls takes trajectories with their token ids") as err:
        load_examples([str(path)], TASK, smol)
    assert "\n" not in str(err.value)


def test_a_call_that_does_not_fit_the_budget_is_dropped_and_no_clean_row_is_one_line(smol, tmp_path):
    short = TaskSpec(template="chat_tools", protocol="tool_calls", max_tool_calls=1, max_response_tokens=30)
    from torl.errors import UserError

    with pytest.raises(UserError, match="no clean example on 2 questions.*max_response_tokens"):
        write_tool_call_expert_data(QUESTIONS[:2], tmp_path / "x.jsonl", FakeSandbox, short, smol)
    assert not (tmp_path / "x.jsonl").exists()


def test_sft_demo_tools_recipe_has_the_rl_recipes_task_spec_and_training_questions():
    from torl.sft.config import parse_sft_args
    from torl.train.config import parse_train_args, task_spec
    from torl.train.data import load_questions

    torl_cfg, grpo_cfg = parse_train_args(["--config", str(REPO / "configs" / "demo-cpu-tools.yaml")])
    settings, sft_cfg = parse_sft_args(["--config", str(REPO / "configs" / "sft-demo-tools.yaml")])
    assert settings.task() == task_spec(torl_cfg) and settings.task().protocol == "tool_calls"
    assert load_questions(settings.questions_config(), seed=sft_cfg.seed) == load_questions(torl_cfg, seed=grpo_cfg.seed)


def test_torl_sft_trains_on_tool_call_expert_data(tiny_model_dir, tmp_path):
    """`torl sft` with no data under protocol tool_calls: the expert's id-form rows, the real local sandbox."""
    from torl.sft.config import parse_sft_args
    from torl.sft.trainer import DATA_FILE, run_sft

    recipe = tmp_path / "sft.yaml"
    recipe.write_text(f"""
model: {tiny_model_dir}
template: chat_tools
protocol: tool_calls
tools: [python]
max_tool_calls: 1
max_response_tokens: 96
train_tasks: [arithmetic]
train_task_difficulty: 2
train_task_count: 6
eval_holdout: 2
run_dir: {tmp_path / 'sft'}
use_cpu: true
bf16: false
per_device_train_batch_size: 2
max_steps: 1
max_length: 1024
save_steps: 1
save_only_model: true
report_to: [tensorboard]
seed: 0
""")
    assert run_sft(*parse_sft_args(["--config", str(recipe)])) == 0
    run = tmp_path / "sft"
    rows = [json.loads(line) for line in (run / DATA_FILE).read_text().splitlines()]
    assert len(rows) == 4 and all(r["trajectory"]["calls"][0]["result"]["status"] == "ok" for r in rows)
    assert TaskSpec.load(run).protocol == "tool_calls"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_report"]["forms"] == {"ids": 4} and summary["steps"] == 1
    assert (run / "checkpoints" / "checkpoint-1" / "model.safetensors").is_file()


def test_data_sample_under_a_tool_calls_run_gives_rows_torl_sft_trains_on(smol, tmp_path):
    """`torl data sample --run` of a tool_calls run: the prompt carries the tools, the rows are id form."""
    from torl.data.sample import (
        DATA_FILE,
        SampleConfig,
        sample_questions,
        write_outputs,
    )
    from torl.engines.scripted import ScriptedEngine

    run = tmp_path / "run"
    run.mkdir()
    TASK.save(run)

    async def engine(cfg):
        return ScriptedEngine(smol, [expert_call("print(482 * 37)"), expert_answer("17834")])

    async def sandbox(cfg):
        return FakeSandbox()

    cfg = SampleConfig(out_dir=str(tmp_path / "out"), run=str(run), model="scripted", k=1)
    result = sample_questions(QUESTIONS[:1], cfg, engine_factory=engine, sandbox_factory=sandbox)
    assert len(result.rows) == 1
    write_outputs(result, cfg)
    examples, report = load_examples([str(tmp_path / "out" / DATA_FILE)], TASK, smol)
    assert report.forms == {"ids": 1}
    assert examples[0].prompt_ids == encode_prompt(TASK.prompt_template(), QUESTIONS[0]["problem"], smol,
                                                   TASK.rollout_config(temperature=0.7))
    assert "<tools>" in smol.decode(examples[0].prompt_ids)
