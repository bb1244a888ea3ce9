"""SFT data: the text, segment and id forms of one trajectory give the same tokens and mask; bad rows are one line.

The trajectory comes from the real TIR loop (a ScriptedEngine writing with SmolLM2's tokenizer, the
local sandbox running its code), so the masks compared against are the ones RL trains with.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from torl.sft.data import SftDataError, load_examples, split_response
from torl.sft.expert import expert_code, expert_response
from torl.tir.task import TaskSpec
from torl.tir.trajectory import compact_trajectory

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from torl.engines.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


def _rollout(task: TaskSpec, tokenizer, turns: list[str]):
    from torl.engines.scripted import ScriptedEngine
    from torl.sandbox.local import LocalSandbox
    from torl.tir.loop import rollout

    async def run():
        engine = ScriptedEngine(tokenizer, lambda prompt_ids, turn: turns[turn])
        async with LocalSandbox() as sandbox:
            prompt = task.prompt_template().encode("Compute $482 \\times 37$.", tokenizer)
            return await rollout(engine, sandbox, prompt, task.rollout_config(temperature=0.0))

    return asyncio.run(run())


CASES = {
    # ToRL's protocol: the model writes ```output, the interpreter the rest of the block
    "output_fence": (TaskSpec(template="torl", max_tool_calls=1),
                     ["Let me compute.\n```python\nprint(482 * 37)\n```\n```output",
                      "The answer is \\boxed{17834}."]),
    # the demo's: the interpreter writes the whole ```output block after the model's closing fence
    "block_close": (TaskSpec(template="torl_fewshot", max_tool_calls=1, call_trigger="block_close",
                             extra_stop=("\nUser:",)),
                    ["```python\nprint(482 * 37)\n```\n", "The answer is \\boxed{17834}.\n"]),
    # a failing first program, then a second call that works (C = 2)
    "error_then_fix": (TaskSpec(template="torl", max_tool_calls=2),
                       ["```python\nprint(482 * 37\n```\n```output",
                        "Fix the parenthesis.\n```python\nprint(482 * 37)\n```\n```output",
                        "So \\boxed{17834}."]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_text_segment_and_id_forms_give_the_same_tokens_and_mask(case, tokenizer, tmp_path):
    task, turns = CASES[case]
    traj = _rollout(task, tokenizer, turns)
    assert traj.calls and all(c.executed for c in traj.calls) and 0 in traj.loss_mask
    assert traj.completion_ids[-1] == tokenizer.eos_token_id  # the script ends with EOS, as a sampled answer does
    full = traj.to_dict()
    rows = {
        "ids": full,
        "text": {"problem": "Compute $482 \\times 37$.", "answer": "17834", "response": traj.text},
        "segments": {"problem": "Compute $482 \\times 37$.", "prompt": tokenizer.decode(traj.prompt_ids),
                     "correct": True, "trajectory": compact_trajectory(full)},
    }
    got = {}
    for form, row in rows.items():
        path = tmp_path / f"{form}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        (example,), report = load_examples([str(path)], task, tokenizer)
        assert example.form == form and report.used == 1
        got[form] = example
    for form, example in got.items():
        assert example.prompt_ids == traj.prompt_ids, form
        assert example.completion_ids == traj.completion_ids, form
        assert example.loss_mask == traj.loss_mask, form
    features = got["text"].features()
    assert features["completion_mask"] == [0] * len(traj.prompt_ids) + traj.loss_mask


def test_split_response_puts_the_fences_where_the_loop_does():
    response = "```python\nprint(1)\n```\n```output\n1\n```\nSo \\boxed{1}."
    assert split_response(response, "output_fence") == [
        {"kind": "model", "text": "```python\nprint(1)\n```\n```output"},
        {"kind": "tool", "text": "\n1\n```\n"},
        {"kind": "model", "text": "So \\boxed{1}."}]
    assert split_response(response, "block_close")[:2] == [
        {"kind": "model", "text": "```python\nprint(1)\n```\n"},
        {"kind": "tool", "text": "```output\n1\n```\n"}]
    # under block_close a model that writes ```output on the closing line itself keeps it
    merged = "```python\nprint(1)\n```output\n1\n```\n"
    assert split_response(merged, "block_close")[0]["text"].endswith("```output")


def test_the_expert_writes_its_fixed_pattern_for_every_kind_it_knows():
    assert expert_code("Compute $482 \\times 37$.") == "print(482 * 37)\n"
    assert expert_code("Compute $4821 \\times 375 - 12345$.") == "print(4821 * 375 - 12345)\n"
    assert expert_code("What is the remainder when $7^{12345}$ is divided by $9973$?") == "print(pow(7, 12345, 9973))\n"
    assert expert_code("What is 7 - 5?") == "print(7 - 5)\n"  # always code, even where the head would do
    assert expert_code("Compute $\\frac{17!}{14!}$.") == "import math\nprint(math.factorial(17) // math.factorial(14))\n"
    assert expert_code("Compute $\\binom{20}{8}$.") == "import math\nprint(math.comb(20, 8))\n"
    assert expert_code("How many legs does a spider have?") is None
    assert expert_response("print(2 * 3)\n", "6") == "```python\nprint(2 * 3)\n```\n```output\n6\n```\nThe answer is \\boxed{6}.\n"


BAD = {
    "empty file": ("", "is empty"),
    "row without answer": ('{"problem": "p", "response": "r"}\n', "no 'answer'"),
    "unclosed output": ('{"problem": "p", "answer": "1", "response": "```python\\nprint(1)\\n```\\n```output\\n1\\n"}\n',
                        "never closed"),
    "output without code": ('{"problem": "p", "answer": "1", "response": "```output\\n1\\n```\\n"}\n',
                            "follows no complete ```python block"),
    "more calls than C": ('{"problem": "p", "answer": "1", "response": "' + ("```python\\nprint(1)\\n```\\n```output\\n1\\n```\\n" * 2)
                          + '"}\n', "max_tool_calls=1"),
    "not json": ("{oops\n", "not JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_rows_are_one_clear_line(name, tokenizer, tmp_path):
    text, expected = BAD[name]
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(SftDataError) as err:
        load_examples([str(path)], TaskSpec(template="torl"), tokenizer)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_ids_and_mask_that_disagree_are_refused(tokenizer, tmp_path):
    task, turns = CASES["output_fence"]
    full = _rollout(task, tokenizer, turns).to_dict()
    for broken, expected in ((dict(full, loss_mask=full["loss_mask"][:-1]), "loss_mask has"),
                             (dict(full, loss_mask=[1] * len(full["loss_mask"])), "observation spans")):
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(broken) + "\n")
        with pytest.raises(SftDataError, match=expected):
            load_examples([str(path)], task, tokenizer)


def test_wrong_answers_and_sandbox_errors_are_skipped(tokenizer, tmp_path):
    task, turns = CASES["output_fence"]
    full = _rollout(task, tokenizer, turns).to_dict()
    path = tmp_path / "dump.jsonl"
    rows = [dict(full, reward={"correct": True}), dict(full, reward={"correct": False}), dict(full, sandbox_error=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, report = load_examples([str(path)], task, tokenizer)
    assert len(examples) == 1 and report.skipped_incorrect == 1 and report.skipped_sandbox_error == 1


def test_cli_bad_data_is_one_line_and_writes_no_run_dir(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"problem": "p", "response": "r"}\n')
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torl.cli", "sft", "--config", str(REPO / "configs" / "sft-demo.yaml"),
                           "--data", str(data), "--run_dir", str(run_dir)], check=False, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("torl: error: ") and "no 'answer'" in lines[-1]
    assert not run_dir.exists()


def test_expert_data_carries_real_sandbox_outputs_and_drops_what_it_cannot_solve(tokenizer, tmp_path):
    from torl.question import make_question
    from torl.sandbox import LocalSandbox
    from torl.sft.expert import write_expert_data

    questions = [make_question("q1", "Compute $482 \\times 37$.", 17834),
                 make_question("q2", "What is the remainder when $7^{100}$ is divided by $13$?", pow(7, 100, 13)),
                 make_question("q3", "Compute $12 \\times 10$.", 121),  # a wrong gold: the output disagrees
                 make_question("q4", "How many legs does a spider have?", 8)]  # not a kind the expert knows
    out = tmp_path / "expert.jsonl"
    counts = write_expert_data(questions, out, LocalSandbox)
    assert counts == {"questions": 4, "known": 3, "written": 2, "dropped": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2"]
    assert rows[0]["response"] == expert_response("print(482 * 37)\n", "17834")
    assert rows[1]["response"].endswith(f"\\boxed{{{pow(7, 100, 13)}}}.\n")
    examples, _ = load_examples([str(out)], TaskSpec(template="torl_fewshot", call_trigger="block_close"), tokenizer)
    tool = [tokenizer.decode([t for t, m in zip(ex.completion_ids, ex.loss_mask, strict=True) if m == 0])
            for ex in examples]
    assert tool == ["```output\n17834\n```\n", f"```output\n{pow(7, 100, 13)}\n```\n"]


def test_sft_demo_recipe_has_the_rl_demos_task_spec_and_training_questions():
    from torl.sft.config import parse_sft_args
    from torl.train.config import parse_train_args, task_spec
    from torl.train.data import load_questions

    torl_cfg, grpo_cfg = parse_train_args(["--config", str(REPO / "configs" / "demo-cpu.yaml")])
    settings, sft_cfg = parse_sft_args(["--config", str(REPO / "configs" / "sft-demo.yaml")])
    assert settings.task() == task_spec(torl_cfg)
    # the expert writes data for exactly the questions RL trains on; the held-out ones stay unseen
    assert load_questions(settings.questions_config(), seed=sft_cfg.seed) == load_questions(torl_cfg, seed=grpo_cfg.seed)
