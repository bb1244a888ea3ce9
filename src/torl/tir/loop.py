"""The per-trajectory TIR loop: generate, run the last ```` ```python ```` block, feed the output back.

One `rollout` call is one trajectory and one asyncio task; `rollout_many` gathers them. Batching
lives inside the engine, so a trajectory waiting on the sandbox never holds the others back.

Protocol (ToRL's): generation stops at the model-written ```` ```output ````. If that turn holds a
complete ```` ```python ```` block, the LAST one runs and the loop appends whatever part of
``"```output\\n<observation>\\n```\\n"`` the model did not already write, tokenized on its own
(mask 0), then generates again. An incomplete block runs nothing: generation just continues.
After C executed calls the stop string is dropped and what the model writes is its own text
(complete blocks in it are recorded as skipped, never run). The response budget
(`max_response_tokens`) counts interpreter tokens too, like ToRL: an observation that does not
fit is cut and the trajectory ends with ``finish_reason="length"``, ``truncated=True``.

A sandbox failure on OUR side (``ExecStatus.SANDBOX_ERROR``) is retried `sandbox_retries` times,
then never shown to the model: with ``on_sandbox_error="mark"`` the trajectory ends with
``finish_reason="sandbox_error"``, ``sandbox_error=True`` (training drops it); with ``"raise"``
`SandboxFailure` stops the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

from torl.engines.base import Engine, SamplingParams
from torl.sandbox.base import Sandbox
from torl.sandbox.result import ExecResult, ExecStatus
from torl.tir.parsing import complete_python_blocks
from torl.tir.trajectory import SkippedCall, ToolCall, Trajectory

OUTPUT_FENCE = "```output"


class SandboxFailure(RuntimeError):
    """The sandbox failed on our side and the policy says to stop (`on_sandbox_error="raise"`)."""


@dataclasses.dataclass
class RolloutConfig:
    max_tool_calls: int = 1               # C: executed calls per trajectory; 0 = plain reasoning
    max_response_tokens: int = 1024       # whole completion budget, interpreter tokens included
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None               # per-trajectory seeds derive from it (rollout_many: seed + index)
    logprobs: bool = True
    max_observation_chars: int = 512     # observation head+tail truncation (by format_observation)
    exec_timeout: float | None = None     # per-call limits passed to the sandbox (None = its defaults)
    exec_memory_mb: int | None = None
    stop_strings: tuple[str, ...] = ()    # extra strings that end the trajectory (e.g. "\nUser:" after few-shot)
    session: bool = False                 # True: one interpreter session per trajectory (Jupyter-like)
    on_sandbox_error: str = "mark"        # "mark" (end + flag the trajectory) | "raise"
    sandbox_retries: int = 1              # re-runs of a call that hit SANDBOX_ERROR before the policy applies
    # (result, max_chars) -> observation text; None = torl.sandbox.observation.format_observation
    observation_formatter: Callable[[ExecResult, int], str] | None = None

    def __post_init__(self):
        if self.max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0 (0 = plain reasoning without tools)")
        if self.max_response_tokens < 1:
            raise ValueError("max_response_tokens must be >= 1")
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
    """Run one tool-integrated trajectory from `prompt_ids`. `sandbox` may be None only when C = 0."""
    if sandbox is None and config.max_tool_calls > 0:
        raise ValueError("a sandbox is required when max_tool_calls > 0")
    tokenizer = engine.tokenizer
    traj = Trajectory(prompt_ids=list(prompt_ids), logprobs=[] if config.logprobs else None, metadata=dict(metadata or {}))
    session = await sandbox.open_session() if config.session and sandbox is not None and config.max_tool_calls else None
    try:
        await _run_turns(engine, sandbox, tokenizer, traj, config, session)
    finally:
        if session is not None:
            await sandbox.close_session(session)
    traj.text = "".join(s["text"] for s in traj.segments)
    traj.model_tokens = sum(traj.loss_mask)
    traj.tool_tokens = len(traj.loss_mask) - traj.model_tokens
    return traj


async def _run_turns(engine, sandbox, tokenizer, traj: Trajectory, config: RolloutConfig, session) -> None:
    while True:
        remaining = config.max_response_tokens - len(traj.completion_ids)
        if remaining <= 0:
            traj.truncated, traj.finish_reason = True, "length"
            return
        calls_left = config.max_tool_calls - len(traj.calls)
        params = SamplingParams(
            max_tokens=remaining,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            stop=((OUTPUT_FENCE,) if calls_left > 0 else ()) + tuple(config.stop_strings),
            seed=None if config.seed is None else (config.seed * 7919 + traj.num_turns) % 2**31,
            logprobs=config.logprobs,
        )
        gen = await engine.generate(traj.prompt_ids + traj.completion_ids, params)
        if not gen.token_ids:
            raise RuntimeError(f"{type(engine).__name__} returned no tokens for a request with max_tokens={remaining}")
        traj.num_turns += 1
        turn_text = tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        _append(traj, gen.token_ids, gen.logprobs, mask=1)
        traj.segments.append({"kind": "model", "text": turn_text})
        blocks = complete_python_blocks(turn_text)

        if not (calls_left > 0 and gen.finish_reason == "stop" and gen.stop_reason == OUTPUT_FENCE):
            # Final turn: EOS or the budget. Blocks written here never run.
            reason = "over_budget" if calls_left == 0 else "not_requested"
            traj.skipped_calls += [SkippedCall(code, reason) for code in blocks]
            traj.truncated = gen.finish_reason == "length"
            traj.finish_reason = "length" if traj.truncated else "stop"
            return
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
        appended = _observation_suffix(turn_text, observation)
        ids = list(tokenizer(appended, add_special_tokens=False).input_ids)
        room = config.max_response_tokens - len(traj.completion_ids)
        cut = len(ids) > room
        ids = ids[:room]
        start = len(traj.completion_ids)
        _append(traj, ids, None, mask=0)
        traj.segments.append({"kind": "tool", "text": tokenizer.decode(ids, skip_special_tokens=True)})
        traj.calls.append(ToolCall(code, result, observation, True, start, len(traj.completion_ids)))
        if cut:
            traj.truncated, traj.finish_reason = True, "length"
            return


async def _execute(sandbox: Sandbox, code: str, config: RolloutConfig, session, traj: Trajectory) -> ExecResult:
    for _attempt in range(config.sandbox_retries + 1):
        result = await sandbox.run(code, timeout=config.exec_timeout, memory_mb=config.exec_memory_mb, session=session)
        if result.status is not ExecStatus.SANDBOX_ERROR:
            return result
        traj.sandbox_errors += 1
    return result


def _observation_suffix(turn_text: str, observation: str) -> str:
    """What to append so the text reads "```output\\n<observation>\\n```\\n".

    The stop can end mid-token (a sampled token "output\\n" carries the newline; rarely more), so
    the model may already have written the start of the block: append only the rest. If what it
    wrote after the fence is not a prefix of the block, keep it and open the observation on a
    new line -- its own tokens are never altered.
    """
    tail = turn_text[turn_text.rfind(OUTPUT_FENCE) + len(OUTPUT_FENCE):]
    block = "\n" + observation + "\n```\n"
    if block.startswith(tail):
        return block[len(tail):]
    return ("" if tail.endswith("\n") else "\n") + observation + "\n```\n"


def _append(traj: Trajectory, ids: Sequence[int], logprobs: Sequence[float] | None, *, mask: int) -> None:
    traj.completion_ids.extend(ids)
    traj.loss_mask.extend([mask] * len(ids))
    if traj.logprobs is None:
        return
    if mask and logprobs is None:
        traj.logprobs = None  # the engine returned none: say so rather than invent values
        return
    traj.logprobs.extend(logprobs if mask else [0.0] * len(ids))


async def rollout_many(
    engine: Engine,
    sandbox: Sandbox | None,
    prompts: Sequence[Sequence[int]],
    config: RolloutConfig,
    *,
    metadata: Sequence[dict] | None = None,
) -> list[Trajectory]:
    """Run one trajectory per prompt concurrently (one task each), results in prompt order.

    Per-trajectory seeds are ``config.seed + index`` so repeated prompts sample differently.
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
                    config if config.seed is None else dataclasses.replace(config, seed=config.seed + i),
                    metadata=None if metadata is None else metadata[i],
                )
            )
            for i, prompt in enumerate(prompts)
        ]
    return [t.result() for t in tasks]
