"""Is a predicted answer equivalent to the gold one? The comparison itself, without a deadline.

This runs inside the verifier workers (`torl.reward.pool`), which own the deadline: math-verify's
own signal-based timeouts are switched off here (`parsing_timeout=None`, `timeout_seconds=None`)
because they only work in a main thread; the worker interrupts or kills a check instead.

Order of the checks: identical after clean-up -> multiple-choice letters (gold is a letter) ->
plain text (either side is words) -> math-verify on the cleaned answers -> math-verify on the
raw answers (so clean-up can only add matches in the math branch, never lose one).
"""

from __future__ import annotations

import functools
import logging

from math_verify import parse, verify

from torl.reward.normalize import (
    choice_letters,
    clean_answer,
    predicted_choice_letters,
    same_text,
    text_answer,
)
from torl.reward.verdict import Verdict

# We disable math-verify's timeouts on purpose; its one-time warning about that is noise here.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_SHOWN_CHARS = 200


def _shown(parsed: list) -> str:
    # The first parse is the math-verify reading; a trailing string is only its raw fallback.
    text = str(parsed[0]) if parsed else "(nothing parsed)"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


@functools.lru_cache(maxsize=4096)
def parse_answer(answer: str) -> list:
    """math-verify's parse of a bare answer (wrapped in a box so LaTeX extraction applies).

    Cached: a GRPO group checks many responses against the same gold.
    """
    # math-verify's default extraction configs on purpose: its compiled-regex cache holds one
    # config, so a custom one alongside the default would recompile the regexes on every call.
    return parse("\\boxed{" + answer + "}", parsing_timeout=None)


def _is_math(parsed: list) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _math_verify(gold: str, pred: str) -> tuple[bool, list, list]:
    g, p = parse_answer(gold), parse_answer(pred)
    # allow_set_relation_comp: `x > 3` answers `(3, \infty)`, as graders of MATH accept.
    return verify(g, p, allow_set_relation_comp=True, timeout_seconds=None), g, p


def _second_readings(gold: str, predicted: str, g: str, p: str) -> list[tuple[str, str]]:
    """Other readings tried only after a mismatch: the raw strings (clean-up never loses a
    match math-verify alone would make), and a percentage gold without its `%` when the
    prediction is a bare number (`12.5\\%` asked as "what percent": `12.5`)."""
    readings = []
    if g != gold.strip() or p != predicted.strip():
        readings.append((gold.strip(), predicted.strip()))
    if g.endswith("\\%") and "%" not in p:
        readings.append((g[:-2].strip(), p))
    return readings


def compare(gold: str, predicted: str) -> Verdict:
    """Compare two bare answers (no extraction from a response: see `extract_answer`)."""
    g, p = clean_answer(gold), clean_answer(predicted)
    if not g:
        return Verdict(False, reason="empty gold answer")
    if not p:
        return Verdict(False, gold_parsed=g, reason="empty predicted answer")
    if g.replace(" ", "") == p.replace(" ", ""):
        return Verdict(True, gold_parsed=g, pred_parsed=p, reason="identical after normalization")

    gold_letters = choice_letters(g)
    if gold_letters is not None:
        pred_letters = predicted_choice_letters(p)
        if pred_letters is not None:
            same = gold_letters == pred_letters
            return Verdict(same, gold_parsed=",".join(sorted(gold_letters)),
                           pred_parsed=",".join(sorted(pred_letters)),
                           reason="same choice letter(s)" if same else "different choice letter(s)")

    g_text, p_text = text_answer(g), text_answer(p)
    if g_text is not None or p_text is not None:
        same = g_text is not None and p_text is not None and same_text(g_text, p_text)
        return Verdict(same, gold_parsed=g_text or g, pred_parsed=p_text or p,
                       reason="same text" if same else "different text answers")

    same, g_parsed, p_parsed = _math_verify(g, p)
    for g_alt, p_alt in _second_readings(gold, predicted, g, p):
        if same:
            break
        same, g_try, p_try = _math_verify(g_alt, p_alt)
        if same:
            g_parsed, p_parsed = g_try, p_try
    if not _is_math(g_parsed):
        reason = "gold is not parseable math; compared as strings"
    elif not _is_math(p_parsed):
        reason = "prediction is not parseable math" if not same else "equal as strings"
    else:
        reason = "mathematically equivalent" if same else "mathematically different"
    return Verdict(same, gold_parsed=_shown(g_parsed), pred_parsed=_shown(p_parsed), reason=reason)


def parseable(answer: str) -> bool:
    """Whether a gold answer is checkable: math that parses, a choice letter, or plain text."""
    a = clean_answer(answer)
    if not a:
        return False
    if choice_letters(a) is not None or text_answer(a) is not None:
        return True
    return _is_math(parse_answer(a))
