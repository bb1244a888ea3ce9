"""Readings of an answer that depend on the other side of the comparison: units, decimal commas
and clock times. Each function takes the two cleaned answers and says how to read them, or None
when its reading does not apply.

- Units: `10 weeks`, `10weeks`, `10 cm^2`, `10\\text{ cm}` are the number 10 with a unit. The
  numbers are compared when one side has no unit or both have the same one (`inch` = `inches`);
  two different units are different answers (`5 cm` is not `5 inches`; no conversions). A unit
  is a known abbreviation (`cm`, `kg`, `mph`...) or a word of 4+ letters; other letter strings
  are variables (`10x`, `3ab`, `2xy`) and never a unit.
- Decimal commas: `1,22` is 1.22 only when the other side is a decimal written with a point;
  otherwise a comma list stays a list (`-2,1` vs `1,-2`), and `1,000` is a thousand (clean-up).
- Clock times: when both sides are times of day, `H:MM` or `H:MM:SS` with an optional am/pm,
  they are compared as times (`20:34` is `20:34:00`; `8:30 pm` is `20:30`). A colon with one
  digit after it (`7:3`), or any other form, stays a ratio for math-verify.
"""

from __future__ import annotations

import re

_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)|-?\\frac\{\d+\}\{\d+\}"
_WORD_UNIT = r"[A-Za-z]{1,20}(?:\s+[A-Za-z]{1,20})?"  # unit words are short; longer is not a unit
_TEXT_UNIT = r"\\(?:text|mbox|mathrm|textrm)\s*\{\s*(?P<text>[A-Za-z][A-Za-z ]*?)\s*\}"
_POWER = r"\s*(?:\^\s*\{?\s*(?P<power>[23])\s*\}?)?"
_WITH_UNIT = re.compile(rf"(?P<number>{_NUMBER})\s*(?:(?P<word>{_WORD_UNIT})|{_TEXT_UNIT}){_POWER}")
# Abbreviations short enough to be mistaken for products of variables: only these count.
_ABBREVIATIONS = frozenset({
    "mm", "cm", "dm", "km", "nm", "mg", "kg", "ml", "cl", "dl", "ft", "yd", "mi", "in", "lb", "lbs",
    "oz", "hr", "hrs", "min", "mins", "sec", "secs", "ms", "mph", "kph", "kmh", "sq", "cu", "deg",
    "rad", "kw", "kwh", "hz", "khz", "mhz", "ghz", "kb", "mb", "gb", "tb", "pa", "kpa", "atm", "cal",
    "kcal", "mol",
})
# `3sinx`, `2logx`: a function name and a variable, not a word.
_FUNCTION_WORD = re.compile(r"(?:sin|cos|tan|cot|sec|csc|log|ln|exp|sqrt|arcsin|arccos|arctan)[a-z]?")

_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")
_DECIMAL_POINT = re.compile(r"-?\d*\.\d+")

_CLOCK = re.compile(r"(\d{1,2}):([0-5]\d)(?::([0-5]\d))?\s*(?:\\text\s*\{\s*)?([ap]\.?\s*m\.?)?\s*\}?",
                    re.IGNORECASE)


def _is_unit(words: str) -> bool:
    return all(
        (len(w) >= 4 or w.lower() in _ABBREVIATIONS) and not _FUNCTION_WORD.fullmatch(w.lower())
        for w in words.split()
    )


def _unit_key(words: str, power: str | None) -> frozenset[str]:
    """Spellings one unit may have: `inch` and `inches`, `week` and `weeks` share one."""
    w = " ".join(words.lower().split())
    forms = {w, w.removesuffix("s"), w.removesuffix("es")}
    return frozenset(f"{f}^{power or 1}" for f in forms)


def split_unit(answer: str) -> tuple[str, frozenset[str]] | None:
    """(number, unit spellings) when the answer is a number followed by a unit, else None."""
    m = _WITH_UNIT.fullmatch(answer.strip())
    if m is None:
        return None
    words = m.group("word") or m.group("text")
    if not _is_unit(words):
        return None
    return m.group("number"), _unit_key(words, m.group("power"))


def unit_reading(gold: str, pred: str) -> tuple[str, str] | bool | None:
    """The two numbers to compare when a unit is involved, False when the units differ,
    None when neither side carries a unit."""
    g, p = split_unit(gold), split_unit(pred)
    if g is None and p is None:
        return None
    if g is not None and p is not None:
        return (g[0], p[0]) if g[1] & p[1] else False
    return (g[0], pred) if g is not None else (gold, p[0])


def decimal_comma_reading(gold: str, pred: str) -> tuple[str, str] | None:
    """`1,22` read as 1.22 when the other side is a decimal with a point."""
    if _DECIMAL_COMMA.fullmatch(gold) and _DECIMAL_POINT.fullmatch(pred):
        return gold.replace(",", "."), pred
    if _DECIMAL_COMMA.fullmatch(pred) and _DECIMAL_POINT.fullmatch(gold):
        return gold, pred.replace(",", ".")
    return None


def _seconds_of_day(answer: str) -> int | None:
    m = _CLOCK.fullmatch(answer.strip())
    if m is None:
        return None
    hours, minutes, seconds, half = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), m.group(4)
    if half:
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if half.lower().startswith("p") else 0)
    elif hours > 23:
        return None
    return 3600 * hours + 60 * minutes + seconds


def same_clock_time(gold: str, pred: str) -> bool | None:
    """Whether two times of day are the same time; None unless both sides are times."""
    g, p = _seconds_of_day(gold), _seconds_of_day(pred)
    return None if g is None or p is None else g == p
