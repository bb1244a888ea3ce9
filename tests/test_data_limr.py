"""LIMR learning-impact selection on constructed trajectories whose scores are known."""

import json

import numpy as np
import pytest

from torl.data.limr import build_trajectories, lim_scores, limr_select, load_samples
from torl.data.records import DataError

# accuracy per epoch, 4 samples per question per epoch (so every value is a multiple of 1/4)
CURVES = {
    "learns": [0.0, 0.25, 0.5, 0.75, 1.0],   # follows the run's rise
    "early": [0.0, 0.5, 1.0, 1.0, 1.0],      # learnt, faster than the average
    "solved": [1.0, 1.0, 1.0, 1.0, 1.0],     # nothing to learn
    "never": [0.0, 0.0, 0.0, 0.0, 0.0],      # never learnt: furthest from the average
    "unlearns": [1.0, 0.75, 0.5, 0.25, 0.0], # gets worse
}
SAMPLES = 4


def write_run(run_dir, curves, questions_per_step=1, epoch_key=False):
    """One question per step (steps 1..), iterating all questions once per epoch."""
    qids = sorted(curves)
    step = 0
    rows_by_step = {}
    for epoch in range(len(next(iter(curves.values())))):
        for start in range(0, len(qids), questions_per_step):
            step += 1
            rows = []
            for q in qids[start:start + questions_per_step]:
                n_correct = round(curves[q][epoch] * SAMPLES)
                for s in range(SAMPLES):
                    ok = s < n_correct
                    row = {"step": step, "question_id": q, "problem": f"problem {q}", "gold": "1",
                           "reward": 1.0 if ok else -1.0, "correct": ok}
                    if epoch_key:
                        row["epoch"] = epoch
                    rows.append(row)
            rows_by_step[step] = rows
    (run_dir / "samples").mkdir(parents=True)
    for step, rows in rows_by_step.items():
        (run_dir / "samples" / f"step_{step:06d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return step


def expected_scores(curves):
    values = np.array([curves[q] for q in sorted(curves)])
    avg = values.mean(axis=0)
    return {q: 1 - ((values[i] - avg) ** 2).sum() / ((1 - avg) ** 2).sum() for i, q in enumerate(sorted(curves))}


def test_lim_formula_by_hand():
    # two questions, two epochs: avg = [0.25, 0.75]; denominator = 0.75^2 + 0.25^2 = 0.625
    values = np.array([[0.0, 1.0], [0.5, 0.5]])
    s = lim_scores(values)
    assert s[0] == pytest.approx(1 - (0.25**2 + 0.25**2) / 0.625)
    assert s[1] == pytest.approx(1 - (0.25**2 + 0.25**2) / 0.625)
    assert lim_scores(np.ones((3, 4))).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("layout", ["visit", "steps_per_epoch", "epoch_key"])
def test_scores_match_the_formula_for_every_dump_layout(tmp_path, layout):
    per_step = 2 if layout != "visit" else 1
    write_run(tmp_path, CURVES, questions_per_step=per_step, epoch_key=layout == "epoch_key")
    steps_per_epoch = 3 if layout == "steps_per_epoch" else None  # 5 questions, 2 per step
    kept, report, table = limr_select(None, tmp_path, threshold=0.6, steps_per_epoch=steps_per_epoch)
    want = expected_scores(CURVES)
    assert {row["question_id"]: row["score"] for row in table} == pytest.approx(want)
    assert report.details["epochs"] == 5 and report.details["filled_points"] == 0
    ranking = [row["question_id"] for row in table]
    assert ranking == ["learns", "early", "unlearns", "solved", "never"]
    assert {r["id"] for r in kept} == {q for q, s in want.items() if s >= 0.6}
    assert [r["id"] for r in kept] == ["learns"]  # 1 - 0.415/1.09 = 0.62; "early" scores 0.41


def test_top_k_and_dataset_records(tmp_path):
    write_run(tmp_path, CURVES)
    dataset = [{"id": q, "problem": f"problem {q}", "answer": "1", "source": "t"} for q in ["never", "learns", "extra", "early"]]
    kept, report, _ = limr_select(dataset, tmp_path, threshold=None, top_k=2)
    assert [r["id"] for r in kept] == ["learns", "early"]  # dataset order is kept
    assert report.removed == {"low_learning_impact": 1, "not_in_run": 1}
    assert report.details["run_questions_not_in_dataset"] == 2  # solved, unlearns
    assert report.n_in == report.n_out + sum(report.removed.values())


def test_missing_epochs_are_filled_and_counted(tmp_path):
    write_run(tmp_path, {"a": [0.0, 0.5, 1.0], "b": [0.0, 0.25, 0.5]})
    (tmp_path / "samples" / "step_000003.jsonl").unlink()  # question a, second epoch
    traj = build_trajectories(load_samples(tmp_path))
    # with a's second visit gone, a has two visits: epochs 0 and 2 shift to visits 0 and 1
    assert traj.question_ids == ["a", "b"]
    assert traj.values[0].tolist() == [0.0, 1.0, 1.0] and traj.observed[0].tolist() == [True, True, False]


def test_reward_signal_is_rescaled(tmp_path):
    write_run(tmp_path, CURVES)
    _, _, by_correct = limr_select(None, tmp_path)
    _, _, by_reward = limr_select(None, tmp_path, signal="reward")
    assert [r["score"] for r in by_reward] == pytest.approx([r["score"] for r in by_correct])


def test_bad_dumps_name_file_and_line(tmp_path):
    with pytest.raises(DataError, match="run directory not found"):
        limr_select(None, tmp_path / "nope")
    (tmp_path / "samples").mkdir()
    with pytest.raises(DataError, match="no sample dumps"):
        limr_select(None, tmp_path)
    (tmp_path / "samples" / "step_000001.jsonl").write_text('{"step": 1, "question_id": "a"}\n')
    with pytest.raises(DataError, match=r"step_000001.jsonl:1: sample row lacks \['correct'\]"):
        limr_select(None, tmp_path)
    with pytest.raises(DataError, match="exactly one of threshold or top_k"):
        limr_select(None, tmp_path, threshold=0.5, top_k=3)
