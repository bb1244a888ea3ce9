"""PNG plots (matplotlib, Agg): ToRL's training curves, the optimizer's and health curves, behaviour
analytics over steps, the held-out before/after evaluation, eval bars.

Every panel of a training run spans the run's whole step range, so a metric measured at one step
shows where in the run it was; a ratio is drawn on [0, 1]; a lone point is drawn solid and labelled.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

# Training curves. Each: (title, y label, metrics.jsonl keys tried in order, analytics key from sample
# dumps or None, drawn on [0, 1]). ToRL's five first, then the optimizer's.
TRAINING_CURVES = (
    ("Training accuracy", "accuracy", ("rewards/accuracy",), "accuracy", True),
    ("Code ratio", "share of responses with code", ("tools/code_ratio",), "code_ratio", True),
    ("Code pass ratio", "share of calls that ran OK", ("tools/pass_ratio",), "pass_ratio", True),
    ("Response length", "tokens", ("lengths/model_tokens", "completions/mean_length"), "model_tokens", False),
    ("Calls per response", "executed calls", ("tools/calls_per_response",), "calls_per_response", False),
    ("Reward", "mean reward (band: ± std)", ("reward", "rewards/torl_reward/mean"), None, False),
    ("Loss", "loss", ("loss",), None, False),
    ("Entropy", "mean entropy per model token", ("entropy",), None, False),
    ("Gradient norm", "grad norm", ("grad_norm",), None, False),
)
REWARD_STD_KEYS = {"reward": "reward_std", "rewards/torl_reward/mean": "rewards/torl_reward/std"}

# Health ratios (torl.metrics.health) and the alarm columns' prefix (torl.metrics.alarms).
HEALTH_RATIOS = ("health/void_turn_ratio", "health/degenerate_ratio", "health/repeated_code_ratio",
                 "health/ignored_observation_ratio", "health/no_boxed_ratio")
ALARM_PREFIX = "health/alarm_"

# Behaviour analytics shown over steps (from sample dumps), grouped by what they describe; ratios on [0, 1].
ANALYTICS_PANELS = (
    ("Accuracy with / without code", ("accuracy_with_code", "accuracy_without_code"), True),
    ("Error recovery", ("error_retry_ratio", "error_recovery_ratio", "error_correct_ratio"), True),
    ("Cross-checking", ("cross_check_ratio", "cross_check_contradict_ratio", "contradiction_changed_ratio"), True),
    ("Code around the first answer", ("calls_before_answer", "calls_after_answer", "code_after_answer_ratio"), False),
    ("Executed vs skipped code", ("calls_per_response", "skipped_ratio", "truncated_ratio"), False),
)

COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df")
BEFORE_COLOR, AFTER_COLOR = "#8c959f", "#1f6feb"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series_from_metrics(metrics: list[dict], keys: tuple[str, ...]) -> tuple[list, list, str | None]:
    """(steps, values, key used) for the first key some metrics row has a number for."""
    for key in keys:
        points = [(row["step"], row[key]) for row in metrics if "step" in row and _finite(row.get(key))]
        if points:
            return [p[0] for p in points], [p[1] for p in points], key
    return [], [], None


def step_range(metrics: list[dict], by_step: dict) -> tuple[float, float] | None:
    """First and last step the run logged or dumped samples for; None when there is none."""
    steps = [row["step"] for row in metrics if _finite(row.get("step"))] + [s for s in by_step if _finite(s)]
    return (min(steps), max(steps)) if steps else None


def _ema(values: list[float], alpha: float = 0.3) -> list[float]:
    out, level = [], None
    for v in values:
        level = v if level is None else alpha * v + (1 - alpha) * level
        out.append(level)
    return out


MARKERS = ("o", "s", "^", "D", "v")
DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))


def _line(ax, steps, values, color, label=None, series: int = 0, span: tuple[float, float] | None = None) -> None:
    """One series; `series` (its index in the panel) varies marker, size and dashes, so series that
    coincide (several ratios all 0 at one step) stay visible under each other. A lone point gets its
    value written beside it (left of it in the right half of `span`, so it stays inside the panel)."""
    marker, dashes = MARKERS[series % len(MARKERS)], DASHES[series % len(DASHES)]
    if len(values) <= 2:  # too few to smooth: the points themselves, solid
        ax.plot(steps, values, marker=marker, linestyle=dashes, color=color, markersize=8 - 1.5 * min(series, 3),
                linewidth=1.5, label=label)
        if len(values) == 1:
            left = span is not None and steps[0] > (span[0] + span[1]) / 2
            ax.annotate(f"{values[0]:.3g}", (steps[0], values[0]), textcoords="offset points",
                        xytext=(-9 if left else 9, -10 * series), ha="right" if left else "left", va="center",
                        fontsize=8, color=color)
        return
    ax.plot(steps, values, marker, color=color, alpha=0.35, markersize=3)
    ax.plot(steps, _ema(values) if len(values) > 4 else values, linestyle=dashes, color=color, linewidth=1.8, label=label)


def _limits(ax, values: list[float], ratio: bool, steps: tuple[float, float] | None) -> None:
    """Axes a person can read: the run's step range, [0, 1] for ratios, zero in view for a flat series."""
    if steps is not None:
        lo, hi = steps
        pad = max(0.5, 0.04 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)
    if ratio:
        ax.set_ylim(-0.04, 1.04)
    elif values:
        lo, hi = min(values), max(values)
        if hi - lo <= 1e-9 * max(1.0, abs(hi)):  # matplotlib would zoom into v ± 5 %: show it against zero
            lo, hi = min(0.0, lo), max(0.0, hi)
            if hi == lo:
                hi = 1.0
            pad = 0.1 * (hi - lo)
            ax.set_ylim(lo - pad, hi + pad)


