"""Piecewise answers (`\\begin{cases} ... \\end{cases}`), compared piece by piece.

math-verify 0.9 has no reading of `cases`: it parses the environment to 0, so any two piecewise
answers would be "equal". A piece is one row, `value & condition`; two piecewise answers are
equivalent when their pieces pair up one to one with equivalent values and equivalent conditions.
Row order does not matter; `\\text{if}`, `for`, `when` and `\\text{otherwise}` wording is ignored.
A name before the environment (`f(x) = \\begin{cases}`) is allowed; anything else around it makes
the answer unreadable, and an unreadable piecewise answer is never equivalent to another.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_BEGIN, _END = "\\begin{cases}", "\\end{cases}"
_NAME = re.compile(r"[^=]{0,40}=")  # `f(x) =`, `y =`
_ROW_BREAK = re.compile(r"\\\\(?:\[[^\]]*\])?")
_CELL_BREAK = re.compile(r"(?<!\\)&")
_WORDING = re.compile(r"\\(?:text|mbox|textrm|mathrm)\s*\{\s*([^{}]*?)\s*\}")
_CONDITION_WORDS = re.compile(r"^(?:if|for|when|where)\b\s*|,\s*$", re.IGNORECASE)
_OTHERWISE = re.compile(r"(?:otherwise|else|elsewhere)\.?", re.IGNORECASE)
_MAX_MATCHED_PIECES = 8


def _condition(cell: str) -> str:
    text = _WORDING.sub(r" \1 ", cell).replace("\\quad", " ").replace("\\,", " ").strip()
    text = _CONDITION_WORDS.sub("", text).strip()
    return "otherwise" if _OTHERWISE.fullmatch(text) else text


def pieces(answer: str) -> list[tuple[str, str]] | None:
    """The (value, condition) rows of a piecewise answer; None when it has no `cases`; [] when
    it has one but is not only a piecewise definition."""
    begin = answer.find(_BEGIN)  # str.find, not a regex: linear on any input
    if begin < 0:
        return None
    end = answer.find(_END, begin)
    if end < 0:
        return []
    outside = answer[:begin].strip() + answer[end + len(_END):].strip()
    if outside and not _NAME.fullmatch(outside):
        return []
    rows = []
    for row in _ROW_BREAK.split(answer[begin + len(_BEGIN):end]):
        if not row.strip():
            continue
        cells = _CELL_BREAK.split(row, maxsplit=1)
        rows.append((cells[0].strip(), _condition(cells[1]) if len(cells) > 1 else ""))
    return rows


def _perfect_matching(ok: list[list[bool]]) -> bool:
    """Whether every row of the boolean matrix gets its own column (augmenting paths)."""
    owner: dict[int, int] = {}

    def place(row: int, seen: set[int]) -> bool:
        for col, fits in enumerate(ok[row]):
            if fits and col not in seen:
                seen.add(col)
                if col not in owner or place(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    return all(place(row, set()) for row in range(len(ok)))


def same_pieces(gold: str, pred: str, same: Callable[[str, str], bool]) -> bool | None:
    """Whether two piecewise answers are equivalent (`same` compares two bare answers);
    None when neither side is piecewise."""
    g, p = pieces(gold), pieces(pred)
    if g is None and p is None:
        return None
    if not g or not p or len(g) != len(p):
        return False

    def piece_ok(a: tuple[str, str], b: tuple[str, str]) -> bool:
        return same(a[0], b[0]) and (a[1] == b[1] or (a[1] != "" and b[1] != "" and same(a[1], b[1])))

    if len(g) > _MAX_MATCHED_PIECES:  # bound the pairwise checks; long definitions must keep the order
        return all(piece_ok(a, b) for a, b in zip(g, p))
    return _perfect_matching([[piece_ok(a, b) for b in p] for a in g])
