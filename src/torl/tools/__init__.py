"""Tools for the `tool_calls` protocol: a registry (users add their own), `python` (the sandbox) and
`search` (BM25 over a local corpus). See `torl.tools.registry` for how to register a tool."""

from torl.tools.registry import (
    BUILTIN_TOOLS,
    FunctionTool,
    Tool,
    ToolContext,
    ToolError,
    ToolOutput,
    ToolSet,
    register_tool,
    tool_names,
)
from torl.tools.toolset import build_toolset

__all__ = ["BUILTIN_TOOLS", "FunctionTool", "Tool", "ToolContext", "ToolError", "ToolOutput", "ToolSet",
           "build_toolset", "register_tool", "tool_names"]
