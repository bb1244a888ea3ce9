"""Metric definitions that training, evaluation and reports all compute: one function per metric.

    from torl.metrics import behaviour_metrics, metrics_by
    metrics_by(rows, key=lambda r: r["step"])      # rows: sample-dump / eval rows

Modules: `behaviour` (tool use, errors, cross-checks over a group of responses), `health`
(degenerate trajectories: void turns, repeated code, ignored observations), `alarms` (run-health
alarms over a run's per-step rows), `values` (boxed contents and "same value"). Every metric is
defined in METRICS.md (same folder). Pure functions over trajectory dicts: this package imports
nothing from train, eval or the report.
"""

from torl.metrics.behaviour import behaviour_metrics, metrics_by

__all__ = ["behaviour_metrics", "metrics_by"]
