"""The per-trajectory TIR loop: generate, run the last ```` ```python ```` block, feed the output back.

One `rollout` call is one trajectory and one asyncio task; `rollout_many` gathers them. Batching
lives inside the engine, so a trajectory waiting on the sandbox never holds the others back.

Protocol (ToRL's, ``call_trigger="output_fence"``): generation stops at the model-written
```` ```output ````. If the model's text since the last observation holds a complete
```` ```python ```` block, the LAST one runs and the loop appends whatever part of
``"```output\\n<observation>\\n```\\n"`` the model did not already write, tokenized on its own
(mask 0), then generates again. An incomplete block runs nothing: generation just continues.

``call_trigger="block_close"`` also runs a block as soon as its closing fence line (``"\\n```\\n"``)
is written, so a model that never learned to write ```` ```output ```` still gets its code run;
the loop then appends the whole ``"```output\\n<observation>\\n```\\n"`` (mask 0). A fence that
closes no ```` ```python ```` block (an opener, another language) just lets generation continue.
After C executed calls the stop string is dropped and what the model writes is its own text
(complete blocks in it are recorded as skipped, never run). The response budget
(`max_response_tokens`) counts interpreter tokens too, like ToRL: an observation that does not
fit is cut and the trajectory ends with ``finish_reason="length"``, ``truncated=True``.

``protocol="tool_calls"`` (chat models: hermes ``<tool_call>`` JSON through the chat template) runs
the same story in `torl.tir.tool_turns`: generate, parse the calls, run them through the task's
tools, append the template's tool turn (mask 0), generate again.

A sandbox failure on OUR side (``ExecStatus.SANDBOX_ERROR``) is retried `sandbox_retries` times,
then never shown to the model: with ``on_sandbox_error="mark"`` the trajectory ends with
``finish_reason="sandbox_error"``, ``sandbox_error=True`` (training drops it); with ``"raise"``
`SandboxFailure` stops the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence

from torl.engines.base import Engine
from torl.errors import SandboxFailure
from torl.sandbox.base import Sandbox
from torl.sandbox.result import ExecResult, ExecStatus
from torl.tir.parsing import closes_python_block, complete_python_blocks
from torl.tir.seeds import derive_seed
from torl.tir.tool_turns import TOOL_CALL_TRIGGERS, run_tool_call_turns, wrap_error
from torl.tir.trajectory import (
    SkippedCall,
    ToolCall,
    Trajectory,
    append_observation,
)
from torl.tir.turn import generate_turn
from torl.tools.registry import ToolSet

OUTPUT_FENCE = "```output"
BLOCK_CLOSE = "\n```\n"  # a fence line: closes the open ```python block, if there is one
CALL_TRIGGERS = ("output_fence", "block_close")
PROTOCOLS = ("code_blocks", "tool_calls")


@dataclasses.dataclass
class RolloutConfig:
    """The loop's settings: a task's fields (TaskSpec's names and defaults; built by
    `TaskSpec.rollout_config`) joined with the decoding (temperature, top_p, top_k, seed, logprobs)."""

    max_tool_calls: int = 1               # C: executed calls per trajectory; 0 = plain reasoning
    max_response_tokens: int = 3072       # whole completion budget, interpreter tokens included
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None               # per-trajectory/turn seeds derive from it (torl.tir.seeds)
    logprobs: bool = True
    max_observation_chars: int = 512     # observation head+tail truncation (by format_observation)
    exec_timeout_s: float = 10.0          # per-call limits passed to the sandbox
    exec_memory_mb: int = 1024
    stop_strings: tuple[str, ...] = ()    # extra strings that end the trajectory (e.g. "\nUser:" after few-shot)
    session: bool = False                 # True: one interpreter session per trajectory (Jupyter-like)
    call_trigger: str = "output_fence"    # what runs a block: "output_fence" (ToRL) | "block_close"
    on_sandbox_error: str = "mark"        # "mark" (end + flag the trajectory) | "raise"
    sandbox_retries: int = 1              # re-runs of a call that hit SANDBOX_ERROR before the policy applies
    # (result, max_chars) -> observation text; None = torl.sandbox.observation.format_observation
    observation_formatter: Callable[[ExecResult, int], str] | None = None
    protocol: str = "code_blocks"         # "code_blocks" (ToRL's markdown) | "tool_calls" (chat template, torl.tir.tool_turns)
    toolset: ToolSet | None = None        # tool_calls: the tools (None = python alone)
    error_marker: bool = False            # a failed call's output inside <error>...</error> (both protocols)

    def __post_init__(self):
        if self.max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0 (0 = plain reasoning without tools)")
        if self.max_response_tokens < 1:
            raise ValueError("max_response_tokens must be >= 1")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        triggers = CALL_TRIGGERS if self.protocol == "code_blocks" else TOOL_CALL_TRIGGERS
        if self.call_trigger not in triggers:
            raise ValueError(f"call_trigger must be one of {', '.join(triggers)} under protocol {self.protocol}, "
                             f"not {self.call_trigger!r}")
        if self.protocol == "tool_calls" and self.toolset is None:
            from torl.tools.toolset import build_toolset

            self.toolset = build_toolset(["python"], exec_timeout_s=self.exec_timeout_s,
                                         exec_memory_mb=self.exec_memory_mb,
                                         max_observation_chars=self.max_observation_chars)
        if self.on_sandbox_error not in ("mark", "raise"):
            raise ValueError(f"on_sandbox_error must be 'mark' or 'raise', not {self.on_sandbox_error!r}")


def _default_formatter() -> Callable[[ExecResult, int], str]:
    from torl.sandbox.observation import format_observation

    return format_observation


async def rollout(
    engine: Engine,
    sandbox: Sandbox | None,
    prompt_ids: Sequence[int],
    config: RolloutConfig,
    *,
    metadata: dict | None = None,
) -> Trajectory:
    """Run one tool-integrated trajectory from `prompt_ids`. `sandbox` may be None only when C = 0
    (or, under protocol tool_calls, when no tool of the task needs it)."""
    tool_calls = config.protocol == "tool_calls"
    needs_sandbox = config.max_tool_calls > 0 and (not tool_calls or "python" in config.toolset)
    if sandbox is None and needs_sandbox:
        raise ValueError("a sandbox is required when max_tool_calls > 0")
    tokenizer = engine.tokenizer
    traj = Trajectory(prompt_ids=list(prompt_ids), logprobs=[] if config.logprobs else None, metadata=dict(metadata or {}))
    session = await sandbox.open_session() if config.session and sandbox is not None and needs_sandbox else None
    try:
        if tool_calls:
            await run_tool_call_turns(engine, sandbox, traj, config, session, tool_renderer(tokenizer, config.toolset))
        else:
            await _run_turns(engine, sandbox, tokenizer, traj, config, session)
    finally:
        if session is not None:
            await sandbox.close_session(session)
    traj.text = "".join(s["text"] for s in traj.segments)
    traj.model_tokens = sum(traj.loss_mask)
    traj.tool_tokens = len(traj.loss_mask) - traj.model_tokens
    return traj


_RENDERERS: dict = {}


def tool_renderer(tokenizer, toolset: ToolSet):
    """The tokenizer's `ToolTurnRenderer` for these tools, its template checked once to be prefix-preserving
    (`torl.tir.chat_tools`; a UserError naming the template and the way out otherwise)."""
    from torl.tir.chat_tools import ToolTurnRenderer, check_prefix_preserving

    key = (id(tokenizer), json.dumps(toolset.schemas(), sort_keys=True))
    cached = _RENDERERS.get(key)
    if cached is None or cached[0] is not tokenizer:
        renderer = ToolTurnRenderer(tokenizer, toolset.schemas())
        check_prefix_preserving(renderer, toolset.names[0])
        cached = _RENDERERS[key] = (tokenizer, renderer)
    return cached[1]


def encode_prompt(template, question: str, tokenizer, config: RolloutConfig) -> list[int]:
    """The prompt's token ids for `question` under `config`'s protocol (tool_calls: with its tools)."""
    if config.protocol == "tool_calls":
        return template.encode(question, tokenizer, tool_renderer=tool_renderer(tokenizer, config.toolset))
    return template.encode(question, tokenizer)


def call_stops(trigger: str) -> tuple[str, ...]:
    """The stop strings that can trigger a tool call under `trigger`."""
    return (OUTPUT_FENCE,) if trigger == "output_fence" else (OUTPUT_FENCE, BLOCK_CLOSE)


async def _run_turns(engine, sandbox, tokenizer, traj: Trajectory, config: RolloutConfig, session) -> None:
    triggers = call_stops(config.call_trigger)
    while True:
        turn = await generate_turn(engine, traj, config, triggers)
        if turn is None:
            return
        gen, turn_text, calls_left = turn.gen, turn.text, turn.calls_left
        blocks = complete_python_blocks(turn_text)

        triggered = calls_left > 0 and gen.finish_reason == "stop" and gen.stop_reason in triggers
        if not triggered:
            # Final turn: EOS, an extra stop string or the budget. Blocks written here never run.
            reason = "over_budget" if calls_left == 0 else "not_requested"
            traj.skipped_calls += [SkippedCall(code, reason) for code in blocks]
            traj.truncated = gen.finish_reason == "length"
            traj.finish_reason = "length" if traj.truncated else "stop"
            return
        if gen.stop_reason == BLOCK_CLOSE and not closes_python_block(turn_text, turn_text.rfind(BLOCK_CLOSE)):
            continue  # an opener or another language's fence: nothing to run yet
        if not blocks:
            continue  # asked for output without a complete block: nothing to run, keep generating

        traj.skipped_calls += [SkippedCall(code, "not_last") for code in blocks[:-1]]
        code = blocks[-1]
        result = await _execute(sandbox, code, config, session, traj)
        if result.status is ExecStatus.SANDBOX_ERROR:
            traj.calls.append(ToolCall(code, result, observation="", executed=False,
                                       token_start=len(traj.completion_ids), token_end=len(traj.completion_ids)))
            traj.sandbox_error, traj.finish_reason = True, "sandbox_error"
            if config.on_sandbox_error == "raise":
                raise SandboxFailure(f"sandbox failed on our side: {result.sandbox_message or result.stderr[-200:]}")
            return
        formatter = config.observation_formatter or _default_formatter()
        # Trailing newlines would leave a blank line before the closing fence (ToRL strips them).
        observation = formatter(result, config.max_observation_chars).rstrip("\n")
        if config.error_marker and result.status is not ExecStatus.OK:
            observation = wrap_error(observation)
        appended = _observation_suffix(turn_text, observation, gen.stop_reason)
        ids = list(tokenizer(appended, add_special_tokens=False).input_ids)
        start, cut = append_observation(traj, ids, tokenizer, config.max_response_tokens)
        traj.calls.append(ToolCall(code, result, observation, True, start, len(traj.completion_ids)))
        if cut:
            traj.truncated, traj.finish_reason = True, "length"
            return


async def _execute(sandbox: Sandbox, code: str, config: RolloutConfig, session, traj: Trajectory) -> ExecResult:
    for _attempt in range(config.sandbox_retries + 1):
        result = await sandbox.run(code, timeout=config.exec_timeout_s, memory_mb=config.exec_memory_mb, session=session)
        if result.status is not ExecStatus.SANDBOX_ERROR:
            return result
        traj.sandbox_errors += 1
    return result


def _observation_suffix(turn_text: str, observation: str, stop: str) -> str:
    """What to append so the text reads "```output\\n<observation>\\n```\\n".

    After the model's own ```` ```output ```` only the rest of the block is appended; after a
    closing fence (block_close) the whole block is. The stop can end mid-token (a sampled token
    "output\\n" carries the newline; rarely more), so the model may already have written the start
    of what follows: append only the rest. If what it wrote after the stop is not a prefix of the
    block, keep it and open the observation on a new line -- its own tokens are never altered.
    """
    if stop == OUTPUT_FENCE:
        tail = turn_text[turn_text.rfind(OUTPUT_FENCE) + len(OUTPUT_FENCE):]
        block = "\n" + observation + "\n```\n"
    else:
        tail = turn_text[turn_text.rfind(BLOCK_CLOSE) + len(BLOCK_CLOSE):]
        block = OUTPUT_FENCE + "\n" + observation + "\n```\n"
    if block.startswith(tail):
        return block[len(tail):]
    fresh = block if block.startswith("\n") else "\n" + block
    return fresh[1:] if tail.endswith("\n") else fresh


async def rollout_many(
    engine: Engine,
    sandbox: Sandbox | None,
    prompts: Sequence[Sequence[int]],
    config: RolloutConfig,
    *,
    metadata: Sequence[dict] | None = None,
) -> list[Trajectory]:
    """Run one trajectory per prompt concurrently (one task each), results in prompt order.

    Each trajectory's seed derives from ``config.seed`` and its index, so repeated prompts sample differently.
    If one trajectory raises (sandbox unavailable, SandboxFailure), the others are cancelled.
    """
    if metadata is not None and len(metadata) != len(prompts):
        raise ValueError(f"metadata has {len(metadata)} entries for {len(prompts)} prompts")
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(
                rollout(
                    engine,
                    sandbox,
                    prompt,
                    dataclasses.replace(config, seed=derive_seed(config.seed, "sample", i)),
                    metadata=None if metadata is None else metadata[i],
                )
            )
            for i, prompt in enumerate(prompts)
        ]
    return [t.result() for t in tasks]
