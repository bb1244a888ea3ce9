"""Token ids recorded with the segments: sample dumps (`dump_sample_ids`) and eval rows (`--save-ids`)
keep the very ids and loss mask the trainer / the eval had, and `torl sft` trains those, never a
re-tokenization.

The model's answers are scripted one character per token (`ScriptedEngine` with a list of strings),
a tokenization SmolLM2's tokenizer would never produce from the text: re-tokenizing the segments
gives other ids, so only rows that carry their ids can give the sampled tokens back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tiny_recipe, write_questions

from torl.engines.scripted import ScriptedEngine
from torl.sft.data import SftDataError, load_examples
from torl.tir.task import TaskSpec
from torl.tir.trajectory import ID_LISTS, compact_trajectory

REPO = Path(__file__).resolve().parents[1]
QUESTION = re.compile(r"Compute \$(\d+) \\times (\d+)\$")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from torl.engines.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


def _char_script(tokenizer):
    """Turn 0: python computes the product (canonical tokens); turn 1: the boxed answer, one token per
    character (not what tokenizing its text gives)."""

    def script(prompt_ids, turn):
        a, b = map(int, QUESTION.findall(tokenizer.decode(prompt_ids))[-1])
        if turn == 0:
            return f"```python\nprint({a} * {b})\n```\n```output"
        return list(f"So \\boxed{{{a * b}}}.")

    return script


def _retokenized(row: dict) -> dict:
    """The same row without its ids: what the loader can only rebuild from the segments."""
    return dict(row, trajectory={k: v for k, v in row["trajectory"].items() if k not in ID_LISTS})


def _assert_not_canonical(example, tokenizer):
    answer = [t for t, m in zip(example.completion_ids, example.loss_mask, strict=True) if m][-12:]
    text = tokenizer.decode(answer, skip_special_tokens=True)
    assert tokenizer(text, add_special_tokens=False).input_ids != [t for t in answer if t != tokenizer.eos_token_id]


def test_a_training_dump_with_ids_holds_what_the_trainer_got_and_sft_trains_it_exactly(
        tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    from torl.train.config import parse_train_args
    from torl.train.rollout import ToolRolloutFunc
    from torl.train.trainer import run_training

    handed_to_trl = []
    real_call = ToolRolloutFunc.__call__

    def spy(self, prompts, trainer):
        out = real_call(self, prompts, trainer)
        handed_to_trl.append(out)
        return out

    monkeypatch.setattr(ToolRolloutFunc, "__call__", spy)
    data = write_questions(tmp_path, [(2, 3), (4, 5)])
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train_files=[data], dump_sample_ids=True, max_steps=1,
                         num_generations=2, max_response_tokens=64, report_to=[], save_only_model=True)

    def engine(kind, model, tok, path, args):
        return ScriptedEngine(tok, _char_script(tok)), False

    assert run_training(*parse_train_args(["--config", str(recipe)]), engine_factory=engine) == 0
    dump = tmp_path / "run" / "samples" / "step_000001.jsonl"
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    (batch,) = handed_to_trl
    assert len(rows) == len(batch["completion_ids"]) == 4
    for i, row in enumerate(rows):  # the dump keeps the batch order
        traj = row["trajectory"]
        assert traj["prompt_ids"] == batch["prompt_ids"][i]
        assert traj["completion_ids"] == batch["completion_ids"][i]
        assert traj["loss_mask"] == batch["env_mask"][i] and 0 in traj["loss_mask"]  # the interpreter's tokens
        assert "logprobs" not in traj and traj["completion_tokens"] == len(traj["completion_ids"])

    task = TaskSpec.load(tmp_path / "run")
    examples, report = load_examples([str(dump)], task, tokenizer, only_correct=False)
    assert report.forms == {"ids": 4}
    for i, ex in enumerate(examples):
        assert (ex.prompt_ids, ex.completion_ids, ex.loss_mask) == (
            batch["prompt_ids"][i], batch["completion_ids"][i], batch["env_mask"][i])
        _assert_not_canonical(ex, tokenizer)
    # Without the ids the loader can only re-tokenize: not what was trained.
    compact = tmp_path / "compact.jsonl"
    compact.write_text("".join(json.dumps(_retokenized(r)) + "\n" for r in rows))
    rebuilt, report = load_examples([str(compact)], task, tokenizer, only_correct=False)
    assert report.forms == {"segments": 4}
    assert all(r.completion_ids != e.completion_ids for r, e in zip(rebuilt, examples, strict=True))


def _rollout_dict(tokenizer, turns, task: TaskSpec) -> dict:
    import asyncio

    from torl.sandbox.local import LocalSandbox
    from torl.tir.loop import rollout

    async def run():
        engine = ScriptedEngine(tokenizer, lambda prompt_ids, turn: turns[turn])
        async with LocalSandbox() as sandbox:
            prompt = task.prompt_template().encode("Compute $2 \\times 3$.", tokenizer)
            return (await rollout(engine, sandbox, prompt, task.rollout_config(temperature=0.0))).to_dict()

    return asyncio.run(run())


def test_dumps_stay_compact_without_the_option_and_keep_the_trajectorys_lists_with_it(tokenizer, tmp_path):
    from torl.train.step_record import RolloutBatch, StepRecorder, StepReport

    task = TaskSpec(template="torl", max_tool_calls=1)
    traj = _rollout_dict(tokenizer, ["```python\nprint(2 * 3)\n```\n```output", list("So \\boxed{6}.")], task)
    batch = RolloutBatch([traj], [{"question_id": "q", "problem": "Compute $2 \\times 3$.", "gold": "6"}], {},
                         results=[SimpleNamespace(reward=1.0, correct=True, extracted="6", reason="ok")])
    rows = {}
    for with_ids in (False, True):
        report = StepReport(StepRecorder(), tmp_path, render_prompt=str, with_ids=with_ids)
        path = tmp_path / f"{with_ids}.jsonl"
        report._dump(path, 1, batch)
        (rows[with_ids],) = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[False]["trajectory"] == compact_trajectory(traj)  # unchanged: no token lists
    assert not set(ID_LISTS) & set(rows[False]["trajectory"])
    assert rows[True]["trajectory"] == {**compact_trajectory(traj), **{k: traj[k] for k in ID_LISTS}}
    assert {k: v for k, v in rows[True].items() if k != "trajectory"} == {
        k: v for k, v in rows[False].items() if k != "trajectory"}


def test_eval_with_save_ids_writes_the_sampled_ids_and_sft_reads_them(tokenizer, tmp_path, monkeypatch):
    from torl.eval.runner import EvalConfig, build_sandbox, run_eval, sample_seed
    from torl.tir import loop

    sampled = {}
    real_rollout = loop.rollout

    async def spy(engine, sandbox, prompt_ids, config):
        traj = await real_rollout(engine, sandbox, prompt_ids, config)
        sampled[config.seed] = traj.to_dict()
        return traj

    monkeypatch.setattr(loop, "rollout", spy)
    data = tmp_path / "data"
    data.mkdir()
    (data / "mult.jsonl").write_text("".join(json.dumps({"id": f"q{a}", "problem": f"Compute ${a} \\times 7$.",
                                                         "answer": str(7 * a)}) + "\n" for a in (3, 4)))

    async def engine(cfg):
        return ScriptedEngine(tokenizer, _char_script(tokenizer))

    def scorer(text, gold, calls):
        ok = f"\\boxed{{{gold}}}" in text
        return SimpleNamespace(reward=1.0 if ok else -1.0, correct=ok, extracted=gold if ok else None, reason="ok")

    outs = {}
    for save_ids in (False, True):
        cfg = EvalConfig(model="scripted", benchmarks=["mult"], out_dir=str(tmp_path / f"out-{save_ids}"),
                         data_dir=str(data), save_ids=save_ids, overrides={"max_response_tokens": 64})
        run_eval(cfg, engine_factory=engine, sandbox_factory=build_sandbox, scorer=scorer, progress=False)
        outs[save_ids] = Path(cfg.out_dir) / "trajectories.jsonl"
    assert all("completion_ids" not in json.loads(line)["trajectory"] for line in outs[False].open())
    rows = [json.loads(line) for line in outs[True].read_text().splitlines()]
    assert len(rows) == 2 and all(r["correct"] for r in rows)
    for row in rows:
        recorded = sampled[sample_seed(0, "mult", row["question_id"], row["sample"])]
        for key in ID_LISTS:
            assert row["trajectory"][key] == recorded[key], key
        assert 0 in row["trajectory"]["loss_mask"]

    examples, report = load_examples([str(outs[True])], cfg.task, tokenizer)
    assert report.forms == {"ids": 2}
    for ex, row in zip(examples, rows, strict=True):
        assert ex.question_id == row["question_id"]
        assert (ex.prompt_ids, ex.completion_ids, ex.loss_mask) == tuple(row["trajectory"][k] for k in ID_LISTS)
        _assert_not_canonical(ex, tokenizer)


def test_the_eval_flag_reaches_the_config(tmp_path, monkeypatch):
    from torl import cli
    from torl.eval import runner, summary

    seen = []
    monkeypatch.setattr(runner, "run_eval", lambda cfg, progress: seen.append(cfg) or {})
    monkeypatch.setattr(summary, "print_summary", lambda *a: None)
    for flags, expected in (([], False), (["--save-ids"], True)):
        args = cli.build_parser().parse_args(["eval", "--model", "m", "--benchmarks", "b", "--device", "cpu",
                                              "--out", str(tmp_path), *flags])
        assert args.func(args) == 0
        assert seen.pop().save_ids is expected


def _char_row(tokenizer) -> dict:
    """A compact row (segments and all) whose ids spell its one model segment a character at a time."""
    text = "So \\boxed{6}."
    ids = [i for ch in text for i in tokenizer(ch, add_special_tokens=False).input_ids] + [tokenizer.eos_token_id]
    prompt_ids = TaskSpec(template="torl").prompt_template().encode("Compute $2 \\times 3$.", tokenizer)
    traj = {"prompt_ids": prompt_ids, "completion_ids": ids, "loss_mask": [1] * len(ids), "logprobs": None,
            "calls": [], "segments": [{"kind": "model", "text": text}], "text": text, "finish_reason": "stop",
            "sandbox_error": False, "model_tokens": len(ids), "tool_tokens": 0}
    return {"question_id": "q", "problem": "Compute $2 \\times 3$.", "correct": True,
            "trajectory": compact_trajectory(traj, with_ids=True)}


def test_recorded_non_canonical_ids_win_over_the_segments(tokenizer, tmp_path):
    row = _char_row(tokenizer)
    text = row["trajectory"]["segments"][0]["text"]
    canonical = tokenizer(text, add_special_tokens=False).input_ids
    assert row["trajectory"]["completion_ids"][:-1] != canonical  # a tokenization re-tokenizing cannot give
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (ex,), report = load_examples([str(path)], TaskSpec(template="torl"), tokenizer)
    assert report.forms == {"ids": 1}
    assert ex.completion_ids == row["trajectory"]["completion_ids"] and ex.loss_mask == row["trajectory"]["loss_mask"]
    assert ex.prompt_ids == row["trajectory"]["prompt_ids"]


def _broken(tokenizer, **changes) -> dict:
    row = _char_row(tokenizer)
    row["trajectory"].update(changes)
    return row


@pytest.mark.parametrize("name", ["mask shorter than ids", "ids cut with their mask", "mask without ids",
                                  "ids not integers"])
def test_a_row_whose_ids_and_mask_disagree_is_one_line_naming_file_and_line(name, tokenizer, tmp_path):
    good = _char_row(tokenizer)
    ids, mask = good["trajectory"]["completion_ids"], good["trajectory"]["loss_mask"]
    bad, expected = {
        "mask shorter than ids": (_broken(tokenizer, loss_mask=mask[:-1]),
                                  f"breaks the token contract: loss_mask has {len(ids) - 1} entries for {len(ids)}"),
        "ids cut with their mask": (_broken(tokenizer, completion_ids=ids[:-1], loss_mask=mask[:-1]),
                                    f"completion_ids has {len(ids) - 1} ids but the row records completion_tokens={len(ids)}"),
        "mask without ids": ({**good, "trajectory": {k: v for k, v in good["trajectory"].items()
                                                     if k != "completion_ids"}},
                             "needs the list 'completion_ids'"),
        "ids not integers": (_broken(tokenizer, completion_ids=[str(i) for i in ids]), "not integer token ids"),
    }[name]
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")  # the bad row is on line 3
    with pytest.raises(SftDataError) as err:
        load_examples([str(path)], TaskSpec(template="torl"), tokenizer)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ") and expected in message and "\n" not in message


def test_cli_refuses_a_disagreeing_id_row_in_one_line_and_writes_no_run_dir(tokenizer, tmp_path):
    row = _broken(tokenizer, loss_mask=[1])
    data = tmp_path / "dump.jsonl"
    data.write_text(json.dumps(row) + "\n")
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torl.cli", "sft", "--config", str(REPO / "configs" / "sft-demo.yaml"),
                           "--data", str(data), "--run_dir", str(run_dir)], check=False, capture_output=True, text=True)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"torl: error: {data}:1: breaks the token contract: loss_mask has 1 entries"), last
    assert not run_dir.exists()
