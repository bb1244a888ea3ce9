"""Finding ```` ```python ```` blocks in model text.

Line-based, like ToRL's `extract_program`: a block opens on a line that starts (after
indentation) with ```` ```python ```` or ends with it, and closes on the next line that starts with
```` ``` ```` -- including the model's own ```` ```output ```` line, so
"```python\\nprint(1)\\n```output" counts as a complete block. A block that never closes is
incomplete and never runs.
"""

from __future__ import annotations

OPEN_FENCE = "```python"
FENCE = "```"


def _scan(text: str) -> tuple[list[str], list[str] | None]:
    """(code of every closed block, code lines of the block still open at the end or None)."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(OPEN_FENCE) or stripped.endswith(OPEN_FENCE):
            current = []  # a new opener restarts: an unclosed earlier block never runs
        elif current is not None and stripped.startswith(FENCE):
            blocks.append("".join(f"{code_line}\n" for code_line in current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks, current


def complete_python_blocks(text: str) -> list[str]:
    """Code of every closed ```` ```python ```` block in `text`, in order (each ends with a newline)."""
    return _scan(text)[0]


def closes_python_block(text: str, fence_at: int) -> bool:
    """Whether the fence line that starts right after ``text[fence_at]`` (a newline) closes an open
    ```` ```python ```` block -- a block's end rather than an opener or another language's fence."""
    return fence_at >= 0 and _scan(text[:fence_at])[1] is not None