def _style(ax, title: str, ylabel: str, xlabel: str = "training step") -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    if xlabel == "training step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _nothing(ax, text: str = "nothing to measure yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888")


def _draw_curve(ax, metrics, title, ylabel, steps, values, source, ratio, span) -> None:
    std_key = REWARD_STD_KEYS.get(source)
    if std_key and len(values) > 1:
        std = {row["step"]: row[std_key] for row in metrics if "step" in row and _finite(row.get(std_key))}
        if len(std) == len(steps) and all(s in std for s in steps):
            ax.fill_between(steps, [v - std[s] for s, v in zip(steps, values)],
                            [v + std[s] for s, v in zip(steps, values)], color=COLORS[0], alpha=0.12, linewidth=0)
    _line(ax, steps, values, COLORS[0], span=span)
    _style(ax, title, ylabel)
    _limits(ax, values, ratio, span)


def training_curves(metrics: list[dict], by_step: dict[int, dict], out_dir: Path) -> list[Path]:
    """One PNG per training curve plus an overview grid. Uses metrics.jsonl, else the sample-dump analytics."""
    written, panels = [], []
    span = step_range(metrics, by_step)
    for title, ylabel, keys, analytics_key, ratio in TRAINING_CURVES:
        steps, values, source = series_from_metrics(metrics, keys)
        if not steps and analytics_key:
            points = [(s, m[analytics_key]) for s, m in by_step.items() if _finite(m.get(analytics_key))]
            steps, values, source = [p[0] for p in points], [p[1] for p in points], f"samples: {analytics_key}"
        if not steps:
            continue
        panels.append((title, ylabel, steps, values, source, ratio))
        fig, ax = plt.subplots(figsize=(6, 3.6))
        _draw_curve(ax, metrics, title, ylabel, steps, values, source, ratio, span)
        ax.text(0.99, 0.02, source, transform=ax.transAxes, ha="right", fontsize=7, color="#666")
        written.append(_save(fig, out_dir / f"curve_{_slug(title)}.png"))
    if panels:
        cols = 3
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
        for ax, (title, ylabel, steps, values, source, ratio) in zip(axes.flat, panels):
            _draw_curve(ax, metrics, title, ylabel, steps, values, source, ratio, span)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        written.insert(0, _save(fig, out_dir / "curves.png"))
    return written


