"""`torl report`: plots, tables and the HTML trajectory browser for a training run or an eval dir.

The metrics it shows are computed by `torl.metrics` (definitions: torl/metrics/METRICS.md).
"""
