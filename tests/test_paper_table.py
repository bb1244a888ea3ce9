"""bench/paper_table.py's setup: every row trains on the same questions under the same task spec, the
expert covers the whole mix, and the evaluation sets never overlap training (no model is loaded)."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_table():
    spec = importlib.util.spec_from_file_location("paper_table", REPO / "bench" / "paper_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_table"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("smoke", [False, True])
def test_rl_and_sft_rows_share_training_questions_and_task_spec(paper_table, smoke):
    from torl.sft.config import parse_sft_args
    from torl.train.config import parse_train_args, task_spec
    from torl.train.data import load_questions

    torl_cfg, grpo_cfg = parse_train_args(["--config", str(paper_table.rl_recipe(smoke))])
    settings, sft_cfg = parse_sft_args(["--config", str(paper_table.sft_recipe(smoke))])
    assert settings.task() == task_spec(torl_cfg)
    assert settings.task().max_tool_calls == 2  # one retry after a failed program
    assert load_questions(settings.questions_config(), seed=sft_cfg.seed) == load_questions(torl_cfg, seed=grpo_cfg.seed)


def test_the_expert_writes_code_for_every_training_kind(paper_table):
    from torl.data.synthetic import generate_tasks
    from torl.sft.expert import expert_code

    for kind in paper_table.MIX["train_tasks"]:
        tasks = generate_tasks(kind, 20, seed=0, difficulty=paper_table.MIX["train_task_difficulty"])
        assert all(expert_code(t["problem"]) for t in tasks), kind


def test_evaluation_sets_are_held_out_and_cover_every_family(paper_table):
    from torl.train.config import parse_train_args
    from torl.train.data import load_questions

    torl_cfg, grpo_cfg = parse_train_args(["--config", str(paper_table.rl_recipe(False))])
    train, heldout = load_questions(torl_cfg, seed=grpo_cfg.seed)
    sets = paper_table.question_sets(train, heldout, 5)
    families = [f for group in paper_table.SETS.values() for f in group]
    assert list(sets) == [f for f in families if f in sets] and set(sets) == set(families)  # gsm8k ships with torl
    assert all(len(qs) == 5 for qs in sets.values())
    trained = {q["problem"] for q in train}
    assert not trained & {q["problem"] for qs in sets.values() for q in qs}
    held = {q["question_id"] for q in heldout}
    for kind, family in paper_table.KINDS.items():
        assert all(q["question_id"] in held and f"-{kind}-" in q["question_id"] for q in sets[family])
