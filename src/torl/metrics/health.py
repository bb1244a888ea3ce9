"""Degenerate tool-integrated trajectories: void turns, repeated code, ignored observations.

Pure functions on trajectory dicts (``Trajectory.to_dict()`` or the compact sample-dump form; both
keep ``segments`` and ``calls``). Each detector below states its exact definition; the per-batch
ratios are documented in ``torl/metrics/METRICS.md`` ("Health metrics"). As everywhere in
`torl.metrics`, a ratio whose denominator is empty is ``None`` ("nothing to measure"), never 0.

Terms:

- **turn after an observation**: all the model text between one tool segment and the next tool
  segment (or the end of the response); consecutive model segments are one turn. The model text
  before the first observation is not such a turn: nothing was observed yet.
- **boxed answer**: `torl.reward.extract.extract_answer` without fallbacks -- the last closed,
  non-empty ``\\boxed{}`` outside code and output blocks and ``<tool_call>`` spans, exactly what the
  reward grades (a response's is read from `answer_text`, the model's own segments).
- **a call** (in a turn): a complete ```` ```python ```` block (protocol code_blocks) or a closed
  ``<tool_call>`` (protocol tool_calls), run or not.
- Responses ended by a sandbox failure (ours) are left out of every batch ratio: what they show
  is our infrastructure, not the model's behaviour.
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from collections.abc import Sequence

from torl.metrics.behaviour import executed_calls
from torl.metrics.values import as_number, same_value
from torl.reward.extract import extract_answer
from torl.sandbox.result import FAILED_STATUSES
from torl.tir.parsing import complete_python_blocks
from torl.tir.tool_parsing import parse_tool_calls, strip_tool_calls
from torl.tir.trajectory import answer_text

IGNORED_RERUN = "rerun_after_error"      # re-ran the identical code that had just failed
IGNORED_VALUE = "answer_ignores_value"   # boxed a different number than the one its code printed
_NUMBER_IN_TEXT = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
# Structure tokens compared by kind: 2 or 4 spaces of indentation open the same block.
_TOKEN_MARKS = {tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>", tokenize.NEWLINE: "<newline>"}
# What "prints one number" means: 12, -0.5, 1,000, 1e-3, 3/4 (not "3 4", which as_number reads as 34).
_PLAIN_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*-?\d+)?")
_DECIMAL = re.compile(r"-?\d*(?:,\d{3})*\.(\d+)")  # a printed decimal: its digits tell its rounding


# --- per-trajectory facts -------------------------------------------------------------------------

def ended_by_sandbox_error(traj: dict) -> bool:
    """Our sandbox failed and ended the response: it is excluded from health ratios."""
    return bool(traj.get("sandbox_error")) or traj.get("finish_reason") == "sandbox_error"


def has_boxed_answer(text: str) -> bool:
    """`text` holds a boxed answer the reward can grade (last closed ``\\boxed{}`` outside code blocks
    and tool calls)."""
    return extract_answer(strip_tool_calls(text)) is not None


def makes_a_call(turn_text: str) -> bool:
    """The turn writes a call under either protocol: a complete ```python block or a closed <tool_call>."""
    return bool(complete_python_blocks(turn_text) or parse_tool_calls(turn_text))


def turns_after_observations(traj: dict) -> list[str]:
    """The model text written after each observation, one entry per tool segment, in order.

    The entry is "" when nothing followed an observation (the model stopped right there, or the
    budget ended the response inside the observation).
    """
    turns: list[str] | None = None
    for segment in traj.get("segments", []):
        if segment["kind"] == "tool":
            turns = [] if turns is None else turns
            turns.append("")
        elif turns is not None:
            turns[-1] += segment["text"]
    return turns or []


def is_void_turn(turn_text: str) -> bool:
    """A turn that writes neither a call (a complete ```python block, a <tool_call>) nor a boxed answer
    (SimpleTIR's void turn)."""
    return not makes_a_call(turn_text) and not has_boxed_answer(turn_text)


def judged_turns(traj: dict) -> list[str]:
    """Turns after an observation that are the model's to judge.

    The last turn of a response cut by the length budget is left out: the budget ended it, not
    the model. (Every other turn ended because the model called the tool or stopped.)
    """
    turns = turns_after_observations(traj)
    if turns and (traj.get("truncated") or traj.get("finish_reason") == "length"):
        turns = turns[:-1]
    return turns


def void_turns(traj: dict) -> int:
    """Number of judged turns after an observation that are void (see `is_void_turn`)."""
    return sum(is_void_turn(turn) for turn in judged_turns(traj))


def is_degenerate(traj: dict) -> bool:
    """SimpleTIR's filter: the response has at least one void turn.

    A void turn (typically: the model reads an observation and ends without code or answer) is
    the pattern SimpleTIR found to precede multi-turn collapse; it drops such trajectories from the
    policy loss. A response ended by our sandbox failure is never degenerate (not its doing).
    """
    return not ended_by_sandbox_error(traj) and void_turns(traj) > 0


def normalize_code(code: str) -> str:
    """Code compared for repeats: its Python token stream, so spacing, blank lines and comments do
    not matter (``print( 1/0 )`` is ``print(1/0)``) while indentation structure does.

    Code that does not tokenize (an unclosed string, say) falls back to its lines with blank lines
    dropped and runs of spaces collapsed, indentation kept.
    """
    try:
        tokens = [tok for tok in tokenize.generate_tokens(io.StringIO(code).readline)
                  if tok.type not in (tokenize.COMMENT, tokenize.NL)]
        if not any(tok.type == tokenize.ERRORTOKEN for tok in tokens):  # e.g. an unclosed quote
            return " ".join(_TOKEN_MARKS.get(tok.type, tok.string) for tok in tokens).strip()
    except (tokenize.TokenError, SyntaxError):  # IndentationError is a SyntaxError
        pass
    lines = []
    for line in code.expandtabs(4).splitlines():
        if line.strip():
            indent = len(line) - len(line.lstrip(" "))
            lines.append(" " * indent + " ".join(line.split()))
    return "\n".join(lines)


def repeated_calls(traj: dict) -> int:
    """Executed calls whose normalized code equals that of an EARLIER executed call of the same response.

    Three runs of one program count 2. Calls are stateless by default, so the same code gives the
    same output: the repeat teaches the model nothing new.
    """
    seen: set[str] = set()
    repeats = 0
    for call in executed_calls(traj):
        code = normalize_code(call["code"])
        repeats += code in seen
        seen.add(code)
    return repeats


def ignored_observations(traj: dict) -> list[tuple[int, str]]:
    """(index into the executed calls, reason) of every observation the response ignored.

    Deliberately conservative: only two patterns whose meaning is unambiguous count.

    - ``rerun_after_error``: an executed call failed (error, timeout, memory, output limit) and the
      very next executed call runs the same normalized code -- the error message changed nothing.
    - ``answer_ignores_value``: the LAST executed call succeeded and its observation is exactly one
      non-empty line that is one plain number (12, -0.5, 1,000, 1e-3, 3/4); after it the
      model wrote no further complete ```python block and boxed an answer that also reads as a
      number, differs from the printed one (relative tolerance 1e-6, or by more than the printed
      decimals' rounding), and the printed number appears nowhere in the model's text after the
      observation. An answer derived from the value (12 printed, "so 12/36 = 1/3" boxed) mentions
      it and does not count; an answer that is not a plain number is never judged.
    """
    calls = executed_calls(traj)
    found: list[tuple[int, str]] = []
    for i in range(len(calls) - 1):
        if calls[i]["result"]["status"] in FAILED_STATUSES and \
                normalize_code(calls[i]["code"]) == normalize_code(calls[i + 1]["code"]):
            found.append((i, IGNORED_RERUN))
    turns = turns_after_observations(traj)
    if calls and len(turns) >= len(calls) and _answer_ignores(calls[-1], "".join(turns[len(calls) - 1:])):
        found.append((len(calls) - 1, IGNORED_VALUE))
    return sorted(found)


def _answer_ignores(call: dict, text_after: str) -> bool:
    if call["result"]["status"] != "ok":
        return False
    lines = [line.strip() for line in call.get("observation", "").splitlines() if line.strip()]
    if len(lines) != 1 or not _PLAIN_NUMBER.fullmatch(lines[0]):
        return False
    printed = lines[0]
    if makes_a_call(text_after):
        return False
    answer = extract_answer(strip_tool_calls(text_after))
    if answer is None or as_number(answer) is None or _agrees(printed, answer):
        return False
    # "-12" in the text mentions a printed 12 too ("20-12" reads as 20 and -12).
    numbers = _NUMBER_IN_TEXT.findall(text_after)
    return not any(_agrees(printed, n) or _agrees(printed, n.lstrip("-")) for n in numbers)


def _agrees(printed: str, value: str) -> bool:
    """`value` is the printed number, exactly or up to the printed number of decimals (0.333 ~ 1/3)."""
    if same_value(printed, value):
        return True
    x, y = as_number(printed), as_number(value)
    decimal = _DECIMAL.fullmatch(printed.strip())
    if x is None or y is None or decimal is None or not (math.isfinite(x) and math.isfinite(y)):
        return False
    return abs(x - y) <= 10 ** -len(decimal.group(1))


# --- one batch --------------------------------------------------------------------------------

def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def health_metrics(trajectories: Sequence[dict]) -> dict[str, float | None]:
    """The ``health/*`` metrics of one group of responses (one training step, or one benchmark).

    Responses ended by our sandbox failure are left out of every numerator and denominator.
    """
    kept = [t for t in trajectories if not ended_by_sandbox_error(t)]
    turns = sum(len(judged_turns(t)) for t in kept)
    calls = sum(len(executed_calls(t)) for t in kept)
    return {
        "health/void_turn_ratio": _ratio(sum(void_turns(t) for t in kept), turns),
        "health/degenerate_ratio": _ratio(sum(is_degenerate(t) for t in kept), len(kept)),
        "health/repeated_code_ratio": _ratio(sum(repeated_calls(t) for t in kept), calls),
        "health/ignored_observation_ratio": _ratio(sum(len(ignored_observations(t)) for t in kept), calls),
        "health/no_boxed_ratio": _ratio(sum(not has_boxed_answer(answer_text(t)) for t in kept), len(kept)),
    }
