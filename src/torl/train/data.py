"""Training questions: record files and synthetic tasks → one list of questions, minus a held-out split.

A question is `torl.question`'s dict `{question_id, problem, gold}`; the trainer's dataset adds the rendered
`prompt` (TRL hands that column to our rollout function; every other column reaches the reward
function, which is how dumps and rewards know the question id and gold answer).
"""

from __future__ import annotations

import glob
import random
import sys

from torl.errors import UserError
from torl.question import make_question


def load_questions(cfg, seed: int) -> tuple[list[dict], list[dict]]:
    """Return `(train, heldout)` questions for `cfg` (a `TorlConfig`), deterministic in `seed`."""
    present = [p for p in cfg.optional_train_files if glob.glob(p)]
    for missing in sorted(set(cfg.optional_train_files) - set(present)):
        print(f"torl: optional training file {missing} not found; training without it", file=sys.stderr)
    pool = _file_questions(cfg.train_files + present, cfg, level_cap=cfg.train_max_level, limit=cfg.train_file_limit, seed=seed)
    if cfg.train_tasks:
        pool += _synthetic_questions(cfg.train_tasks, cfg.train_task_count, seed, cfg.train_task_difficulty)
    _check_unique(pool)
    random.Random(seed).shuffle(pool)
    heldout: list[dict] = []
    if cfg.eval_files:
        heldout = _file_questions(cfg.eval_files, cfg, level_cap=None, limit=None, seed=seed)
    if cfg.eval_holdout > 0:
        if cfg.eval_holdout >= len(pool):
            raise UserError(f"eval_holdout={cfg.eval_holdout} leaves no training questions (pool has {len(pool)})")
        # Holding out from a shuffled mix keeps the eval set drawn from the same task mix as training.
        heldout, pool = heldout + pool[: cfg.eval_holdout], pool[cfg.eval_holdout :]
    held_ids = {q["question_id"] for q in heldout}
    train = [q for q in pool if q["question_id"] not in held_ids]
    if not train:
        raise UserError("no training questions left after filtering; loosen train_max_level or add data")
    return train, heldout


def _file_questions(patterns, cfg, level_cap: int | None, limit: int | None, seed: int) -> list[dict]:
    from torl.data.records import DataError, read_records

    questions = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                rows = read_records(path) if _is_normalized(cfg) else _read_any(path)
            except DataError as e:
                raise UserError(str(e)) from None
            for i, row in enumerate(rows):
                for column in (cfg.problem_column, cfg.answer_column):
                    if column not in row:
                        raise UserError(f"{path} row {i}: no column {column!r}; set problem_column/answer_column")
                if level_cap is not None and int(row.get("level") or 99) > level_cap:
                    continue
                qid = row.get(cfg.id_column, f"{path}:{i}")
                questions.append(make_question(qid, row[cfg.problem_column], row[cfg.answer_column]))
    if limit is not None and len(questions) > limit:
        questions = random.Random(seed).sample(questions, limit)
    return questions


def _is_normalized(cfg) -> bool:
    # torl's own record format (the default column names) gets the strict reader and its checks.
    return (cfg.problem_column, cfg.answer_column, cfg.id_column) == ("problem", "answer", "id")


def _read_any(path: str) -> list[dict]:
    """Rows of a JSONL/parquet file with arbitrary columns (for non-normalized datasets)."""
    import datasets

    kind = "parquet" if path.endswith(".parquet") else "json"
    return list(datasets.load_dataset(kind, data_files=path, split="train"))


def _synthetic_questions(kinds: list[str], n: int, seed: int, difficulty: int) -> list[dict]:
    from torl.data.records import record_to_question
    from torl.data.synthetic import generate_tasks

    try:
        rows = generate_tasks(kinds, n, seed=seed, difficulty=difficulty)
    except (ValueError, KeyError) as e:
        raise UserError(f"train_tasks: {e}") from None
    return [record_to_question(r) for r in rows]


def _check_unique(questions: list[dict]) -> None:
    seen: set[str] = set()
    for q in questions:
        if q["question_id"] in seen:
            raise UserError(f"duplicate question id {q['question_id']!r} across training sources")
        seen.add(q["question_id"])
