"""Tools a model can call by name (the `tool_calls` protocol), and how users add their own.

A `Tool` has a name, a description, a JSON schema for its arguments (the `parameters` of an
OpenAI/hermes function schema: it is what the chat template shows the model), a time limit, an
output cap and an optional per-trajectory call budget. `FunctionTool` wraps any Python callable,
sync or async::

    from torl.tools import FunctionTool, register_tool

    def lookup(word: str) -> str:
        return DICTIONARY.get(word, "not found")

    register_tool(FunctionTool("lookup", lookup, description="Define a word.",
                               parameters={"type": "object", "properties": {"word": {"type": "string"}},
                                           "required": ["word"]},
                               timeout_s=2.0, max_output_chars=1000))

and then ``tools: [python, lookup]`` in a recipe (or ``--tools python,lookup``) makes it callable.
The callable gets the call's arguments as keyword arguments, after they were checked against the
schema's ``required`` and ``properties`` (unknown or missing names are the model's error, shown to
it). A sync callable runs in a worker thread; past ``timeout_s`` the call is reported to the model
as timed out (the thread cannot be killed: keep sync tools short or make them async). An exception
is the model's error only if the tool says so (`ToolError`); any other exception is reported to
the model as the tool's failure, with its type and message. Output longer than
``max_output_chars`` is cut in the middle with a marker. Tools run in the trainer's process:
untrusted code belongs in the `python` tool, which runs it in the sandbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torl.sandbox.result import ExecResult, ExecStatus


class ToolError(Exception):
    """Raised by a tool for a mistake in its arguments: the message is shown to the model."""


@dataclasses.dataclass
class ToolOutput:
    """What one call produced. `result` is the ExecResult-shaped record every trajectory stores
    (`status` ok | error | timeout | output_limit | sandbox_error, `stdout` = the tool's text)."""

    text: str
    result: ExecResult
    error: str | None = None      # None | parse_error | unknown_tool | bad_arguments | tool_error | timeout | budget
    latency_s: float = 0.0


@dataclasses.dataclass
class ToolContext:
    """What a tool may use from the trajectory that calls it (the python tool: the sandbox and session)."""

    sandbox: Any = None
    session: Any = None
    trajectory: Any = None


class Tool:
    name: str
    description: str = ""
    parameters: ClassVar[dict] = {"type": "object", "properties": {}}
    timeout_s: float = 10.0
    max_output_chars: int = 2048
    max_calls: int | None = None          # per trajectory; None = only C limits it

    def schema(self) -> dict:
        """The OpenAI/hermes function schema (what ``apply_chat_template(tools=...)`` takes)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    async def call(self, arguments: dict, context: ToolContext) -> ToolOutput:
        raise NotImplementedError


def check_arguments(arguments: Any, parameters: Mapping) -> str | None:
    """Why `arguments` do not fit the schema (missing required, unknown names, wrong JSON type), or None."""
    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    properties = parameters.get("properties", {}) or {}
    missing = [k for k in parameters.get("required", []) or [] if k not in arguments]
    if missing:
        return f"missing required argument(s): {', '.join(missing)}"
    if parameters.get("additionalProperties", False) is False:
        extra = [k for k in arguments if k not in properties]
        if extra:
            return f"unknown argument(s): {', '.join(extra)}; expected: {', '.join(properties) or 'none'}"
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}
    for key, value in arguments.items():
        wanted = types.get((properties.get(key) or {}).get("type"))
        if wanted is not None and (not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool))):
            return f"argument {key!r} must be of type {properties[key]['type']}"
    return None


def cap_output(text: str, max_chars: int) -> str:
    """`text` cut in the middle to about `max_chars`, with a marker saying how much was cut."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


def error_output(kind: str, message: str, latency_s: float = 0.0) -> ToolOutput:
    status = ExecStatus.TIMEOUT if kind == "timeout" else ExecStatus.ERROR
    return ToolOutput(message, ExecResult(status, stderr=message, exit_code=1), kind, latency_s)


class FunctionTool(Tool):
    """A user's callable as a tool: ``fn(**arguments) -> str`` (or anything `str()` renders), sync or async."""

    def __init__(self, name: str, fn: Callable[..., Any], *, description: str = "", parameters: dict | None = None,
                 timeout_s: float = 10.0, max_output_chars: int = 2048, max_calls: int | None = None) -> None:
        if not name.isidentifier():
            raise ValueError(f"tool name {name!r} must be an identifier (letters, digits, _)")
        if timeout_s <= 0 or max_output_chars < 16:
            raise ValueError("a tool needs timeout_s > 0 and max_output_chars >= 16")
        self.name, self.fn, self.description = name, fn, description or (inspect.getdoc(fn) or "").split("\n")[0]
        self.parameters = parameters or {"type": "object", "properties": {}}
        self.timeout_s, self.max_output_chars, self.max_calls = timeout_s, max_output_chars, max_calls

    async def call(self, arguments: dict, context: ToolContext) -> ToolOutput:
        problem = check_arguments(arguments, self.parameters)
        if problem:
            return error_output("bad_arguments", f"{self.name}: {problem}")
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(self.fn):
                value = await asyncio.wait_for(self.fn(**arguments), self.timeout_s)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(self.fn, **arguments), self.timeout_s)
        except TimeoutError:
            return error_output("timeout", f"{self.name}: timed out after {self.timeout_s:g} s",
                                time.perf_counter() - started)
        except ToolError as e:
            return error_output("bad_arguments", f"{self.name}: {e}", time.perf_counter() - started)
        except Exception as e:  # noqa: BLE001 - a tool's failure is reported to the model, never crashes the run
            return error_output("tool_error", f"{self.name} failed: {type(e).__name__}: {e}",
                                time.perf_counter() - started)
        text = value if isinstance(value, str) else str(value)
        capped = cap_output(text, self.max_output_chars)
        status = ExecStatus.OK if capped == text else ExecStatus.OUTPUT_LIMIT
        return ToolOutput(capped, ExecResult(status, stdout=capped, exit_code=0), None, time.perf_counter() - started)


_USER_TOOLS: dict[str, Tool] = {}


def register_tool(tool: Tool, *, overwrite: bool = False) -> Tool:
    """Make `tool` available by name to task specs (``tools: [...]``) and `--tools`."""
    if tool.name in _USER_TOOLS and not overwrite:
        raise ValueError(f"tool {tool.name!r} is already registered; pass overwrite=True to replace it")
    if tool.name in BUILTIN_TOOLS:
        raise ValueError(f"{tool.name!r} is a built-in tool; pick another name")
    _USER_TOOLS[tool.name] = tool
    return tool


BUILTIN_TOOLS = ("python", "search")


def tool_names() -> list[str]:
    return sorted(set(BUILTIN_TOOLS) | set(_USER_TOOLS))


@dataclasses.dataclass
class ToolSet:
    """The tools of one task, by name, in the order the model is shown them."""

    tools: dict[str, Tool]

    def schemas(self) -> list[dict]:
        return [t.schema() for t in self.tools.values()]

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    @property
    def names(self) -> list[str]:
        return list(self.tools)


def registered_tool(name: str) -> Tool | None:
    """The tool `register_tool` registered under `name`, if any."""
    return _USER_TOOLS.get(name)
