"""Behaviour analytics over tool-integrated trajectories, plots and the trajectory viewer.

    from torl.analysis import behaviour_metrics, metrics_by
    metrics_by(rows, key=lambda r: r["step"])      # rows: sample-dump / eval rows

Metric definitions: METRICS.md in this folder.
"""

from torl.analysis.behaviour import behaviour_metrics, metrics_by

__all__ = ["behaviour_metrics", "metrics_by"]
