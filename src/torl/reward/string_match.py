"""Baseline grader: exact string match after the MATH paper's answer normalization.

Hendrycks et al.'s MATH evaluation compares answers as strings after a fixed clean-up
(`strip_string` in their code). This is our own implementation of those steps; it exists only
as a baseline the verifier corpus reports against (see bench/verify.py, tests/test_reward_corpus.py).
"""

from __future__ import annotations

import re


def _braced_fracs(s: str) -> str:
    r"""`\frac12` -> `\frac{1}{2}`, `\frac1{2}` -> `\frac{1}{2}` (single-character arguments)."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{") or len(part) < 2:
            out += part
            continue
        a, rest = part[0], part[1:]
        if rest.startswith("{"):
            out += "{" + a + "}" + rest
        else:
            out += "{" + a + "}{" + rest[0] + "}" + rest[1:]
    return out


def _slash_to_frac(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else s


def strip_string(s: str) -> str:
    """MATH-style normalization of an answer string (units, spaces, fracs, degrees, `x=`...)."""
    s = s.replace("\n", "").replace("\\!", "")
    s = s.replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = re.sub(r"\\text\{\s[^}]*\}$", "", s)  # trailing units: "5 \text{ cm}"
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    lhs = s.split("=")
    if len(lhs) == 2 and len(lhs[0].strip()) <= 2:  # "x = 5" -> "5"
        s = lhs[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _braced_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def string_match(gold: str, predicted: str) -> bool:
    """True when both answers are identical after `strip_string`."""
    return strip_string(gold) == strip_string(predicted)
