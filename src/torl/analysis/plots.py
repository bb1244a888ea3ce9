"""PNG plots (matplotlib, Agg): ToRL's training curves, behaviour analytics over steps, eval bars."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

# ToRL's curves. Each: (title, y label, metrics.jsonl keys tried in order, analytics key from sample dumps).
TRAINING_CURVES = (
    ("Training accuracy", "accuracy", ("rewards/accuracy",), "accuracy"),
    ("Code ratio", "share of responses with code", ("tools/code_ratio",), "code_ratio"),
    ("Code pass ratio", "share of calls that ran OK", ("tools/pass_ratio",), "pass_ratio"),
    ("Response length", "tokens", ("lengths/model_tokens", "completions/mean_length"), "model_tokens"),
    ("Calls per response", "executed calls", ("tools/calls_per_response",), "calls_per_response"),
)

# Behaviour analytics shown over steps (from sample dumps), grouped by what they describe.
ANALYTICS_PANELS = (
    ("Accuracy with / without code", ("accuracy_with_code", "accuracy_without_code")),
    ("Error recovery", ("error_retry_ratio", "error_recovery_ratio", "error_correct_ratio")),
    ("Cross-checking", ("cross_check_ratio", "cross_check_contradict_ratio", "contradiction_changed_ratio")),
    ("Code around the first answer", ("calls_before_answer", "calls_after_answer", "code_after_answer_ratio")),
    ("Executed vs skipped code", ("calls_per_response", "skipped_ratio", "truncated_ratio")),
)

COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series_from_metrics(metrics: list[dict], keys: tuple[str, ...]) -> tuple[list, list, str | None]:
    """(steps, values, key used) for the first key some metrics row has a number for."""
    for key in keys:
        points = [(row["step"], row[key]) for row in metrics if "step" in row and _finite(row.get(key))]
        if points:
            return [p[0] for p in points], [p[1] for p in points], key
    return [], [], None


def _ema(values: list[float], alpha: float = 0.3) -> list[float]:
    out, level = [], None
    for v in values:
        level = v if level is None else alpha * v + (1 - alpha) * level
        out.append(level)
    return out


def _line(ax, steps, values, color, label=None) -> None:
    ax.plot(steps, values, "o", color=color, alpha=0.35, markersize=3)
    ax.plot(steps, _ema(values) if len(values) > 4 else values, "-", color=color, linewidth=1.8, label=label)


def _style(ax, title: str, ylabel: str, xlabel: str = "training step") -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    if xlabel == "training step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_curves(metrics: list[dict], by_step: dict[int, dict], out_dir: Path) -> list[Path]:
    """One PNG per ToRL curve plus an overview grid. Uses metrics.jsonl, else the sample-dump analytics."""
    written, panels = [], []
    for title, ylabel, keys, analytics_key in TRAINING_CURVES:
        steps, values, source = series_from_metrics(metrics, keys)
        if not steps:
            points = [(s, m[analytics_key]) for s, m in by_step.items() if _finite(m.get(analytics_key))]
            steps, values, source = [p[0] for p in points], [p[1] for p in points], f"samples: {analytics_key}"
        if not steps:
            continue
        panels.append((title, ylabel, steps, values, source))
        fig, ax = plt.subplots(figsize=(6, 3.6))
        _line(ax, steps, values, COLORS[0])
        _style(ax, title, ylabel)
        ax.text(0.99, 0.02, source, transform=ax.transAxes, ha="right", fontsize=7, color="#666")
        written.append(_save(fig, out_dir / f"curve_{_slug(title)}.png"))
    if panels:
        cols = 3
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
        for ax, (title, ylabel, steps, values, _source) in zip(axes.flat, panels):
            _line(ax, steps, values, COLORS[0])
            _style(ax, title, ylabel)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        written.insert(0, _save(fig, out_dir / "curves.png"))
    return written


def analytics_over_steps(by_step: dict[int, dict], out_dir: Path) -> list[Path]:
    """Behaviour analytics per training step (from sample dumps), one grid PNG."""
    if not by_step:
        return []
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.2), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, ANALYTICS_PANELS):
        for key, color in zip(keys, COLORS):
            points = [(s, m[key]) for s, m in by_step.items() if _finite(m.get(key))]
            if points:
                _line(ax, [p[0] for p in points], [p[1] for p in points], color, label=key)
        _style(ax, title, "value")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "nothing to measure yet", ha="center", va="center", transform=ax.transAxes, color="#888")
    for ax in list(axes.flat)[len(ANALYTICS_PANELS):]:
        ax.axis("off")
    return [_save(fig, out_dir / "analytics_over_steps.png")]


def eval_bars(analytics: dict[str, dict], out_dir: Path, display=lambda n: n) -> list[Path]:
    """Per-benchmark bars of accuracy and the main behaviour ratios."""
    if not analytics:
        return []
    keys = ("accuracy", "code_ratio", "pass_ratio", "error_recovery_ratio", "cross_check_ratio")
    names = list(analytics)
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(names) + 3.5), 3.8))
    for i, (key, color) in enumerate(zip(keys, COLORS)):
        values = [analytics[n].get(key) for n in names]
        xs = [j + (i - len(keys) / 2 + 0.5) * width for j in range(len(names))]
        ax.bar(xs, [v if _finite(v) else 0 for v in values], width, color=color, label=key)
    ax.set_xticks(range(len(names)), [display(n) for n in names], fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _style(ax, "Per-benchmark accuracy and tool behaviour", "ratio", xlabel="benchmark")
    return [_save(fig, out_dir / "eval_benchmarks.png")]


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in title.lower()).strip("_")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
