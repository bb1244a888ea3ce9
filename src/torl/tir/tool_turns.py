"""The TIR loop's turns under protocol ``tool_calls`` (`torl.tir.loop` calls `run_tool_call_turns`).

Generation stops at ``</tool_call>`` (``call_trigger: call_end``, the default), or the model ends
its turn with EOS and every call in it runs (``turn_end``, for models that write several calls per
turn). The calls of the turn run in order while the budget C lasts (calls past it are recorded as
skipped, ``over_budget``); each gets a ``tool`` message: its output, or, for a malformed call, an
unknown tool, bad arguments, a tool's failure or a used-up per-tool budget, an error text the model
can read and fix (with ``error_marker``, inside ``<error>...</error>``). Such calls count toward C
and appear in ``calls`` with ``error`` set; none of them is a sandbox error. The appended tokens
(mask 0, logprob 0) are `ToolTurnRenderer.observation_pieces`, one span per call. A turn ending
with neither (EOS with no call, an extra stop string, the budget) is the final answer; calls in it
are skipped (``not_requested`` / ``over_budget``), never run.
"""

from __future__ import annotations

import json
from collections import Counter

from torl.errors import SandboxFailure
from torl.tir.tool_parsing import CALL_CLOSE, ParsedCall, parse_tool_calls
from torl.tir.trajectory import SkippedCall, ToolCall, append_observation
from torl.tir.turn import generate_turn
from torl.tools.registry import ToolContext, ToolOutput, error_output

TOOL_CALL_TRIGGERS = ("call_end", "turn_end")


def wrap_error(text: str) -> str:
    """The explicit marker around a failed call's output (``error_marker``), so the model cannot miss it."""
    return f"<error>\n{text}\n</error>"


async def run_tool_call_turns(engine, sandbox, traj, config, session, renderer) -> None:
    tokenizer, tools = engine.tokenizer, config.toolset
    per_tool: Counter[str] = Counter()
    stops = (CALL_CLOSE,) if config.call_trigger == "call_end" else ()
    while True:
        turn = await generate_turn(engine, traj, config, stops)
        if turn is None:
            return
        gen, turn_text, calls_left = turn.gen, turn.text, turn.calls_left
        parsed = parse_tool_calls(turn_text)
        ended_turn = gen.finish_reason == "stop" and not isinstance(gen.stop_reason, str)  # EOS
        triggered = calls_left > 0 and gen.finish_reason == "stop" and (
            gen.stop_reason == CALL_CLOSE if config.call_trigger == "call_end" else ended_turn)
        if not triggered or (ended_turn and not parsed):
            reason = "over_budget" if calls_left == 0 else "not_requested"
            traj.skipped_calls += [SkippedCall(_call_text(c), reason) for c in parsed]
            traj.truncated = gen.finish_reason == "length"
            traj.finish_reason = "length" if traj.truncated else "stop"
            return
        if not parsed:
            continue  # a closing tag without an opener: nothing to run, keep generating
        run, over = parsed[:calls_left], parsed[calls_left:]
        traj.skipped_calls += [SkippedCall(_call_text(c), "over_budget") for c in over]
        context = ToolContext(sandbox=sandbox, session=session, trajectory=traj)
        outputs = []
        for call in run:
            output = await _run_call(call, tools, per_tool, context)
            if output.error == "sandbox_error":
                at = len(traj.completion_ids)
                traj.calls.append(_record(call, output, "", False, at, at))
                traj.sandbox_error, traj.finish_reason = True, "sandbox_error"
                if config.on_sandbox_error == "raise":
                    raise SandboxFailure(f"sandbox failed on our side: {output.result.sandbox_message or 'unknown'}")
                return
            outputs.append(output)
        texts = [wrap_error(o.text) if o.error and config.error_marker else o.text for o in outputs]
        pieces = renderer.observation_pieces(texts, model_ended_turn=ended_turn)
        for call, output, text, piece in zip(run, outputs, texts, pieces, strict=True):
            start, cut = append_observation(traj, renderer.encode(piece), tokenizer, config.max_response_tokens)
            traj.calls.append(_record(call, output, text, True, start, len(traj.completion_ids)))
            if cut:
                traj.truncated, traj.finish_reason = True, "length"
                return


async def _run_call(call: ParsedCall, tools, per_tool: Counter, context: ToolContext) -> ToolOutput:
    if call.error:
        return error_output("parse_error", call.error)
    if call.name not in tools:
        return error_output("unknown_tool", f"unknown tool {call.name!r}; the tools are: {', '.join(tools.names)}")
    tool = tools[call.name]
    if tool.max_calls is not None and per_tool[call.name] >= tool.max_calls:
        return error_output("budget", f"{call.name}: its budget of {tool.max_calls} call(s) per answer is used up")
    per_tool[call.name] += 1
    return await tool.call(call.arguments, context)


def _call_text(call: ParsedCall) -> str:
    if call.name == "python" and call.arguments and isinstance(call.arguments.get("code"), str):
        return call.arguments["code"]
    return call.raw.strip()


def _record(call: ParsedCall, output: ToolOutput, observation: str, executed: bool, start: int, end: int) -> ToolCall:
    return ToolCall(_call_text(call), output.result, observation, executed, start, end, tool=call.name or "(unparsed)",
                    arguments=call.arguments, error=output.error, latency_s=round(output.latency_s, 6))


def describe_call(call: ToolCall) -> str:
    """A one-line rendering of a call, for printing."""
    return f"{call.tool}({json.dumps(call.arguments, ensure_ascii=False)[:200] if call.arguments else ''})"
