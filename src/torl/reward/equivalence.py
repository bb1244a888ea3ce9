"""Is a predicted answer equivalent to the gold one? The comparison itself, without a deadline.

This runs inside the verifier workers (`torl.reward.pool`), which own the deadline: math-verify's
own signal-based timeouts are switched off here (`parsing_timeout=None`, `timeout_seconds=None`)
because they only work in a main thread; the worker interrupts or kills a check instead.

Answers in several parts: an answer written in several boxes (`\\boxed{1} and \\boxed{-2}`,
see `extract.final_boxes`) is the list of its boxes. When the gold has several parts (several
boxes, or math-verify reads it as a set of 2+ elements: `(2, 2), (6, 2)`, `1, -2`) a prediction
in several boxes is compared with all its parts; against a single-part gold only its last box
counts, as for any response.

Ordered vs unordered: a bare list (`10, 4, -2`, or parts in separate boxes) is the set of its
parts, so order does not matter: that is how "enter all the solutions, separated by commas"
answers are written. Order matters inside brackets: tuples, points, vectors, intervals and
matrices (`(10, 4, -2)` is not `(4, 10, -2)`). An ordered answer written without brackets
cannot be told from a list and is compared as a list.

Order of the checks: identical after clean-up -> multiple-choice letters (gold is a letter) ->
clock times (both sides) -> piecewise `cases` (either side) -> plain text (either side is words)
-> units and decimal commas (`readings`) -> math-verify on the cleaned answers, with a lone `i`
read as the imaginary unit -> a percentage gold without its `%` against a bare number.
"""

from __future__ import annotations

import functools
import logging
import re

import sympy
from math_verify import parse, verify

from torl.reward.extract import final_boxes
from torl.reward.normalize import (
    choice_letters,
    clean_answer,
    predicted_choice_letters,
    same_text,
    text_answer,
)
from torl.reward.piecewise import same_pieces
from torl.reward.readings import decimal_comma_reading, same_clock_time, unit_reading
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


def _free_symbol_names(parsed: list) -> set[str]:
    return {s.name for p in parsed if not isinstance(p, str) for s in getattr(p, "free_symbols", ())}


def _imaginary_unit(parsed: list) -> list:
    """`parsed` with the symbol `i` replaced by sympy's imaginary unit."""
    out = []
    for p in parsed:
        if not isinstance(p, str):
            p = p.xreplace({s: sympy.I for s in p.free_symbols if s.name == "i"})
        out.append(p)
    return out


def _math_verify(gold: str, pred: str) -> tuple[bool, list, list]:
    g, p = parse_answer(gold), parse_answer(pred)
    names = _free_symbol_names(g) | _free_symbol_names(p)
    if names == {"i"}:  # `i` is the only letter on both sides: a complex number, `1+2i` = `i(2-i)`
        g, p = _imaginary_unit(g), _imaginary_unit(p)
    # allow_set_relation_comp: `x > 3` answers `(3, \infty)`, as graders of MATH accept.
    return verify(g, p, allow_set_relation_comp=True, timeout_seconds=None), g, p


def _second_readings(g: str, p: str) -> list[tuple[str, str]]:
    """Other readings tried only after a mismatch: a percentage gold without its `%` when the
    prediction is a bare number (`12.5\\%` asked as "what percent": `12.5`).

    The raw answers are not tried again: clean-up fixes readings math-verify gets wrong
    (`1 1/2` is not 1, a `\\\\ ` row break is not a space), and a raw retry would undo them."""
    if g.endswith("\\%") and "%" not in p:
        return [(g[:-2].strip(), p)]
    return []


def _has_parts(gold: str) -> bool:
    """Whether math-verify reads the gold as a set of two or more parts."""
    parsed = parse_answer(clean_answer(gold))
    return bool(parsed) and isinstance(parsed[0], sympy.FiniteSet) and len(parsed[0]) > 1


def _parts(gold: str, predicted: str) -> tuple[str, str]:
    """Both answers with their boxes resolved: the parts of a run of boxes joined as a list,
    except a prediction's parts against a single-part gold, where the last box is the answer."""
    g_boxes, p_boxes = final_boxes(gold), final_boxes(predicted)
    if g_boxes:
        gold = ", ".join(g_boxes)
    if len(p_boxes) > 1 and len(g_boxes) < 2 and not _has_parts(gold):
        return gold, p_boxes[-1]
    return gold, ", ".join(p_boxes) if p_boxes else predicted


