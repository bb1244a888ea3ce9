"""Small, deterministic value handling for the behaviour metrics: boxed contents, stated answers,
values printed by code, and when two of them are the same value.

Deliberately simpler than `torl.reward` (math-verify): analytics runs over thousands of responses
and must give the same answer everywhere; "same value" here is numeric equality (relative
tolerance 1e-6) when both sides read as numbers, else equality of whitespace-free text.
"""

from __future__ import annotations

import math
import re

_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*\$*\s*([^\n$]+?)\s*(?=\$|\.\s|\.$|,\s|\n|$)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*-?\d+(?:\.\d+)?)?")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\^\{?\\circ\}?|\\%|%|\$|\s|\\text\{\s*\}")


def boxed_contents(text: str) -> list[tuple[int, str]]:
    """(offset, content) of every ``\\boxed{...}`` in `text`, braces matched; unclosed ones skipped."""
    out, start = [], 0
    while (at := text.find("\\boxed{", start)) >= 0:
        depth, i = 0, at + len("\\boxed")
        for i in range(at + len("\\boxed"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                out.append((at, text[at + len("\\boxed{"): i].strip()))
                break
        start = i + 1 if depth == 0 else len(text)
    return out


def final_boxed(text: str) -> str | None:
    """The last boxed answer in `text` (the response's final answer), or None."""
    boxes = boxed_contents(text)
    return boxes[-1][1] if boxes else None


def stated_values(model_text: str) -> list[str]:
    """Values the model commits to in its own text, in order: boxed contents and "answer is X"."""
    found = [(at, content) for at, content in boxed_contents(model_text) if content]
    found += [(m.start(), m.group(1).strip()) for m in _ANSWER_IS.finditer(model_text)
              if m.group(1).strip() and not m.group(1).lstrip().startswith("\\boxed")]
    return [value for _, value in sorted(found)]


def last_value(stdout: str) -> list[str]:
    """Candidate values printed by code: its last non-empty output line, whole, and each number in it."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return []
    line = lines[-1]
    return [line] + [m.group(0) for m in _NUMBER.finditer(line) if m.group(0) != line]


def as_number(value: str) -> float | None:
    """`value` as a number when it reads as one (int, decimal, 1e-3, 3/4, \\frac{3}{4}, 1,000); else None."""
    text = _NOISE.sub("", value)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    frac = _FRAC.match(text)
    if frac:
        text = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        return None


def same_value(a: str, b: str) -> bool:
    """Whether two stated/printed values are the same (numerically when both are numbers)."""
    x, y = as_number(a), as_number(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
    return _NOISE.sub("", a) == _NOISE.sub("", b)
