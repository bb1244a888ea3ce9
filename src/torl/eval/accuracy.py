"""Benchmark scores from per-sample correctness: greedy accuracy, avg@k, pass@k.

A sample whose ``correct`` is None was not scored (our sandbox failed, not the model): it is left
out of every score and counted separately, so an infrastructure failure never reads as a wrong
answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def avg_at_k(flags: Sequence[bool]) -> float:
    """Mean accuracy over one problem's samples (avg@k with k = len(flags))."""
    if not flags:
        raise ValueError("avg@k of no samples")
    return sum(flags) / len(flags)


def benchmark_scores(per_problem: Iterable[Sequence[bool | None]], k: int) -> dict:
    """Scores of one benchmark from each problem's sample flags (None = not scored).

    ``accuracy`` (= avg@k): mean over problems of each problem's avg@k over its scored samples.
    ``pass_at_k``: mean over problems having at least k scored samples. Problems with no scored
    sample, and the unscored samples, are counted in ``unscored_problems`` / ``unscored_samples``.
    """
    avgs, passes, unscored_samples, unscored_problems, samples = [], [], 0, 0, 0
    for flags in per_problem:
        scored = [bool(f) for f in flags if f is not None]
        unscored_samples += len(flags) - len(scored)
        samples += len(flags)
        if not scored:
            unscored_problems += 1
            continue
        avgs.append(avg_at_k(scored))
        if len(scored) >= k:
            passes.append(pass_at_k(len(scored), sum(scored), k))
    return {
        "problems": len(avgs) + unscored_problems,
        "samples": samples,
        "k": k,
        "accuracy": sum(avgs) / len(avgs) if avgs else None,
        "pass_at_k": sum(passes) / len(passes) if passes else None,
        "pass_at_k_problems": len(passes),
        "unscored_samples": unscored_samples,
        "unscored_problems": unscored_problems,
    }
