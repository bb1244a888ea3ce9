"""Learning signal: micro-batches without it are never computed, and dynamic sampling fills the batch.

A tiny random Llama is trained with scripted rollouts whose correctness depends on the question:
products of an even number come out right and wrong by turns (a group with signal), products of
odd numbers always right (a group without). So which groups carry signal is known in advance.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe, write_questions
from trl import GRPOTrainer

from torl.engines.scripted import ScriptedEngine
from torl.train.config import parse_train_args
from torl.train.trainer import run_training
from torl.train.update.signal import group_has_signal, informative_groups

pytestmark = pytest.mark.slow

QUESTION = re.compile(r"Compute \$(\d+) \\times (\d+)\$")


def _engine_factory(informative=lambda a, b: a % 2 == 0):
    """Python computes the product; the boxed answer is off by one on every other response of an
    informative question, always right otherwise."""

    def factory(kind, model, tokenizer, model_path, grpo_cfg):
        counter = itertools.count()

        def script(prompt_ids, turn):
            a, b = map(int, QUESTION.findall(tokenizer.decode(prompt_ids))[-1])
            if turn == 0:
                return f"```python\nprint({a} * {b})\n```\n```output"
            wrong = informative(a, b) and next(counter) % 2
            return f"So \\boxed{{{a * b + (1 if wrong else 0)}}}."

        return ScriptedEngine(tokenizer, script), False

    return factory


def _recipe(tmp_path: Path, model_dir: Path, questions: list[tuple[int, int]], *extra: str):
    data = write_questions(tmp_path, questions)
    recipe = tiny_recipe(tmp_path, model_dir, train_files=[data], save_only_model=True)
    return parse_train_args(["--config", str(recipe), *extra])


@pytest.fixture
def loss_calls(monkeypatch):
    """How many times TRL's own loss (forward + backward) ran."""
    calls = []
    original = GRPOTrainer.compute_loss

    def counting(self, *args, **kwargs):
        calls.append(self.state.global_step + 1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "compute_loss", counting)
    return calls


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _changed(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return any(not torch.equal(wa[k], wb[k]) for k in wa)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_group_signal_ignores_unscorable_rewards():
    assert group_has_signal([1.0, -1.0]) and not group_has_signal([1.0, 1.0, None])
    assert not group_has_signal([None, None]) and group_has_signal([1.0, None, -1.0])
    assert informative_groups([1, 1, 1, -1], 2) == [False, True]
    with pytest.raises(ValueError, match="groups of 4"):
        informative_groups([1, 1, 1], 4)


@pytest.mark.parametrize("mode", ["skip", "coast"])
def test_a_step_without_signal_is_never_computed(tmp_path, tiny_model_dir, loss_calls, mode):
    # Step 1 trains on an informative question, step 2 on one whose answers are all right.
    # One group per step, batches drawn without replacement: the order is TRL's shuffle; we check both.
    factory = _engine_factory()
    cfg = _recipe(tmp_path, tiny_model_dir, [(2, 3), (3, 5)], "--zero_signal_updates", mode)
    assert run_training(*cfg, engine_factory=factory) == 0
    run = tmp_path / "run"
    rows = _metrics(run)
    dumps = {r["step"]: [json.loads(x) for x in (run / "samples" / f"step_{r['step']:06d}.jsonl").open()] for r in rows}
    silent = [s for s, d in dumps.items() if len({x["reward"] for x in d}) == 1]
    assert len(silent) == 1  # one step of each kind
    (quiet,) = silent
    loud = 3 - quiet
    assert loss_calls == [loud]  # TRL's loss ran for the informative step only
    by_step = {r["step"]: r for r in rows}
    assert by_step[quiet]["signal/informative_groups"] == 0 and by_step[loud]["signal/informative_groups"] == 1
    assert by_step[quiet]["signal/skipped_microbatches"] == 1 and by_step[loud]["signal/skipped_microbatches"] == 0
    assert by_step[quiet]["signal/update_skipped"] == (1.0 if mode == "skip" else 0.0)
    ckpt = run / "checkpoints"
    first, second = _changed(tiny_model_dir, ckpt / "checkpoint-1"), _changed(ckpt / "checkpoint-1", ckpt / "checkpoint-2")
    moved = {1: first, 2: second}
    assert moved[loud]  # the informative step updates the weights
    if quiet == 2:
        # After an update, Adam's moments keep moving the weights on a zero gradient (coast, TRL's dynamics);
        # skip leaves them exactly where they were.
        assert moved[quiet] == (mode == "coast")
    else:
        assert not moved[quiet]  # no moments yet: even coasting cannot move


def test_one_informative_group_among_silent_ones_is_trained(tmp_path, tiny_model_dir, loss_calls):
    # Two groups per step in two micro-batches (TRL shuffles the samples across them): both are computed.
    cfg = _recipe(tmp_path, tiny_model_dir, [(2, 3), (3, 5)], "--gradient_accumulation_steps", "2",
                  "--max_steps", "1")
    assert run_training(*cfg, engine_factory=_engine_factory()) == 0
    (row,) = _metrics(tmp_path / "run")
    assert row["signal/informative_groups"] == 1 and row["signal/groups"] == 2
    assert row["signal/skipped_microbatches"] == 0 and row["signal/update_skipped"] == 0
    assert loss_calls == [1, 1]
    assert _changed(tiny_model_dir, tmp_path / "run" / "checkpoints" / "checkpoint-1")


def test_dynamic_sampling_replaces_silent_groups_and_scores_the_replacement(tmp_path, tiny_model_dir, loss_calls):
    questions = [(3, 5), (5, 7), (2, 3), (4, 9), (6, 7), (8, 3)]  # two silent, four informative
    cfg = _recipe(tmp_path, tiny_model_dir, questions, "--dynamic_sampling", "true", "--max_steps", "3",
                  "--gradient_accumulation_steps", "2")
    assert run_training(*cfg, engine_factory=_engine_factory()) == 0
    run = tmp_path / "run"
    rows = _metrics(run)
    assert all(r["signal/informative_groups"] == r["signal/groups"] == 2 for r in rows)
    assert sum(r["signal/groups_regenerated"] for r in rows) >= 1  # the two silent questions came up somewhere
    assert loss_calls == [1, 1, 2, 2, 3, 3]
    for step in (1, 2, 3):
        dump = [json.loads(x) for x in (run / "samples" / f"step_{step:06d}.jsonl").open()]
        for row in dump:
            a, b = map(int, QUESTION.findall(row["problem"])[0])
            assert a % 2 == 0  # only informative questions are trained on
            assert row["gold"] == str(a * b) and row["question_id"] == f"q{a}x{b}"
            assert row["correct"] == (row["extracted"] == row["gold"])  # scored against the replacement's gold


def test_dynamic_sampling_stops_at_its_bound(tmp_path, tiny_model_dir, loss_calls):
    questions = [(3, 5), (5, 7), (7, 9), (9, 11), (1, 3), (11, 13)]  # nothing to learn anywhere
    cfg = _recipe(tmp_path, tiny_model_dir, questions, "--dynamic_sampling", "true",
                  "--dynamic_sampling_max_rounds", "2", "--max_steps", "1", "--zero_signal_updates", "skip")
    assert run_training(*cfg, engine_factory=_engine_factory()) == 0
    (row,) = _metrics(tmp_path / "run")
    assert row["signal/sampling_rounds"] == 2 and row["signal/groups_regenerated"] == 2
    assert row["signal/informative_groups"] == 0 and row["signal/update_skipped"] == 1
    assert loss_calls == []
    assert not _changed(tiny_model_dir, tmp_path / "run" / "checkpoints" / "checkpoint-1")
