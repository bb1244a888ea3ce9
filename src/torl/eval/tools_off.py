"""The tools-off counterfactual: the same eval at C = 0, to see how much accuracy the interpreter carries.

``torl eval --tools-off-baseline`` samples every question a second time with the task's
``max_tool_calls`` overridden to 0 (`TaskSpec.override`, recorded in that eval's
``task_overrides`` like any other override), same model, decoding and seeds. That second eval is a
complete eval dir of its own under ``<out>/tools_off/`` (resumable, with its own results and
analytics), so the main results are never touched by it. The main ``results.json`` gains a
``tools_off_baseline`` entry, and ``results.md`` and the terminal a table: per benchmark and on
average, accuracy (greedy, or avg@k) with tools, with tools off, and their difference.
"""

from __future__ import annotations

from torl.analysis.tables import display_name, metric_title, percent

TOOLS_OFF_DIR = "tools_off"  # inside the main eval's --out


def _difference(with_tools: float | None, tools_off: float | None) -> float | None:
    return None if with_tools is None or tools_off is None else with_tools - tools_off


def tools_off_comparison(summary: dict, off_summary: dict, off_dir: str) -> dict:
    """Accuracy with tools vs tools off, per benchmark and on average (fractions; None = not scored).

    ``difference`` = with tools - tools off: the share of problems the interpreter's help is worth.
    """
    def row(with_tools: float | None, tools_off: float | None) -> dict:
        return {"with_tools": with_tools, "tools_off": tools_off, "difference": _difference(with_tools, tools_off)}

    return {
        "out_dir": off_dir,
        "max_tool_calls": summary["settings"]["max_tool_calls"],
        "benchmarks": {name: row(s["accuracy"], off_summary["benchmarks"][name]["accuracy"])
                       for name, s in summary["benchmarks"].items()},
        "average": row(summary["average"]["accuracy"], off_summary["average"]["accuracy"]),
    }


def _signed_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def comparison_table(comparison: dict, k: int) -> tuple[str, list[str], list[list[str]]]:
    """(title, header, rows) of the comparison in percent: with tools, tools off, difference."""
    names = list(comparison["benchmarks"])
    cells = [*(comparison["benchmarks"][n] for n in names), comparison["average"]]
    c = comparison["max_tool_calls"]
    title = f"Tools-off baseline: {metric_title('accuracy', k)} with C = {c} vs C = 0 (%)"
    header = ["Tools"] + [display_name(n) for n in names] + ["Average"]
    rows = [[f"with tools (C = {c})"] + [percent(x["with_tools"]) for x in cells],
            ["tools off (C = 0)"] + [percent(x["tools_off"]) for x in cells],
            ["difference"] + [_signed_percent(x["difference"]) for x in cells]]
    return title, header, rows
