"""`torl.run_layout`: the one place the run directory's names live; writers and readers agree through it."""

import pytest

from torl.analysis.rundata import load_run
from torl.data.limr import sample_files
from torl.run_layout import RunLayout, sample_file_name
from torl.tir.task import run_model


def test_sample_files_come_in_step_then_rank_order(tmp_path):
    run = RunLayout(tmp_path)
    run.samples.mkdir()
    for step, rank in [(10, 0), (2, 1), (2, 0), (9, 0)]:
        run.sample_file(step, rank).write_text(f'{{"step": {step}, "rank": {rank}, "question_id": "q", "correct": true}}\n')
    assert sample_file_name(2, 1) == "step_000002.rank1.jsonl"
    expected = ["step_000002.jsonl", "step_000002.rank1.jsonl", "step_000009.jsonl", "step_000010.jsonl"]
    assert [p.name for p in run.sample_files()] == expected
    assert [p.name for p in sample_files(tmp_path)] == expected          # LIMR reads the same files
    assert [(r["step"], r["rank"]) for r in load_run(tmp_path).samples] == [(2, 0), (2, 1), (9, 0), (10, 0)]  # so do reports


def test_checkpoints_sort_by_number_not_by_name(tmp_path):
    run = RunLayout(tmp_path)
    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-x", "other"):
        (run.checkpoints / name).mkdir(parents=True)
    assert [p.name for p in run.checkpoint_dirs()] == ["checkpoint-9", "checkpoint-10"]
    assert run_model(tmp_path).endswith("checkpoint-10")


def test_heldout_files_are_before_or_after(tmp_path):
    run = RunLayout(tmp_path)
    assert run.heldout_rows("before").name == "eval_before.jsonl"
    assert run.heldout_summary("after").name == "eval_after.json"
    with pytest.raises(ValueError, match="before or after"):
        run.heldout_rows("during")
