"""A question, the one shape training, evaluation and analysis pass around: `{question_id, problem, gold}`.

These names are canonical because TRL hands dataset columns to the reward function as keyword
arguments: `question_id` and `gold` are its parameter names (`torl.train.rewards`). Every per-sample
row torl writes (training sample dumps, held-out rows, eval trajectories) carries the same three
keys, which is how the report viewer and LIMR read them back.

Record files on disk (`torl.data.records`, the shipped `torl/bundled_data`) call two of them `id` and `answer`;
`torl.data.records.record_to_question` is the one place that maps them. This module imports nothing
from torl, so every package can use it.
"""

from __future__ import annotations

QUESTION_FIELDS = ("question_id", "problem", "gold")


def make_question(question_id: object, problem: object, gold: object) -> dict:
    """A question dict; every value is text (ids from files may be ints, golds may be numbers)."""
    return {"question_id": str(question_id), "problem": str(problem), "gold": str(gold)}
