"""Accuracy of answer graders on labelled corpora.

Two corpora. The project's own (`tests/data/verifier_corpus.jsonl`: gold, response, equivalent?)
is graded by three graders: torl (`score`, the training reward path: the final boxed answer of
the response), math-verify with its defaults (parse the gold as `$gold$` and the whole
response, then `verify`), and exact match after MATH's `strip_string` on the last box.

The other is Math-Verify's own test suite (`tests/data/math_verify_suite.jsonl`, extracted by
`tests/data/extract_math_verify_cases.py`): upstream's labels, checked against raw math-verify
run exactly as the upstream test runs it, and against torl on the cases that fit torl's input
contract (`suite_contract`). Used by tests/test_reward_corpus.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from torl.reward.extract import extract_boxed
from torl.reward.string_match import string_match


def load_corpus(path: str | Path, required: tuple[str, ...] = ("gold", "response", "equivalent")) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                missing = set(required) - row.keys()
                if missing:
                    raise ValueError(f"{path}:{n}: row lacks {sorted(missing)}")
                rows.append(row)
    return rows


def torl_grader(gold: str, response: str) -> bool:
    from torl.reward import score

    return score(response, gold).correct


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


# ---- Math-Verify's suite ------------------------------------------------------------------
# The math-verify settings torl always uses (equivalence.py): a label that flips under them
# tests a setting, not the verifier, and is outside torl's contract.
TORL_SETTINGS = {"precision": 6, "strict": True, "allow_set_relation_comp": True}
_VERIFY_DEFAULTS = {"precision": 6, "strict": True, "allow_set_relation_comp": False}
_MATH_SPAN = re.compile(r"\$\$.+?\$\$|\$.+?\$|\\\(.+?\\\)|\\\[.+?\\\]", re.DOTALL)
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MAX_BARE_TOKENS = 3


def _bare(text: str) -> bool:
    """A bare answer, not prose: one math span, or a few tokens with no math delimiters."""
    s = text.strip().rstrip(".").strip()
    if _MATH_SPAN.fullmatch(s):
        return len(_MATH_SPAN.findall(s)) == 1
    return not re.search(r"\$|\\\(|\\\[", s) and len(s.split()) <= _MAX_BARE_TOKENS


def raw_math_verify(case: dict, **overrides) -> bool:
    """math-verify's verdict with the upstream test's own harness and settings (or `overrides`)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    s = {**_VERIFY_DEFAULTS, **case["settings"], **overrides}
    config = {}
    if "match_types" in s:  # the suite's compare_strings helper; otherwise parse's defaults
        config["extraction_config"] = [
            LatexExtractionConfig(boxed_match_priority=0) if t == "latex" else ExprExtractionConfig()
            for t in s["match_types"]]
    return bool(verify(parse(case["gold"], **config), parse(case["prediction"], **config),
                       float_rounding=s["precision"], strict=s["strict"],
                       allow_set_relation_comp=s["allow_set_relation_comp"]))


def suite_contract(case: dict) -> str | None:
    """Why a suite case is outside torl's input contract, or None when it fits.

    torl grades a response by its boxed answer (`score`) or a bare answer (`check`) against a
    gold answer or a solution with a boxed answer, with fixed math-verify settings. Out: free
    prose without a box on either side (answer extraction from prose is not torl's job in
    training), and labels that change under torl's settings.
    """
    for side in ("gold", "prediction"):
        if not _BOX.search(case[side]) and not _bare(case[side]):
            return f"{side} is prose without a box"
    if raw_math_verify(case, **TORL_SETTINGS) != case["expected"]:
        differs = {k: v for k, v in {**_VERIFY_DEFAULTS, **case["settings"]}.items() if TORL_SETTINGS.get(k, v) != v}
        return f"label depends on a math-verify setting torl fixes otherwise: {differs}"
    return None


def torl_suite_grader(case: dict) -> bool:
    """torl on one suite case: a solution gold gives its boxed answer (as the data pipeline does),
    a boxed prediction is scored like a response, a bare one is checked as it is."""
    from torl.reward import check, score

    gold = case["gold"]
    if _BOX.search(gold):
        gold = extract_boxed(gold) or gold
    if _BOX.search(case["prediction"]):
        return score(case["prediction"], gold).correct
    return check(gold, case["prediction"]).equivalent


def evaluate_suite(cases: list[dict]) -> dict:
    """Accuracy of torl (in contract) and raw math-verify (in contract and on every case)."""
    inside = [c for c in cases if suite_contract(c) is None]
    torl_wrong = [c for c in inside if torl_suite_grader(c) != c["expected"]]
    raw_wrong = [c for c in cases if raw_math_verify(c) != c["expected"]]
    raw_wrong_inside = [c for c in raw_wrong if c in inside]
    return {
        "cases": len(cases), "in_contract": len(inside),
        "torl": {"correct": len(inside) - len(torl_wrong), "accuracy": 1 - len(torl_wrong) / len(inside),
                 "mistakes": torl_wrong},
        "math_verify_in_contract": {"correct": len(inside) - len(raw_wrong_inside),
                                    "accuracy": 1 - len(raw_wrong_inside) / len(inside)},
        "math_verify_all": {"correct": len(cases) - len(raw_wrong), "accuracy": 1 - len(raw_wrong) / len(cases)},
        "outside_contract": {c["id"]: suite_contract(c) for c in cases if c not in inside},
    }
