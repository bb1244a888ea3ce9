"""`Trajectory`: what one tool-integrated rollout produced, and its JSON schema.

``Trajectory.to_dict()`` is the interchange format read by training, evaluation and analysis
(``Trajectory.from_dict`` inverts it exactly). Keys:

- ``prompt_ids`` (list[int]): the prompt, as given to the loop.
- ``completion_ids`` (list[int]): everything after the prompt, in order: model tokens exactly as
  sampled (never re-tokenized, EOS included when the model emitted it) and interpreter tokens
  (each observation text tokenized on its own and appended).
- ``loss_mask`` (list[int], len = completion_ids): 1 = the model sampled this token, 0 = the
  interpreter wrote it. The stop text ```` ```output ```` is sampled by the model (writing it *is*
  the decision to call the tool), so it stays 1; everything the loop appends after it (the
  newline, the observation, the closing fence ```` ``` ````) is 0. Masking the interpreter side
  only keeps the gradient on every choice the model made and on nothing it merely read.
- ``logprobs`` (list[float] | null, len = completion_ids): log-probability of each model token
  under the sampling distribution (see the engine's docs; tempered by the temperature used);
  exactly 0.0 at interpreter tokens (use ``loss_mask`` to tell them apart). null when the engine
  was asked for no logprobs.
- ``calls`` (list[ToolCall dict]): executed tool calls in order: ``code``, ``result``
  (``ExecResult.to_dict()``), ``observation`` (the text the model saw inside the output block),
  ``executed`` (true; false only for a call that hit a sandbox error and was not fed back),
  ``token_start``/``token_end`` (the span of completion_ids holding the appended interpreter
  tokens, end exclusive). Protocol ``tool_calls`` adds ``tool`` (the name called), ``arguments``,
  ``error`` (null, or why the call failed: parse_error | unknown_tool | bad_arguments | tool_error |
  timeout | budget -- the model was shown why) and ``latency_s``; ``code`` is then the python
  tool's code, or the call's raw JSON for other tools. Several calls of one turn each get their
  own span (their tool message), back to back.
- ``skipped_calls`` (list[{code, reason}]): complete ```` ```python ```` blocks that did not run:
  ``reason`` = "over_budget" (written after the C-call budget was used up) or "not_last" (an
  earlier block in a turn: only the last block of a turn runs).
- ``segments`` (list[{kind, text}]): the completion as alternating "model" / "tool" text.
- ``text`` (str): the full decoded completion (special tokens skipped) = concat of segments. The
  reward reads `answer_text` instead: the model's own segments only.
- ``finish_reason``: "stop" (EOS or end of text) | "length" (response budget used up) |
  "sandbox_error" (our infrastructure failed; drop the trajectory from training).
- ``truncated`` (bool): cut by the response-length budget (which counts interpreter tokens).
- ``sandbox_error`` (bool), ``sandbox_errors`` (int): sandbox failures seen (retries included).
- ``model_tokens`` / ``tool_tokens`` (int): counts of mask-1 / mask-0 tokens.
- ``num_turns`` (int): generate() calls made.
- ``metadata`` (dict): free-form, e.g. question id, gold answer, template name.

Sample dumps and eval rows store the *compact* form, `compact_trajectory(d)`: the same dict without
the four token lists, with ``prompt_tokens`` / ``completion_tokens`` (their lengths) instead;
``with_ids`` keeps ``prompt_ids``, ``completion_ids`` and ``loss_mask`` (`ID_LISTS`) as recorded
(`dump_sample_ids`, `torl eval --save-ids`), so `torl sft` can train the row exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torl.reward.extract import strip_code_blocks
from torl.sandbox.result import ExecResult
from torl.tir.tool_parsing import strip_tool_calls

TOKEN_LISTS = ("prompt_ids", "completion_ids", "loss_mask", "logprobs")
ID_LISTS = ("prompt_ids", "completion_ids", "loss_mask")  # what replaying a trajectory exactly needs


def compact_trajectory(trajectory: dict, *, with_ids: bool = False) -> dict:
    """`trajectory` (a `Trajectory.to_dict()`) without its token lists, their lengths kept: what dumps store.

    `with_ids` keeps the ids and the loss mask (not the logprobs), the very lists recorded."""
    dropped = [k for k in TOKEN_LISTS if not (with_ids and k in ID_LISTS)]
    out = {k: v for k, v in trajectory.items() if k not in dropped}
    out["prompt_tokens"] = len(trajectory.get("prompt_ids") or [])
    out["completion_tokens"] = len(trajectory.get("completion_ids") or [])
    return out


def answer_text(trajectory: Trajectory | dict) -> str:
    """The text whose ``\\boxed{}`` is the model's answer: what every reward call site scores.

    Only the model's own segments count: a tool's output (an ```` ```output ```` block's body, a
    ``tool`` message) is something the model read, never its answer, even when it holds a
    ``\\boxed{}``. Each model segment loses its ``<tool_call>`` spans (a call's JSON holds code) and
    its fenced blocks (the code it ran), as the reward's extraction would, but segment by segment, so
    a tool output that contains a fence cannot unbalance the fences around it; segments are joined
    by newlines. A trajectory without segments (an old dump) falls back to its whole ``text``.
    """
    segments = trajectory.segments if isinstance(trajectory, Trajectory) else trajectory.get("segments")
    if not segments:
        return trajectory.text if isinstance(trajectory, Trajectory) else trajectory.get("text", "")
    return "\n".join(strip_code_blocks(strip_tool_calls(s["text"])) for s in segments if s["kind"] == "model")


@dataclasses.dataclass
class ToolCall:
    code: str
    result: ExecResult
    observation: str
    executed: bool = True
    token_start: int = 0
    token_end: int = 0
    tool: str = "python"               # protocol tool_calls: the tool called (or the name the model wrote)
    arguments: dict | None = None      # tool_calls: the call's arguments as parsed
    error: str | None = None           # tool_calls: parse_error | unknown_tool | bad_arguments | tool_error | timeout | budget
    latency_s: float = 0.0             # tool_calls: how long the tool took

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["result"] = self.result.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ToolCall:
        d = dict(d)
        d["result"] = ExecResult.from_dict(d["result"])
        return cls(**d)


@dataclasses.dataclass
class SkippedCall:
    code: str
    reason: str  # "over_budget" | "not_last"


@dataclasses.dataclass
class Trajectory:
    prompt_ids: list[int]
    completion_ids: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] | None = dataclasses.field(default_factory=list)
    calls: list[ToolCall] = dataclasses.field(default_factory=list)
    skipped_calls: list[SkippedCall] = dataclasses.field(default_factory=list)
    segments: list[dict] = dataclasses.field(default_factory=list)
    text: str = ""
    finish_reason: str = "stop"
    truncated: bool = False
    sandbox_error: bool = False
    sandbox_errors: int = 0
    model_tokens: int = 0
    tool_tokens: int = 0
    num_turns: int = 0
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_calls(self) -> int:
        return len(self.calls)

    @property
    def answer_text(self) -> str:
        """The model's own text, tool output left out: what the reward reads (module function `answer_text`)."""
        return answer_text(self)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["calls"] = [c.to_dict() for c in self.calls]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Trajectory:
        d = dict(d)
        d["calls"] = [ToolCall.from_dict(c) for c in d.get("calls", [])]
        d["skipped_calls"] = [SkippedCall(**s) for s in d.get("skipped_calls", [])]
        return cls(**d)


def append_tokens(traj: Trajectory, ids: Sequence[int], logprobs: Sequence[float] | None, *, mask: int) -> None:
    """Extend the completion: sampled tokens (mask 1, the engine's logprobs) or interpreter tokens (mask 0,
    logprob 0.0)."""
    traj.completion_ids.extend(ids)
    traj.loss_mask.extend([mask] * len(ids))
    if traj.logprobs is None:
        return
    if mask and logprobs is None:
        traj.logprobs = None  # the engine returned none: say so rather than invent values
        return
    traj.logprobs.extend(logprobs if mask else [0.0] * len(ids))


def append_observation(traj: Trajectory, ids: Sequence[int], tokenizer, max_response_tokens: int) -> tuple[int, bool]:
    """One tool turn's tokens (mask 0), cut to the response budget, recorded as a "tool" segment.

    Returns (where they start in the completion, whether the budget cut them)."""
    room = max_response_tokens - len(traj.completion_ids)
    cut = len(ids) > room
    ids = list(ids)[:room]
    start = len(traj.completion_ids)
    append_tokens(traj, ids, None, mask=0)
    traj.segments.append({"kind": "tool", "text": tokenizer.decode(ids, skip_special_tokens=True)})
    return start, cut
