"""The tools a task names, built: the built-ins (`python`, `search`) configured from the task spec,
the others from the registry (`register_tool`). Apart from `registry.py` because it imports the
built-in tools, which themselves build on the registry's types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torl.tools.python_tool import PythonTool
from torl.tools.registry import Tool, ToolSet, registered_tool, tool_names
from torl.tools.search import SearchTool


def build_toolset(names: Iterable[str], *, exec_timeout_s: float = 10.0, exec_memory_mb: int = 1024,
                  max_observation_chars: int = 512, search_corpus: str | None = None,
                  max_calls: Mapping[str, int] | None = None) -> ToolSet:
    """The named tools: built-ins configured from the task spec, the others from `register_tool`."""
    tools: dict[str, Tool] = {}
    for name in names:
        if name == "python":
            tool: Tool = PythonTool(timeout_s=exec_timeout_s, memory_mb=exec_memory_mb,
                                    max_output_chars=max_observation_chars)
        elif name == "search":
            if not search_corpus:
                raise ValueError("the search tool needs a corpus: set search_corpus to a JSONL file of "
                                 "{\"id\", \"text\"[, \"title\"]} documents")
            tool = SearchTool.from_jsonl(search_corpus, max_output_chars=max(max_observation_chars, 256))
        elif registered_tool(name) is not None:
            tool = registered_tool(name)
        else:
            raise ValueError(f"unknown tool {name!r}; known: {', '.join(tool_names())} "
                             "(register your own with torl.tools.register_tool)")
        tools[name] = tool
    for name, budget in (max_calls or {}).items():
        if name not in tools:
            raise ValueError(f"max_calls_per_tool names {name!r}, which is not among the tools {sorted(tools)}")
        tools[name] = _with_budget(tools[name], budget)
    return ToolSet(tools)


def _with_budget(tool: Tool, budget: int) -> Tool:
    import copy

    limited = copy.copy(tool)
    limited.max_calls = budget
    return limited


_imported_files: dict[str, object] = {}


def import_tool_modules(modules: Iterable[str]) -> None:
    """Import the user's tool modules (dotted names, or paths to .py files) so that the tools they
    register with `register_tool` can be named; a module that fails to import is one ValueError line."""
    import importlib
    import importlib.util
    from pathlib import Path

    for name in modules:
        try:
            if not name.endswith(".py"):
                importlib.import_module(name)
                continue
            path = str(Path(name).resolve())
            if path in _imported_files:  # loaded once per process: a second load would register twice
                continue
            spec = importlib.util.spec_from_file_location(f"torl_tool_module_{len(_imported_files)}", path)
            if spec is None or not Path(path).is_file():
                raise FileNotFoundError(f"no such file: {name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _imported_files[path] = module
        except Exception as e:  # noqa: BLE001 - the user's module: any failure is theirs to read
            raise ValueError(f"tool_modules: cannot import {name}: {type(e).__name__}: {e}") from None