def health_curves(metrics: list[dict], out_dir: Path) -> list[Path]:
    """Health ratios over steps and the steps each alarm held (metrics.jsonl), one PNG; none without health columns."""
    ratios = [(key, *series_from_metrics(metrics, (key,))[:2]) for key in HEALTH_RATIOS]
    ratios = [r for r in ratios if r[1]]
    alarms = sorted({k for row in metrics for k in row if k.startswith(ALARM_PREFIX)})
    if not ratios and not alarms:
        return []
    span = step_range(metrics, {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for series, ((key, steps, values), color) in enumerate(zip(ratios, COLORS)):
        _line(left, steps, values, color, label=key.removeprefix("health/"), series=series, span=span)
    _style(left, "Health ratios (torl/metrics/METRICS.md)", "share")
    _limits(left, [], True, span)
    if ratios:
        left.legend(fontsize=7, loc="best")
    else:
        _nothing(left, "health checks off (health_checks: false)")
    fired_any = False
    for row_index, key in enumerate(alarms):
        fired = [row["step"] for row in metrics if "step" in row and _finite(row.get(key)) and row[key] >= 1]
        fired_any = fired_any or bool(fired)
        right.plot(fired, [row_index] * len(fired), "s", color=COLORS[1], markersize=8)
    right.set_yticks(range(len(alarms)), [a.removeprefix(ALARM_PREFIX) for a in alarms], fontsize=8)
    right.set_ylim(-0.7, max(len(alarms), 1) - 0.3)
    _style(right, "Health alarms (a square: the alarm held at that step)", "")
    _limits(right, [], False, span)
    if not alarms:
        _nothing(right, "no alarm columns in metrics.jsonl")
    elif not fired_any:
        right.text(0.5, 0.5, "no alarm fired", ha="center", va="center", transform=right.transAxes,
                   color=COLORS[2], fontsize=11, fontweight="bold")
    return [_save(fig, out_dir / "health_over_steps.png")]


def analytics_over_steps(by_step: dict[int, dict], out_dir: Path, span: tuple[float, float] | None = None) -> list[Path]:
    """Behaviour analytics per training step (from sample dumps), one grid PNG."""
    if not by_step:
        return []
    span = span or step_range([], by_step)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.2), squeeze=False)
    for ax, (title, keys, ratio) in zip(axes.flat, ANALYTICS_PANELS):
        drawn = []
        for series, (key, color) in enumerate(zip(keys, COLORS)):
            points = [(s, m[key]) for s, m in by_step.items() if _finite(m.get(key))]
            if points:
                _line(ax, [p[0] for p in points], [p[1] for p in points], color, label=key, series=series, span=span)
                drawn += [p[1] for p in points]
        _style(ax, title, "share" if ratio else "value")
        _limits(ax, drawn, ratio, span)
        if drawn:
            ax.legend(fontsize=7, loc="best")
        else:
            _nothing(ax)
    for ax in list(axes.flat)[len(ANALYTICS_PANELS):]:
        ax.axis("off")
    return [_save(fig, out_dir / "analytics_over_steps.png")]


def heldout_bars(summaries: dict[str, dict], out_dir: Path) -> list[Path]:
    """The held-out greedy evaluation before and after training: accuracy and code ratio, values written on the bars."""
    if not summaries:
        return []
    keys = (("accuracy", "accuracy"), ("code_ratio", "code ratio"))
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    width = 0.36
    colors = {"before": BEFORE_COLOR, "after": AFTER_COLOR}
    for i, (when, summary) in enumerate(summaries.items()):
        xs = [j + (i - (len(summaries) - 1) / 2) * width for j in range(len(keys))]
        values = [summary.get(key) for key, _ in keys]
        bars = ax.bar(xs, [v if _finite(v) else 0 for v in values], width, color=colors.get(when, COLORS[2]),
                      label=f"{when} training")
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if not _finite(v) else f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        textcoords="offset points", xytext=(0, 3), ha="center", fontsize=9, fontweight="bold")
    ax.set_xticks(range(len(keys)), [label for _, label in keys], fontsize=10)
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=8, loc="upper center", ncol=len(summaries), frameon=False)
    n = next(iter(summaries.values())).get("questions")
    _style(ax, f"Held-out greedy evaluation ({n} questions never trained on)", "share", xlabel="")
    return [_save(fig, out_dir / "heldout_before_after.png")]


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
