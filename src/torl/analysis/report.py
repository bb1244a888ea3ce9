"""`build_report`: plots, analytics and the HTML trajectory browser for a training run or an eval dir.

Writes into `out_dir` (default ``<run>/report``):

- training run: ``heldout_before_after.png`` (when the run evaluated held-out questions before/after
  training), ``curves.png`` + ``curve_*.png`` (ToRL's curves, reward, loss, entropy, grad norm),
  ``health_over_steps.png``, ``analytics_over_steps.png``, ``analytics_by_step.json``;
- eval dir: ``eval_benchmarks.png``, ``analytics.json``;
- both: ``index.html`` (self-contained: plots inline, trajectories embedded, filters). Under protocol
  tool_calls the analytics (and a "Tool calls" table) hold the ``tools/*`` metrics of
  `torl.tools.metrics` per step or benchmark: parse errors, unknown tools, calls per tool. A training
  run's browser also holds the held-out rollouts, as groups "held-out before" / "held-out after".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from torl.analysis.plots import (
    analytics_over_steps,
    eval_bars,
    health_curves,
    heldout_bars,
    step_range,
    training_curves,
)
from torl.analysis.rundata import RunData, load_run
from torl.analysis.tables import display_name, metric_title, metrics_shown, table_rows
from torl.analysis.viewer import heldout_record, render_page, sample_record
from torl.errors import UserError
from torl.metrics.behaviour import metrics_by
from torl.tools.metrics import tool_call_metrics_by

SUMMARY_KEYS = ("accuracy", "code_ratio", "pass_ratio", "calls_per_response", "response_tokens",
                "error_recovery_ratio", "cross_check_ratio", "accuracy_with_code", "accuracy_without_code")
# metrics.jsonl keys only a rollout-based (GRPO) run logs; a run without any of them and without samples
# is some other trainer's (SFT, plain HF) and has nothing this report draws.
ROLLOUT_KEYS = ("reward", "rewards/accuracy", "tools/code_ratio", "lengths/model_tokens")


def pick_samples(samples: list[dict], group_key: str, max_samples: int) -> list[dict]:
    """At most `max_samples` rows for the page, spread evenly over groups (steps/benchmarks), order kept."""
    if max_samples <= 0 or len(samples) <= max_samples:
        return samples
    groups: dict[object, list[int]] = {}
    for i, row in enumerate(samples):
        groups.setdefault(row.get(group_key), []).append(i)
    quota, chosen = max(1, max_samples // len(groups)), []
    for indices in groups.values():
        stride = max(1, math.ceil(len(indices) / quota))
        chosen.extend(indices[::stride][:quota])
    return [samples[i] for i in sorted(chosen)[:max_samples]]


def check_reportable(run: RunData) -> None:
    """One clear line for a directory this report cannot draw (instead of a traceback or an empty page)."""
    where = "trajectories.jsonl" if run.kind == "eval" else "samples/"
    for row in run.samples:
        if not isinstance(row.get("trajectory"), dict):
            raise UserError(f"{run.root / where} holds rows without a 'trajectory' (keys: {', '.join(sorted(row)[:8])}): "
                            "`torl report` reads `torl train` run dirs and `torl eval` output dirs")
    if run.kind == "eval":
        return
    if not run.metrics and not run.samples:
        raise UserError(f"{run.root} holds no metrics and no samples yet; run at least one training step")
    if not run.samples and not any(k in row for row in run.metrics for k in ROLLOUT_KEYS):
        raise UserError(f"{run.root / 'metrics.jsonl'} has no rollout metrics ({', '.join(ROLLOUT_KEYS)}) and "
                        "samples/ is empty: not a `torl train` GRPO run (SFT and other trainers' runs have no report)")


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, max_samples: int = 3000) -> list[Path]:
    """Write the report; return the files written (index.html first)."""
    run = load_run(run_dir)
    check_reportable(run)
    out = Path(out_dir) if out_dir is not None else run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    grouped = metrics_by(run.samples, key=lambda r: r.get(run.group_key))
    if run.protocol == "tool_calls":
        for group, tools in tool_call_metrics_by(run.samples, key=lambda r: r.get(run.group_key)).items():
            grouped[group].update(tools)
    if run.results and run.results.get("benchmarks"):  # the user's benchmark order, as in the results table
        order = list(run.results["benchmarks"])
        grouped = dict(sorted(grouped.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    if run.kind == "train":
        heldout = {when: h.summary for when, h in run.heldout.items()}
        images = (heldout_bars(heldout, out) + training_curves(run.metrics, grouped, out) + health_curves(run.metrics, out)
                  + analytics_over_steps(grouped, out, step_range(run.metrics, grouped)))
        data_file = out / "analytics_by_step.json"
    else:
        images = eval_bars(grouped, out, display=display_name)
        data_file = out / "analytics.json"
    data_file.write_text(json.dumps({str(k): v for k, v in grouped.items()}, indent=2) + "\n")

    shown = pick_samples(run.samples, run.group_key, max_samples)
    note = "" if len(shown) == len(run.samples) else (
        f"The browser holds {len(shown)} of {len(run.samples)} sampled trajectories, spread evenly over "
        f"{run.group_key}s (--max-samples to change).")
    page = render_page(
        title=f"torl {'training run' if run.kind == 'train' else 'evaluation'}: {run.root.resolve().name}",
        subtitle=_subtitle(run),
        headline=heldout_headline(run),
        records=_records(run, shown),
        group_key=run.group_key,
        tables=_tables(run, grouped),
        images=[p for p in images if not p.name.startswith("curve_")],  # the grid holds them all
        note=note,
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return [index, data_file, *images]


def heldout_group(when: str) -> str:
    """The browser's group for a held-out evaluation's rollouts."""
    return f"held-out {when}"


def _records(run: RunData, shown: list[dict]) -> list[dict]:
    """Page records in reading order: held-out before, the sampled steps (or benchmarks), held-out after."""
    records: list[dict] = []

    def add_heldout(when: str) -> None:
        if when in run.heldout:
            records.extend(heldout_record(len(records), row, heldout_group(when), run.max_tool_calls)
                           for row in run.heldout[when].rows)

    add_heldout("before")
    records.extend(sample_record(len(records), row, run.group_key) for row in shown)
    add_heldout("after")
    for i, record in enumerate(records):
        record["i"] = i
    return records


def heldout_headline(run: RunData) -> str:
    """"held-out greedy accuracy 0.188 → 1.000 · code ratio 0.188 → 1.000 (32 questions)", or ""."""
    if not run.heldout:
        return ""
    parts = []
    for key, label in (("accuracy", "held-out greedy accuracy"), ("code_ratio", "code ratio")):
        parts.append(f"{label} " + " → ".join(_fmt(h.summary.get(key)) for h in run.heldout.values()))
    whens = " → ".join(f"{w} training" for w in run.heldout)
    n = next(iter(run.heldout.values())).summary.get("questions")
    return f"{' · '.join(parts)} ({whens}, {n} questions never trained on)"


def _subtitle(run: RunData) -> str:
    if run.kind == "eval" and run.results:
        s = run.results.get("settings", {})
        return (f"model {s.get('model')} · template {s.get('template')} · C = {s.get('max_tool_calls')} · "
                f"{run.results.get('k', 1)} sample(s) per problem · {len(run.samples)} trajectories")
    steps = sorted({r["step"] for r in run.metrics if "step" in r})
    span = f"steps {steps[0]}–{steps[-1]}" if steps else "no logged steps"
    return f"{run.root} · {span} · {len(run.samples)} sampled responses"


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _tables(run: RunData, grouped: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = []
    if run.heldout:
        n = next(iter(run.heldout.values())).summary.get("questions")
        body = [[f"{when} training", _fmt(h.summary.get("accuracy")), _fmt(h.summary.get("code_ratio")),
                 _fmt(h.summary.get("sandbox_errors"))] for when, h in run.heldout.items()]
        tables.append((f"Held-out greedy evaluation ({n} questions never trained on)",
                       ["", "accuracy", "code ratio", "sandbox errors"], body))
    if run.kind == "eval" and run.results:
        for metric in metrics_shown(run.results):
            header, cells = table_rows(run.results, metric)
            tables.append((f"{metric_title(metric, run.results['k'])} (%)", header, [cells]))
    keys = list(grouped)
    if run.kind == "train" and len(keys) > 6:  # first, a few evenly spaced, last
        keys = [keys[round(i * (len(keys) - 1) / 5)] for i in range(6)]
    if keys:
        header = ["metric"] + [f"{run.group_key} {k}" if run.kind == "train" else display_name(str(k)) for k in keys]
        body = [[key] + [_fmt(grouped[k].get(key)) for k in keys] for key in SUMMARY_KEYS]
        tables.append(("Behaviour analytics (torl/metrics/METRICS.md)", header, body))
        tools = sorted({name for k in keys for name in grouped[k] if name.startswith("tools/")})
        if tools:
            tables.append(("Tool calls (torl/tools/metrics.py)", header,
                           [[name] + [_fmt(grouped[k].get(name)) for k in keys] for name in tools]))
    return tables
