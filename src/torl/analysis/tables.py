"""Results tables in ToRL's layout (rows = model, columns = benchmarks + Average), as cells or Markdown.

Works on the summary dict `torl eval` writes to results.json (``label``, ``k``, ``benchmarks``
with per-benchmark ``accuracy`` / ``pass_at_k``, ``average``).
"""

from __future__ import annotations

from pathlib import Path

DISPLAY_NAMES = {"aime24": "AIME24", "aime25": "AIME25", "amc23": "AMC23", "math500": "MATH500",
                 "minerva_math": "Minerva", "olympiadbench": "OlympiadBench", "gsm8k": "GSM8K"}


def display_name(benchmark: str) -> str:
    """Column title: the paper's name for known benchmarks, the file stem for a path."""
    return DISPLAY_NAMES.get(benchmark, Path(benchmark).stem if "/" in benchmark or "." in benchmark else benchmark)


def metric_title(metric: str, k: int) -> str:
    """"greedy accuracy" / "avg@k" for accuracy, "pass@k" for pass_at_k."""
    if metric == "pass_at_k":
        return f"pass@{k}"
    return "greedy accuracy" if k == 1 else f"avg@{k}"


def metrics_shown(summary: dict) -> list[str]:
    """Greedy runs have one table; sampled runs (k > 1) add pass@k."""
    return ["accuracy"] if summary["k"] == 1 else ["accuracy", "pass_at_k"]


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def table_rows(summary: dict, metric: str) -> tuple[list[str], list[str]]:
    """(header, cells) of the ToRL-layout row for `metric` ("accuracy" or "pass_at_k"), in percent."""
    names = list(summary["benchmarks"])
    header = ["Model"] + [display_name(n) for n in names] + ["Average"]
    label = summary["label"] if summary["k"] == 1 else f"{summary['label']} ({metric_title(metric, summary['k'])})"
    cells = [label] + [percent(summary["benchmarks"][n][metric]) for n in names] + [percent(summary["average"][metric])]
    return header, cells


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table; first column left-aligned, the rest right-aligned."""
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
