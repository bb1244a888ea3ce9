"""Equivalence checking: agreement on benchmark golds, deadlines on pathological inputs, worker
kill/replace, and thread/asyncio safety (accuracy on the labelled corpora: test_reward_corpus.py)."""

import asyncio
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from torl.reward import (
    VerifierPool,
    can_parse,
    check,
    extract_answer,
    is_equivalent,
    score,
)
from torl.reward.grader_eval import load_corpus

CORPUS = Path(__file__).parent / "data" / "verifier_corpus.jsonl"

# Benchmark golds our verifier cannot parse into math, a choice letter or text. Each one is
# named; a new failure must be looked at, not absorbed. (Measured with a generous deadline.)
UNPARSEABLE_BUDGET = {
    "aime24": 0, "amc23": 0, "gsm8k": 0, "math500": 0,
    # 'np.arcsin(10/13)' (Python, not LaTeX), '\frac{dM}{dt}=... M_{\odot}...', 'E_{1},E_{2}'
    "minerva_math": 3,
    # 'm_{\max }=n^{2}-n-1' (\max in a subscript), 't(0,4]' (malformed interval)
    "olympiadbench": 2,
}


@pytest.mark.parametrize("name", sorted(UNPARSEABLE_BUDGET))
def test_benchmark_golds_agree_with_themselves(shipped_data, name):
    lines = (shipped_data / "benchmarks" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    golds = [json.loads(line)["answer"] for line in lines if line.strip()]
    with ThreadPoolExecutor(4) as ex:
        agree = list(ex.map(lambda g: score("\\boxed{" + g + "}", g, timeout_s=30).correct, golds))
        parses = list(ex.map(lambda g: can_parse(g, timeout_s=30), golds))
    disagree = [g for g, ok in zip(golds, agree) if not ok]
    unparseable = [g for g, ok in zip(golds, parses) if not ok]
    print(f"\n{name}: {len(golds)} golds, {len(disagree)} disagree, {len(unparseable)} unparseable")
    assert disagree == []
    assert len(unparseable) <= UNPARSEABLE_BUDGET[name], unparseable


PATHOLOGICAL = [
    "5^{5^{5^{5}}}",
    "10^{10^{9}}+1",
    "\\sqrt{" * 400 + "2" + "}" * 400,
    "(" * 5000 + "1" + ")" * 5000,
    "\\frac{1}{2}+" * 5000 + "1",  # ~60 KB of LaTeX
]


def test_pathological_inputs_time_out_within_the_deadline():
    deadline = 1.0
    check("1", "1")  # workers warm
    for answer in PATHOLOGICAL:
        started = time.monotonic()
        verdict = check("1", answer, timeout_s=deadline)
        took = time.monotonic() - started
        assert not verdict.equivalent
        assert verdict.timed_out, (answer[:30], verdict)
        assert took < deadline + 5.0  # generous slack for a loaded CI box; bench/ measures it tightly
    assert is_equivalent("\\frac{1}{2}", "0.5")  # pool still serves normal checks


# Inputs aimed at the answer-part, piecewise, unit and degree readings (bench/verify.py has them
# too): each must come back within the deadline, whether it times out or not.
READING_STRESS = [
    "\\boxed{2}, " * 5000,
    "\\begin{cases}" * 3000,
    "\\" * 60000 + "x",
    "1 " + "a" * 60000,
    "\\sin " + "30^\\circ+" * 5000,
]


def test_reading_stress_inputs_return_within_the_deadline():
    deadline = 1.0
    check("1", "1")
    for answer in READING_STRESS:
        started = time.monotonic()
        verdict = check("1", answer, timeout_s=deadline)
        assert not verdict.equivalent, answer[:30]
        assert time.monotonic() - started < deadline + 5.0


def test_worker_wedged_in_c_is_killed_and_replaced():
    # SIGSTOP freezes the worker like a sympy call stuck in C code: no signal handler can run.
    pool = VerifierPool(workers=1)
    try:
        assert pool.check("2", "2.0").equivalent
        (worker,) = pool._all
        os.kill(worker.proc.pid, signal.SIGSTOP)
        verdict = pool.check("3", "3.0", timeout_s=0.5)
        assert verdict.timed_out and "worker killed" in verdict.reason
        assert pool.check("3", "3.0").equivalent  # a fresh worker took over
        assert pool.stats["restarts"] == 1
    finally:
        pool.close()


def test_crashed_worker_is_retried_on_a_fresh_one():
    pool = VerifierPool(workers=1)
    try:
        assert pool.check("1", "1").equivalent
        (worker,) = pool._all
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        verdict = pool.check("x+1", "1+x")
        assert verdict.equivalent and not verdict.timed_out
        assert pool.stats["crashes"] == 1
    finally:
        pool.close()


def test_timeouts_are_not_cached_but_verdicts_are():
    pool = VerifierPool(workers=1)
    try:
        pool.check("1", "2")
        pool.check("1", "2")
        assert pool.stats["cache_hits"] == 1
        pool.check("1", "5^{5^{5^{5}}}", timeout_s=0.5)
        pool.check("1", "5^{5^{5^{5}}}", timeout_s=0.5)
        assert pool.stats["timeouts"] == 2
    finally:
        pool.close()


def test_threads_and_asyncio_agree_with_serial():
    rows = load_corpus(CORPUS)[:60]
    pairs = [(r["gold"], extract_answer(r["response"]) or "") for r in rows]
    pool = VerifierPool(workers=2, cache_size=0)  # no cache: every call really runs
    try:
        serial = [pool.check(g, p).equivalent for g, p in pairs]
        with ThreadPoolExecutor(8) as ex:
            threaded = list(ex.map(lambda gp: pool.check(*gp).equivalent, pairs))

        async def from_loop():
            return [v.equivalent for v in await asyncio.gather(*(pool.acheck(g, p) for g, p in pairs))]

        assert threaded == serial
        assert asyncio.run(from_loop()) == serial
    finally:
        pool.close()


def test_closed_pool_refuses_clearly():
    pool = VerifierPool(workers=1)
    pool.close()
    with pytest.raises(Exception, match="closed"):
        pool.check("1", "1")


@pytest.mark.parametrize("gold, pred, expected", [
    ("50464", r"608 \times 83", False),  # the question's own expression: the reward hack RL found on products
    ("7", "3+4", False),
    ("1024", "2^{10}", False),
    ("2", "4/2", False),
    ("54834", r"\frac{39!}{36!}", False),  # the hack RL without tools found on factorial quotients
    ("120", "5!", False),
    ("125970", r"\binom{20}{8}", False),  # the same hack on binomials
    ("125970", r"\dbinom{20}{8}", False),
    ("6", r"\gcd(12, 18)", False),
    ("50464", "50464", True),
    ("50000", r"5 \times 10^{4}", True),  # scientific notation is a number
    ("45", r"45^\circ", True),
    ("0.5", r"\frac{1}{2}", True),
    ("5", "-(-5)", True),  # signs are not operations
])
def test_a_numeric_gold_wants_the_number_not_an_expression_for_it(gold, pred, expected):
    verdict = check(gold, pred)
    assert verdict.equivalent is expected, verdict
    if not expected:
        assert verdict.reason == "unevaluated arithmetic: the answer must be the number"


def test_the_hack_gets_no_reward_from_a_whole_response():
    from torl.reward import score

    hacked = score("Compute $608 \\times 83$.\nThe answer is $\\boxed{608 \\times 83}$.", "50464")
    honest = score("The answer is $\\boxed{50464}$.", "50464")
    assert (hacked.correct, hacked.reward) == (False, -1.0) and (honest.correct, honest.reward) == (True, 1.0)
