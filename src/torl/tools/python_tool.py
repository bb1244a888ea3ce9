"""The `python` tool: the model's code runs in torl's sandbox (stateless, or one session per trajectory)."""

from __future__ import annotations

import time

from torl.sandbox.observation import format_observation
from torl.sandbox.result import ExecStatus
from torl.tools.registry import (
    Tool,
    ToolContext,
    ToolOutput,
    check_arguments,
    error_output,
)

PYTHON_PARAMETERS = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "Python code to run; print() what you want to see."}},
    "required": ["code"],
}


class PythonTool(Tool):
    name = "python"
    description = "Run Python code in a sandbox and return what it printed (or its error)."
    parameters = PYTHON_PARAMETERS

    def __init__(self, *, timeout_s: float = 10.0, memory_mb: int = 1024, max_output_chars: int = 512,
                 sandbox_retries: int = 1, max_calls: int | None = None) -> None:
        self.timeout_s, self.memory_mb, self.max_output_chars = timeout_s, memory_mb, max_output_chars
        self.sandbox_retries, self.max_calls = sandbox_retries, max_calls

    async def call(self, arguments: dict, context: ToolContext) -> ToolOutput:
        problem = check_arguments(arguments, self.parameters)
        if problem:
            return error_output("bad_arguments", f"python: {problem}")
        if context.sandbox is None:
            raise RuntimeError("the python tool needs a sandbox (rollout(..., sandbox=...))")
        code = arguments["code"] if arguments["code"].endswith("\n") else arguments["code"] + "\n"
        started = time.perf_counter()
        for _attempt in range(self.sandbox_retries + 1):
            result = await context.sandbox.run(code, timeout=self.timeout_s, memory_mb=self.memory_mb,
                                               session=context.session)
            if result.status is not ExecStatus.SANDBOX_ERROR:
                break
            if context.trajectory is not None:
                context.trajectory.sandbox_errors += 1
        latency = time.perf_counter() - started
        if result.status is ExecStatus.SANDBOX_ERROR:  # ours, never the model's: the loop ends the trajectory
            return ToolOutput("", result, "sandbox_error", latency)
        text = format_observation(result, self.max_output_chars).rstrip("\n")
        return ToolOutput(text, result, None if result.status is ExecStatus.OK else "tool_error", latency)
