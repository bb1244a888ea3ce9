"""What the model reads after its code ran: `format_observation(result)`.

Success shows stdout. Failure shows what was printed before it plus the useful part of the
error: the traceback frames in the model's own code (`File "<code>", line 3`), the frame where a
library raised, and the exception line. Limits get one short line ("TimeoutError: execution
exceeded 10 s"). Long text is cut in the middle with a marker saying how much was cut.
SANDBOX_ERROR is our failure, not something the model did: it is refused here.
"""

from __future__ import annotations

import re

from torl.errors import SandboxFailure
from torl.sandbox.result import ExecResult, ExecStatus

CODE_FILENAME = "<code>"
_FRAME = re.compile(r'^  File "(?P<file>[^"]*)", line \d+')
_TRACEBACK_START = "Traceback (most recent call last):"
_USER_FRAMES_KEPT = 6


_LIMIT_TEXT = {
    ExecStatus.TIMEOUT: "TimeoutError: execution exceeded the time limit",
    ExecStatus.MEMORY: "MemoryError: execution exceeded the memory limit",
    ExecStatus.OUTPUT_LIMIT: "OutputLimitError: output exceeded the size limit; execution stopped",
}


def format_observation(result: ExecResult, max_chars: int = 2048) -> str:
    """The text the model sees for `result`, at most about `max_chars` characters."""
    if result.status is ExecStatus.SANDBOX_ERROR:
        raise SandboxFailure(f"sandbox failure, not a model observation: {result.sandbox_message or 'unknown'}")
    if max_chars < 64:
        raise ValueError(f"max_chars must be at least 64, got {max_chars}")
    stdout = result.stdout
    if result.status is ExecStatus.OK:
        return truncate_middle(stdout, max_chars)
    if result.status is ExecStatus.ERROR:
        error = summarize_error(result.stderr, result.exit_code)
    else:
        error = result.sandbox_message or _LIMIT_TEXT[result.status]
    error = truncate_middle(error, max_chars // 2)
    if not stdout:
        return error
    stdout = truncate_middle(stdout, max(32, max_chars - len(error) - 1))
    return stdout + ("" if stdout.endswith("\n") else "\n") + error


def summarize_error(stderr: str, exit_code: int | None = None) -> str:
    """The last traceback in stderr, reduced to the user's frames, where it raised, and the error."""
    start = stderr.rfind(_TRACEBACK_START)
    if start < 0:
        text = stderr.strip()
        if text:
            return text
        return f"Process exited with status {exit_code}" if exit_code is not None else "Process failed"
    lines = stderr[start:].rstrip("\n").splitlines()
    frames, i = [], 1
    while i < len(lines) and lines[i].startswith("  "):
        frame = [lines[i]]
        i += 1
        while i < len(lines) and lines[i].startswith("    "):  # source line, carets
            frame.append(lines[i])
            i += 1
        frames.append(frame)
    error_lines = lines[i:]
    kept, omitted = _select_frames(frames)
    out = [_TRACEBACK_START]
    for frame in kept:
        if frame is None:
            out.append(f"  [... {omitted} frame{'s' if omitted != 1 else ''} in library code omitted ...]")
        else:
            out.extend(frame)
    return "\n".join(out + error_lines)


def _select_frames(frames: list[list[str]]) -> tuple[list[list[str] | None], int]:
    """Keep the last user-code frames and the innermost frame; None marks an omission."""
    def is_user(frame: list[str]) -> bool:
        m = _FRAME.match(frame[0])
        return bool(m and m["file"] == CODE_FILENAME) or frame[0].lstrip().startswith("[Previous line")

    user_idx = [k for k, f in enumerate(frames) if is_user(f)][-_USER_FRAMES_KEPT:]
    keep = set(user_idx) | ({len(frames) - 1} if frames else set())
    kept: list[list[str] | None] = []
    omitted = 0
    for k, frame in enumerate(frames):
        if k in keep:
            if omitted and (not kept or kept[-1] is not None):
                kept.append(None)
            kept.append(frame)
        else:
            omitted += 1
    if omitted and kept and kept[-1] is not None and frames and len(frames) - 1 not in keep:
        kept.append(None)
    return kept, omitted


def truncate_middle(text: str, max_chars: int) -> str:
    """`text` if short enough, else its head and tail around a marker naming how much was cut."""
    if len(text) <= max_chars:
        return text
    marker = "\n... [{} characters cut] ...\n"
    budget = max(0, max_chars - len(marker.format(len(text))))
    head = budget * 2 // 3
    tail = budget - head
    cut = len(text) - head - tail
    return text[:head] + marker.format(cut) + (text[-tail:] if tail else "")
