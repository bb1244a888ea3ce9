"""Synthetic tasks: seeded, exact answers (checked independently), difficulty knob."""

import re

import pytest
import sympy

from torl.data.records import DataError
from torl.data.synthetic import TASK_KINDS, generate_tasks


def test_records_are_normalized_unique_and_reproducible():
    tasks = generate_tasks(None, 70, seed=3, difficulty=2)
    assert len(tasks) == 70 and len({t["problem"] for t in tasks}) == 70
    assert {t["subject"] for t in tasks} == set(TASK_KINDS)
    assert all(set(t) == {"id", "problem", "answer", "source", "level", "subject"} and t["level"] == 2 for t in tasks)
    assert generate_tasks(None, 70, seed=3, difficulty=2) == tasks
    assert generate_tasks(None, 10, seed=3, difficulty=2) == tasks[:10]  # prefix-stable
    assert generate_tasks(None, 10, seed=4, difficulty=2) != tasks[:10]


def numbers(text):
    return [int(x) for x in re.findall(r"\d+", text)]


@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_answers_are_exact(difficulty):
    for t in generate_tasks(["arithmetic", "modexp", "modular", "divisors"], 40, seed=1, difficulty=difficulty):
        p, ans = t["problem"], t["answer"]
        if t["subject"] == "arithmetic":
            expr = p.removeprefix("Compute $").removesuffix("$.").replace("\\times", "*")
            assert int(ans) == sympy.sympify(expr)
        elif t["subject"] == "modexp":
            a, e, m = numbers(p)
            assert int(ans) == pow(a, e, m)
        elif t["subject"] == "modular":
            a, c, m = numbers(p)
            x = int(ans)
            assert 0 < x <= m and (a * x - c) % m == 0
        else:
            n = numbers(p)[0]
            want = sympy.divisor_count(n) if "How many" in p else sympy.divisor_sigma(n)
            assert int(ans) == want


def test_mental_factorial_and_binomial_answers():
    for t in generate_tasks("mental", 60, seed=2, difficulty=2):
        a, op, b = re.fullmatch(r"What is (\d+) ([+-]) (\d+)\?", t["problem"]).groups()
        assert a[:-1] == b[:-1] == "" and int(t["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    for t in generate_tasks("factorial", 60, seed=2, difficulty=2):
        a, b = (int(x) for x in re.fullmatch(r"Compute \$\\frac\{(\d+)!\}\{(\d+)!\}\$\.", t["problem"]).groups())
        assert 2 <= a - b <= 3 and int(t["answer"]) == sympy.factorial(a) / sympy.factorial(b)
    for t in generate_tasks("binomial", 60, seed=2, difficulty=2):
        n, k = (int(x) for x in re.fullmatch(r"Compute \$\\binom\{(\d+)\}\{(\d+)\}\$\.", t["problem"]).groups())
        assert 3 <= k <= 6 and 2 * k < n and int(t["answer"]) == sympy.binomial(n, k)


def test_base_conversion_and_series_answers():
    for t in generate_tasks("base_conversion", 10, seed=2, difficulty=3):
        src, dst = (int(x) for x in re.findall(r"base-?(\d+)", t["problem"])[:2])
        digits = re.search(r"\$([0-9A-F]+)_", t["problem"]).group(1)
        assert int(t["answer"], dst) == int(digits, src)
    for t in generate_tasks("series", 9, seed=2, difficulty=2):
        m = re.search(r"\\sum_\{k=1\}\^\{(\d+)\} k\^\{(\d+)\}", t["problem"])
        if m:
            n, p = int(m.group(1)), int(m.group(2))
            k = sympy.Symbol("k")
            assert int(t["answer"]) == sympy.summation(k**p, (k, 1, n))


def test_difficulty_makes_numbers_bigger():
    easy = generate_tasks("arithmetic", 20, seed=0, difficulty=1)
    hard = generate_tasks("arithmetic", 20, seed=0, difficulty=5)
    assert max(len(t["answer"]) for t in easy) < min(len(t["answer"]) for t in hard)


def test_bad_requests():
    with pytest.raises(DataError, match="unknown task kind"):
        generate_tasks("poetry", 3)
    with pytest.raises(DataError, match="difficulty must be 1-5"):
        generate_tasks(None, 3, difficulty=9)
