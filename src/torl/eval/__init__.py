"""Benchmark evaluation: greedy accuracy, avg@k, pass@k; resumable runs; ToRL-style tables.

    from torl.eval import EvalConfig, run_eval
    summary = run_eval(EvalConfig(model="smollm2-135m", benchmarks=["math500"], out_dir="out", limit=5))
"""

from torl.eval.accuracy import avg_at_k, benchmark_scores, pass_at_k
from torl.eval.runner import EvalConfig, run_eval

__all__ = ["EvalConfig", "avg_at_k", "benchmark_scores", "pass_at_k", "run_eval"]
