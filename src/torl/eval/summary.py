"""Turn eval rows into scores, behaviour analytics and ToRL-style tables; write them to the out dir.

Files written next to ``trajectories.jsonl``:

- ``results.json``: settings, per-benchmark scores (accuracy = avg@k, pass@k, counts, sandbox
  errors) and the unweighted average over benchmarks;
- ``results.md``: the table in ToRL's layout (rows = model, columns = benchmarks + Average);
- ``analytics.json`` / ``analytics.md``: `torl.metrics` behaviour metrics per benchmark (protocol
  tool_calls adds the ``tools/*`` metrics of `torl.tools.metrics`: parse errors, unknown tools, per tool);
- with ``--tools-off-baseline``: ``tools_off/`` (the same eval at C = 0, a complete eval dir of its
  own) and a ``tools_off_baseline`` entry in results.json / a table in results.md (`tools_off.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

from torl.analysis.tables import (
    display_name,
    markdown_table,
    metric_title,
    metrics_shown,
    table_rows,
)
from torl.eval.accuracy import benchmark_scores
from torl.eval.tools_off import comparison_table
from torl.metrics.behaviour import metrics_by
from torl.run_layout import EvalLayout
from torl.tools.metrics import tool_call_metrics_by

# The analytics rows shown in analytics.md (all of them are in analytics.json).
ANALYTICS_SHOWN = ("accuracy", "code_ratio", "pass_ratio", "calls_per_response", "skipped_calls",
                   "code_after_answer_ratio", "response_tokens", "truncated_ratio", "error_recovery_ratio",
                   "cross_check_ratio", "cross_check_contradict_ratio", "contradiction_changed_ratio",
                   "accuracy_with_code", "accuracy_without_code", "sandbox_error_responses")




def summarize(rows: list[dict], cfg) -> dict:
    """Scores and analytics of the finished rows, benchmarks in the order the user gave them."""
    scores = {}
    for name in cfg.benchmarks:
        bench_rows = [r for r in rows if r["benchmark"] == name]
        per_problem: dict[str, list] = {}
        for r in bench_rows:
            per_problem.setdefault(r["question_id"], []).append(r["correct"])
        s = benchmark_scores(per_problem.values(), cfg.n)
        s["sandbox_errors"] = sum(int(r["trajectory"].get("sandbox_errors", 0)) for r in bench_rows)
        scores[name] = s
    analytics = metrics_by(rows, key=lambda r: r["benchmark"])
    if cfg.task.protocol == "tool_calls":
        for name, tools in tool_call_metrics_by(rows, key=lambda r: r["benchmark"]).items():
            analytics[name].update(tools)
    accuracies = [s["accuracy"] for s in scores.values()]
    passes = [s["pass_at_k"] for s in scores.values()]
    return {
        "settings": cfg.settings(),
        "label": cfg.model_label or cfg.model,
        "k": cfg.n,
        "benchmarks": scores,
        "average": {
            "accuracy": _mean_or_none(accuracies),
            "pass_at_k": _mean_or_none(passes),
        },
        "analytics": {name: analytics[name] for name in cfg.benchmarks if name in analytics},
    }


def _mean_or_none(values: list) -> float | None:
    # An average over a benchmark with no score would silently change what "Average" means.
    return None if not values or any(v is None for v in values) else sum(values) / len(values)














def notes(summary: dict) -> list[str]:
    """Plain-language lines about what the numbers exclude (sandbox failures, missing problems)."""
    out = []
    for name, s in summary["benchmarks"].items():
        if s["unscored_samples"]:
            out.append(f"{display_name(name)}: {s['unscored_samples']} sample(s) hit a sandbox failure (ours, "
                       f"{s['sandbox_errors']} error(s)) and are excluded from the scores; rerun the same command to retry them")
        if summary["k"] > 1 and s["pass_at_k_problems"] < s["problems"] - s["unscored_problems"]:
            out.append(f"{display_name(name)}: pass@{summary['k']} is over {s['pass_at_k_problems']} problems "
                       f"with all {summary['k']} samples scored")
    return out


def results_markdown(summary: dict) -> str:
    parts = []
    for metric in metrics_shown(summary):
        header, cells = table_rows(summary, metric)
        parts.append(f"### {metric_title(metric, summary['k'])} (%)\n\n" + markdown_table(header, [cells]))
    settings = summary["settings"]
    parts.append(
        f"Settings: template `{settings['template']}`, C = {settings['max_tool_calls']} tool call(s), "
        f"{'greedy' if settings['temperature'] <= 0 else 'temperature ' + str(settings['temperature'])}, "
        f"{summary['k']} sample(s) per problem, max {settings.get('max_response_tokens', settings.get('max_tokens'))} tokens, engine {settings['engine']}.\n"
    )
    parts += [f"- {line}\n" for line in notes(summary)]
    if "tools_off_baseline" in summary:
        title, header, rows = comparison_table(summary["tools_off_baseline"], summary["k"])
        parts.append(f"### {title}\n\n" + markdown_table(header, rows)
                     + f"\nThe tools-off eval's own results: `{summary['tools_off_baseline']['out_dir']}`.\n")
    return "\n".join(parts)


def analytics_markdown(summary: dict) -> str:
    names = list(summary["analytics"])
    header = ["metric"] + [display_name(n) for n in names]
    tools = sorted({k for n in names for k in summary["analytics"][n] if k.startswith("tools/")})
    rows = [[key] + [_fmt(summary["analytics"][n].get(key)) for n in names] for key in ANALYTICS_SHOWN + tuple(tools)]
    return ("### Behaviour analytics (definitions: torl/metrics/METRICS.md)\n\n" + markdown_table(header, rows))


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_outputs(summary: dict, rows: list[dict], out_dir: Path) -> None:
    out = EvalLayout(out_dir)
    out.root.mkdir(parents=True, exist_ok=True)
    out.results.write_text(json.dumps({k: v for k, v in summary.items() if k != "analytics"}, indent=2) + "\n")
    out.results_table.write_text(results_markdown(summary))
    out.analytics.write_text(json.dumps(summary["analytics"], indent=2) + "\n")
    out.analytics_table.write_text(analytics_markdown(summary))


def print_summary(summary: dict, out_dir: str | Path) -> None:
    """The results table(s) on the terminal (rich), then where the files are."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for metric in metrics_shown(summary):
        header, cells = table_rows(summary, metric)
        table = Table(title=f"{metric_title(metric, summary['k'])} (%)")
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right")
        table.add_row(*cells)
        console.print(table)
    if "tools_off_baseline" in summary:
        title, header, rows = comparison_table(summary["tools_off_baseline"], summary["k"])
        table = Table(title=title)
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for line in notes(summary):
        console.print(f"[yellow]note:[/yellow] {line}", highlight=False)
    console.print(f"results, analytics and trajectories in {out_dir}", highlight=False)
