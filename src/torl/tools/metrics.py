"""Per-tool metrics over a batch of trajectories (``Trajectory.to_dict()``), the ``tools/*`` keys that
protocol tool_calls adds to the training metrics and to evaluation summaries:

- ``tools/parse_error_ratio``: share of calls whose text was not a well-formed call (bad JSON, no name)
- ``tools/unknown_tool_ratio``, ``tools/bad_arguments_ratio``: share of calls naming no tool of the
  task, or with arguments that do not fit its schema
- ``tools/call_error_ratio``: share of calls that failed for any reason (the above, the tool's own
  failure, its time limit, its per-tool budget)
- ``tools/<name>/calls``, ``tools/<name>/errors`` (per response), ``tools/<name>/latency_s`` (mean per call)

Ratios are over all calls of the batch (0 when it made none). Code-block trajectories count as calls
of ``python``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable


def tool_call_metrics(trajectories: list[dict]) -> dict[str, float]:
    """The ``tools/*`` metrics above over `trajectories` (full or compact `Trajectory.to_dict()` forms)."""
    calls = [c for t in trajectories for c in t.get("calls", []) if c.get("executed", True)]
    out: dict[str, float] = {}
    n = len(calls)
    for kind, key in (("parse_error", "parse_error_ratio"), ("unknown_tool", "unknown_tool_ratio"),
                      ("bad_arguments", "bad_arguments_ratio")):
        out[f"tools/{key}"] = sum(c.get("error") == kind for c in calls) / n if n else 0.0
    out["tools/call_error_ratio"] = sum(bool(c.get("error")) for c in calls) / n if n else 0.0
    by_tool: dict[str, list[dict]] = defaultdict(list)
    for c in calls:
        if c.get("error") not in ("parse_error", "unknown_tool"):  # a name the task has no tool for is no tool's call
            by_tool[c.get("tool", "python")].append(c)
    responses = max(1, len(trajectories))
    for name, group in sorted(by_tool.items()):
        out[f"tools/{name}/calls"] = len(group) / responses
        out[f"tools/{name}/errors"] = sum(bool(c.get("error")) for c in group) / responses
        out[f"tools/{name}/latency_s"] = sum(c.get("latency_s", 0.0) for c in group) / len(group)
    return out


def tool_call_metrics_by(rows: Iterable[dict], key: Callable[[dict], object]) -> dict[object, dict[str, float]]:
    """`tool_call_metrics` per group of sample rows (each row holds a ``trajectory``), as
    `torl.metrics.behaviour.metrics_by` groups the behaviour metrics: eval benchmarks, training steps."""
    groups: dict[object, list[dict]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row["trajectory"])
    return {k: tool_call_metrics(trajectories) for k, trajectories in groups.items()}
