"""Accuracy of answer graders on a labelled corpus of (gold, response, equivalent?) rows.

Three graders: torl (`extract_answer` + `check`), math-verify with its defaults (parse the gold
as `$gold$` and the whole response, then `verify`), and exact match after MATH's
`strip_string` on the last box. Used by tests/test_reward_corpus.py and bench/verify.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torl.reward.extract import extract_answer, extract_boxed
from torl.reward.string_match import string_match


def load_corpus(path: str | Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                missing = {"gold", "response", "equivalent"} - row.keys()
                if missing:
                    raise ValueError(f"{path}:{n}: row lacks {sorted(missing)}")
                rows.append(row)
    return rows


def torl_grader(gold: str, response: str) -> bool:
    from torl.reward import check

    answer = extract_answer(response)
    return answer is not None and check(gold, answer).equivalent


def math_verify_grader(gold: str, response: str) -> bool:
    """math-verify exactly as its README uses it (its own signal timeouts: main thread only)."""
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$"), parse(response)))


def string_match_grader(gold: str, response: str) -> bool:
    answer = extract_boxed(response)
    return answer is not None and string_match(gold, answer)


GRADERS: dict[str, Callable[[str, str], bool]] = {
    "torl": torl_grader,
    "math_verify_default": math_verify_grader,
    "string_match": string_match_grader,
}


def evaluate(rows: list[dict]) -> dict[str, dict]:
    """Per grader: accuracy, and the rows it got wrong."""
    report = {}
    for name, grader in GRADERS.items():
        mistakes = [r for r in rows if grader(r["gold"], r["response"]) != r["equivalent"]]
        report[name] = {"accuracy": 1 - len(mistakes) / len(rows), "mistakes": mistakes}
    return report
