"""avg@k / pass@k against hand-computed values."""

import math

import pytest

from torl.eval.accuracy import avg_at_k, benchmark_scores, pass_at_k


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 3, 1 - 1 / 10),      # 1 - C(3,3)/C(5,3)
        (5, 2, 1, 2 / 5),           # pass@1 = c/n
        (4, 0, 2, 0.0),
        (10, 8, 3, 1.0),            # n - c < k: every 3-subset holds a correct sample
        (6, 1, 2, 1 - 10 / 15),     # 1 - C(5,2)/C(6,2)
        (8, 3, 4, 1 - 5 / 70),      # 1 - C(5,4)/C(8,4)
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_is_stable_for_large_n():
    n, c, k = 2000, 7, 64
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_k():
    assert avg_at_k([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        avg_at_k([])


def test_benchmark_scores_hand_computed():
    # problem 1: 2/4 correct, problem 2: 0/4, problem 3: 4/4
    s = benchmark_scores([[True, False, True, False], [False] * 4, [True] * 4], k=4)
    assert s["accuracy"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert s["pass_at_k"] == pytest.approx((1 + 0 + 1) / 3)
    assert s["problems"] == 3 and s["samples"] == 12 and s["unscored_samples"] == 0


def test_unscored_samples_are_excluded_and_counted():
    # problem 2 lost one sample to a sandbox failure: avg over its 2 scored, no pass@3 for it
    s = benchmark_scores([[True, False, False], [True, None, False], [None, None, None]], k=3)
    assert s["accuracy"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert s["pass_at_k"] == pytest.approx(1.0) and s["pass_at_k_problems"] == 1
    assert s["unscored_samples"] == 4 and s["unscored_problems"] == 1 and s["problems"] == 3


def test_greedy_accuracy_is_plain_mean():
    s = benchmark_scores([[True], [False], [True], [True]], k=1)
    assert s["accuracy"] == 0.75 and s["pass_at_k"] == 0.75