def compare(gold: str, predicted: str) -> Verdict:
    """Compare two bare answers (no extraction from a response: see `extract_answer`); either
    may be written in boxes, several boxes being the parts of one answer."""
    gold, predicted = _parts(gold, predicted)
    return _compare_one(gold, predicted)


def _compare_one(gold: str, predicted: str) -> Verdict:
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

    same_time = same_clock_time(g, p)
    if same_time is not None:
        return Verdict(same_time, gold_parsed=g, pred_parsed=p,
                       reason="same time of day" if same_time else "different times of day")

    same_piecewise = same_pieces(g, p, lambda a, b: _compare_one(a, b).equivalent)
    if same_piecewise is not None:
        return Verdict(same_piecewise, gold_parsed=g, pred_parsed=p,
                       reason="same pieces" if same_piecewise else "different piecewise answers")

    g_text, p_text = text_answer(g), text_answer(p)
    if g_text is not None or p_text is not None:
        same = g_text is not None and p_text is not None and same_text(g_text, p_text)
        return Verdict(same, gold_parsed=g_text or g, pred_parsed=p_text or p,
                       reason="same text" if same else "different text answers")

    numbers = unit_reading(g, p)
    if numbers is False:
        return Verdict(False, gold_parsed=g, pred_parsed=p, reason="different units")
    g, p = numbers or decimal_comma_reading(g, p) or (g, p)

    same, g_parsed, p_parsed = _math_verify(g, p)
    for g_alt, p_alt in _second_readings(g, p):
        if same:
            break
        same, g_try, p_try = _math_verify(g_alt, p_alt)
        if same:
            g_parsed, p_parsed = g_try, p_try
    if same and _NUMBER.match(g.replace(" ", "")) and _unevaluated_arithmetic(p):
        # A reward hack RL finds at once: answering a numeric question with its own expression
        # (`\boxed{608 \times 83}`), which symbolic equality accepts. The answer must be the number.
        return Verdict(False, gold_parsed=_shown(g_parsed), pred_parsed=_shown(p_parsed),
                       reason="unevaluated arithmetic: the answer must be the number")
    if not _is_math(g_parsed):
        reason = "gold is not parseable math; compared as strings"
    elif not _is_math(p_parsed):
        reason = "prediction is not parseable math" if not same else "equal as strings"
    else:
        reason = "mathematically equivalent" if same else "mathematically different"
    return Verdict(same, gold_parsed=_shown(g_parsed), pred_parsed=_shown(p_parsed), reason=reason)


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
# an operator between two operands (digits, braces, brackets); a leading minus sign is not one
_ARITHMETIC = re.compile(r"[\d})\]]\s*(\\times|\\cdot|\\div|\\pm|[*×÷/+^-])\s*[\d{(\[\\-]")
_FACTORIAL = re.compile(r"[\d})\]]\s*!")  # 5!, (n)!: a product left undone (\frac{39!}{36!} for 54834)
# a function of numbers left undone: \binom{20}{8} for 125970, \gcd(12, 18) for 6
_UNDONE_FUNCTION = re.compile(r"\\[dt]?binom\b|\\choose\b|\\gcd\b|\\operatorname\s*\{\s*(lcm|gcd)\s*\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_SCIENTIFIC = re.compile(r"^-?\d+(\.\d+)?\s*(\\times|\\cdot|×|\*)\s*10\s*\^\s*\{?\s*-?\d+\s*\}?$")


def _unevaluated_arithmetic(answer: str) -> bool:
    """`608 \\times 83`, `3+4`, `2^{10}`, `5!`, `\\binom{9}{3}`: an operation left for the reader; scientific
    notation is a number."""
    a = _DEGREES.sub("", answer.strip().removeprefix("$").removesuffix("$").strip())  # 45^\\circ is a number
    undone = _ARITHMETIC.search(a) or _FACTORIAL.search(a) or _UNDONE_FUNCTION.search(a)
    return bool(undone) and not _SCIENTIFIC.match(a)


def parseable(answer: str) -> bool:
    """Whether a gold answer is checkable: math that parses, a choice letter, or plain text."""
    boxes = final_boxes(answer)
    a = clean_answer(", ".join(boxes) if boxes else answer)
    if not a:
        return False
    if choice_letters(a) is not None or text_answer(a) is not None:
        return True
    return _is_math(parse_answer(a))
