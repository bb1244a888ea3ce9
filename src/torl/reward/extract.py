"""Pull the final answer out of a response: the last `\\boxed{...}` outside code blocks.

An answer in several parts may be boxed part by part (`\\boxed{(2, 2)} and \\boxed{(6, 2)}`):
`final_boxes` returns the final run of boxes, the last box and those right before it that only
a connective separates from the next (`and`, `or`, a comma or semicolon, with at most a few words
such as "for part (a) and"; nothing but spacing also joins). A box followed by a sentence is an
intermediate result, not part of the answer.

A ToRL response interleaves prose with ```` ```python ```` blocks and the interpreter's
```` ```output ```` blocks. A `\\boxed{}` the program printed, or one written inside code, is not
the model's final answer, so fenced blocks are cut out before the search (a fence left open at
the end of a truncated response hides everything after it). Everything here is a linear scan:
it runs in the caller's process, on any input, without a deadline.
"""

from __future__ import annotations

import re

# Fences whose content is prose-like math a model may legitimately box its answer in.
_MATH_FENCE_TAGS = {"latex", "tex", "math"}
_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)")
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Between two boxes of one answer: LaTeX spacing/text/math-delimiter commands and braces are noise.
_BETWEEN_NOISE = re.compile(r"\\[A-Za-z]+|\\.|[{}$]")
_CONNECTIVE = re.compile(r"[,;]|\b(?:and|or)\b", re.IGNORECASE)
_BARE_TOKEN = re.compile(r"[^\s$]+")  # `\boxed 5`
_MAX_JOINING_WORDS = 5
_MAX_JOINING_CHARS = 80


def strip_code_blocks(text: str) -> str:
    """`text` with every fenced block (except ```latex/tex/math) removed, an unclosed one to the end."""
    out: list[str] = []
    pos = 0
    while True:
        opener = _FENCE.search(text, pos)
        if opener is None:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:opener.start()])
        closer = text.find("```", opener.end())
        body_end = len(text) if closer < 0 else closer
        if opener.group(1).lower() in _MATH_FENCE_TAGS:
            out.append(text[opener.end():body_end])
        out.append("\n")
        if closer < 0:
            return "".join(out)
        pos = closer + 3


def _read_braced(text: str, start: int, limit: int | None = None) -> tuple[str, int] | None:
    """(content, end) of the `{...}` group opening at text[start]; None if it does not close
    before `limit` (default: the end of the text).

    `\\{` and `\\}` are escaped (literal) braces and do not count.
    """
    depth = 0
    i = start
    n = len(text) if limit is None else limit
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None


def _box_argument(text: str, command_end: int, limit: int | None = None) -> tuple[str, int] | None:
    """(argument, end) of a box command ending at `command_end`: `{...}` or a bare `\\boxed 5` token."""
    n = len(text) if limit is None else limit
    i = command_end
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "{":
        return _read_braced(text, i, n)
    if i == command_end:  # `\boxedx` is not a box command
        return None
    token = _BARE_TOKEN.match(text, i, n)
    return (token.group(0), token.end()) if token else None


def _joins(between: str) -> bool:
    """Whether the text between two boxes makes them parts of one answer."""
    if len(between) > _MAX_JOINING_CHARS:
        return False
    rest = _BETWEEN_NOISE.sub(" ", between)
    if not rest.strip(" \t\n.:"):
        return True
    return bool(_CONNECTIVE.search(rest)) and len(re.findall(r"[A-Za-z]+", rest)) <= _MAX_JOINING_WORDS


def final_boxes(text: str) -> list[str]:
    """Contents of the final run of boxes in `text` (no fence rules), in order; [] when there is
    no box, when the last box never closes (a truncated answer is not an answer) or is empty.

    Linear: a box is read only up to the start of the box after it (one that would run past it
    encloses it and ends the run), so no character is scanned twice.
    """
    matches = list(_BOX_COMMAND.finditer(text))
    run: list[str] = []
    next_start = len(text)
    for m in reversed(matches):
        box = _box_argument(text, m.end(), next_start)
        if box is None or not box[0].strip() or (run and not _joins(text[box[1]:next_start])):
            break
        run.append(box[0].strip())
        next_start = m.start()
    return run[::-1]


def extract_boxed(text: str) -> str | None:
    """The boxed answer of `text` (no fence rules): the last box's content, or the parts of a
    final run of boxes joined by ", " (`\\boxed{1} and \\boxed{-2}` gives `1, -2`).

    Used on dataset solutions to get gold answers. None when there is no box, when the last box
    never closes, or when it is empty.
    """
    parts = final_boxes(text)
    return ", ".join(parts) if parts else None


_FINAL_ANSWER = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is|:|=)\s*:?\s*(.+?)(?=\n|$|\.\s|\.$)",
    re.IGNORECASE,
)
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def _clean_fallback(answer: str) -> str | None:
    answer = answer.strip().strip("*").strip()
    answer = re.sub(r"^\$+|\$+$", "", answer).strip()
    answer = answer.rstrip(".").strip()
    return answer or None


def extract_graded_answer(text: str) -> str | None:
    """What `score` grades: the last box outside ```python/```output blocks or, when the final
    run has several boxes, all of them written as boxes (`\\boxed{a}, \\boxed{b}`), so the
    check can compare every part when the gold has several and the last one otherwise."""
    parts = final_boxes(strip_code_blocks(text))
    if len(parts) > 1:
        return ", ".join(f"\\boxed{{{p}}}" for p in parts)
    return parts[0] if parts else None


def extract_answer(text: str, *, fallbacks: bool = False) -> str | None:
    """The final answer of a response: the last box outside ```python/```output blocks.

    With `fallbacks=True` (evaluation only: training rewards only boxed answers, so the model
    learns the format) a response with no box falls back to the last "the answer is ..." /
    "final answer: ..." phrase, then to the last number in the prose.
    """
    prose = strip_code_blocks(text)
    parts = final_boxes(prose)
    boxed = parts[-1] if parts else None
    if boxed is not None or not fallbacks:
        return boxed
    if _BOX_COMMAND.search(prose):  # a box was started but never closed: do not guess around it
        return None
    phrases = _FINAL_ANSWER.findall(prose)
    if phrases:
        cleaned = _clean_fallback(phrases[-1])
        if cleaned is not None:
            return cleaned
    numbers = _LAST_NUMBER.findall(prose)
    return numbers[-1].rstrip(",") if numbers else None
