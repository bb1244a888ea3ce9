"""No import circles between torl modules, counting imports inside functions.

A function-level import hides a circle from Python (it only bites when the function runs, or
never), not from a reader: two modules that import each other are one idea split in two. The
graph is read from the source with `ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torl

SRC = Path(torl.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The torl module `name` refers to: itself, or its package when it names a module's member."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """{module: the torl modules it imports}; `from pkg import mod` counts as importing pkg.mod.

    A package's `__init__` is not counted as imported by its own submodules' `from pkg.sub import`,
    because Python runs it anyway: only explicit imports are edges.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.split(".")[0] != "torl":
                    continue
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "torl.train.session" in graph
    assert "torl.train.session" in graph["torl.train.trainer"]
    assert "torl.train.lora" in graph["torl.train.trainer"]  # imported inside run_training


def test_finds_a_circle_when_there_is_one():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_torl_modules():
    cycles = find_cycles(import_graph())
    assert cycles == [], "modules that import each other (split one idea, or move the shared part down): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


def _imports_into(graph: dict[str, set[str]], sources: str, targets: tuple[str, ...], allowed: str = "\0") -> list[str]:
    """'a -> b' for every module under `sources` importing one under `targets` (not under `allowed`)."""
    def under(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return sorted(f"{m} -> {t}" for m, edges in graph.items() if under(m, sources)
                  for t in edges if any(under(t, p) for p in targets) and not under(t, allowed))


def test_imports_point_one_way():
    graph = import_graph()
    # The metric definitions sit below everything that computes or shows them.
    assert _imports_into(graph, "torl.metrics", ("torl.train", "torl.eval", "torl.analysis")) == []
    # Training never reaches into the offline report tool.
    assert _imports_into(graph, "torl.train", ("torl.analysis",)) == []
    # The policy update is a room of its own: the rest of training imports it, never the other way.
    assert _imports_into(graph, "torl.train.update", ("torl.train",), allowed="torl.train.update") == []


def test_only_the_sandbox_opens_its_wings():
    """RL, eval and the rest see the sandbox's interface (`torl.sandbox`, base, result, observation,
    config, `make_sandbox`); the local backend and the HTTP server/client stay behind it."""
    graph = import_graph()
    wings = ("torl.sandbox.local", "torl.sandbox.http")
    assert "torl.sandbox.local" in graph["torl.sandbox"]  # the check can see a wing being imported
    outside = {m: edges for m, edges in graph.items() if m != "torl.sandbox" and not m.startswith("torl.sandbox.")}
    assert _imports_into(outside, "torl", wings) == []
