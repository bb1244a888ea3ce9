"""Finding hermes-style tool calls in model text, tolerant of what models really write.

A call is ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (whitespace around the JSON
is free). Also accepted, because instruct models write them: ``"arguments"`` given as a JSON
string (OpenAI's wire format), ``"parameters"`` for ``"arguments"``, and a JSON list of such
objects in one tag (parallel calls). Everything else that sits in a closed tag becomes a call with
an ``error`` the model is shown (malformed JSON, no name, arguments that are not an object), never
an exception. An unclosed ``<tool_call>`` is not a call (the model has not finished writing it).
"""

from __future__ import annotations

import dataclasses
import json
import re

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)
_CALL_OR_UNCLOSED = re.compile(re.escape(CALL_OPEN) + r".*?(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)


@dataclasses.dataclass
class ParsedCall:
    raw: str                        # the text between the tags, as written
    name: str | None = None
    arguments: dict | None = None
    error: str | None = None        # why it is not a well-formed call (shown to the model)


def strip_tool_calls(text: str) -> str:
    """`text` without its ``<tool_call>`` spans (an unclosed one to the end): the model's prose, as
    `torl.reward.strip_code_blocks` leaves it for code blocks. A call's JSON holds code, never the answer."""
    return _CALL_OR_UNCLOSED.sub("\n", text)


def parse_tool_calls(text: str) -> list[ParsedCall]:
    """Every closed ``<tool_call>`` in `text`, in order (a list inside one tag gives several calls)."""
    calls: list[ParsedCall] = []
    for match in _CALL.finditer(text):
        raw = match.group(1)
        body = raw.strip()
        try:
            value = json.loads(body)
        except json.JSONDecodeError as e:
            calls.append(ParsedCall(raw, error=f"the tool call is not valid JSON ({e.msg} at character {e.pos}); "
                                               'write {"name": "<tool>", "arguments": {...}}'))
            continue
        for item in value if isinstance(value, list) and value else [value]:
            calls.append(_call_from(raw, item))
    return calls


def _call_from(raw: str, value) -> ParsedCall:
    if not isinstance(value, dict):
        return ParsedCall(raw, error='a tool call must be a JSON object {"name": "<tool>", "arguments": {...}}')
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return ParsedCall(raw, error='the tool call has no "name"')
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI's wire format carries the arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return ParsedCall(raw, name, error=f"the arguments of {name} are not valid JSON ({e.msg})")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ParsedCall(raw, name, error=f'"arguments" of {name} must be a JSON object')
    return ParsedCall(raw, name, arguments)
