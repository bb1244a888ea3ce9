"""Pull the final answer out of a response: the last `\\boxed{...}` outside code blocks.

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


def _read_braced(text: str, start: int) -> str | None:
    """Content of the `{...}` group opening at text[start]; None if it never closes.

    `\\{` and `\\}` are escaped (literal) braces and do not count.
    """
    depth = 0
    i = start
    n = len(text)
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
                return text[start + 1:i]
        i += 1
    return None


def _box_argument(text: str, command_end: int) -> str | None:
    """The argument of a box command ending at `command_end`: `{...}` or a bare `\\boxed 5` token."""
    i = command_end
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        return _read_braced(text, i)
    if i == command_end:  # `\boxedx` is not a box command
        return None
    token = re.match(r"[^\s$]+", text[i:])
    return token.group(0) if token else None


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\boxed x` / `\\fbox{...}` in `text` (no fence rules).

    Used on dataset solutions to get gold answers. None when there is no box, when the last box
    never closes (a truncated answer is not an answer), or when it is empty.
    """
    matches = list(_BOX_COMMAND.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    content = _box_argument(text, last.end())
    if content is None:
        return None
    content = content.strip()
    return content or None


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


def extract_answer(text: str, *, fallbacks: bool = False) -> str | None:
    """The final answer of a response: the last box outside ```python/```output blocks.

    With `fallbacks=True` (evaluation only: training rewards only boxed answers, so the model
    learns the format) a response with no box falls back to the last "the answer is ..." /
    "final answer: ..." phrase, then to the last number in the prose.
    """
    prose = strip_code_blocks(text)
    boxed = extract_boxed(prose)
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
