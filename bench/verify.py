"""Verifier throughput and worst-case latency: torl's hang-proof pool vs raw math-verify.

    .venv/bin/python bench/verify.py [--limit N] [--deadline S]

MATH-500 golds are checked against themselves and against a perturbed (wrong) answer, once with
math-verify called directly in this process (parse + verify, its own SIGALRM timeouts), once
with torl's comparison in this process (no deadline), and once through torl's pool (a fresh
worker, result cache off, so every check crosses the process boundary). `overhead_ratio` is
pool / raw math-verify (target <= 1.5); `process_boundary_ratio` is pool / in-process torl, the
price of the deadline alone. Self checks hit torl's identical-string shortcut, so the perturbed
(wrong-answer) set is the fair comparison. Then the pathological set runs
under a deadline and the worst overrun past it is reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks" / "math500.jsonl"
PATHOLOGICAL = {
    "tower_5^5^5^5": "5^{5^{5^{5}}}",
    "huge_power_plus_1": "10^{10^{9}}+1",
    "nested_sqrt_400": "\\sqrt{" * 400 + "2" + "}" * 400,
    "nested_parens_5000": "(" * 5000 + "1" + ")" * 5000,
    "latex_60KB": "\\frac{1}{2}+" * 5000 + "1",
    "nested_braces_3000": "{" * 3000 + "1" + "}" * 3000,
}


def perturb(gold: str) -> str:
    return str(int(gold) + 1) if gold.lstrip("-").isdigit() else f"{gold}+1"


def raw_math_verify(pairs) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    started = time.perf_counter()
    out = [bool(verify(parse("\\boxed{" + g + "}"), parse("\\boxed{" + p + "}"))) for g, p in pairs]
    return time.perf_counter() - started, out


def torl_in_process(pairs) -> tuple[float, list[bool]]:
    """The same comparison without the process boundary or deadline (what hang-proofing costs)."""
    from torl.reward.equivalence import compare, parse_answer

    parse_answer.cache_clear()
    started = time.perf_counter()
    out = [compare(g, p).equivalent for g, p in pairs]
    return time.perf_counter() - started, out


def torl_pool(pool, pairs) -> tuple[float, list[bool]]:
    started = time.perf_counter()
    out = [pool.check(g, p, timeout_s=5.0).equivalent for g, p in pairs]
    return time.perf_counter() - started, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500, help="number of MATH-500 golds")
    ap.add_argument("--deadline", type=float, default=1.0, help="deadline for the pathological set")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from torl.reward import VerifierPool

    golds = [json.loads(line)["answer"] for line in DATA.open()][: args.limit]
    raw_math_verify([("1", "1")])  # import/grammar load outside the timings
    torl_in_process([("1", "1")])
    report: dict = {"checks": len(golds)}
    for name, pairs in (("self", [(g, g) for g in golds]), ("perturbed", [(g, perturb(g)) for g in golds])):
        pool = VerifierPool(workers=1, cache_size=0)  # fresh worker: no parses cached from the other set
        pool.check("1", "1")  # start the worker outside the timings
        raw_s, raw_out = raw_math_verify(pairs)
        local_s, _ = torl_in_process(pairs)
        torl_s, torl_out = torl_pool(pool, pairs)
        pool.close()
        report[name] = {
            "raw_math_verify_checks_per_s": round(len(pairs) / raw_s, 1),
            "torl_in_process_checks_per_s": round(len(pairs) / local_s, 1),
            "torl_checks_per_s": round(len(pairs) / torl_s, 1),
            "overhead_ratio": round(torl_s / raw_s, 3),  # target <= 1.5
            "process_boundary_ratio": round(torl_s / local_s, 3),
            "raw_accepts": sum(raw_out), "torl_accepts": sum(torl_out),
        }
    pool = VerifierPool(workers=1, cache_size=0)
    pool.check("1", "1")

    worst = {}
    for name, answer in PATHOLOGICAL.items():
        started = time.perf_counter()
        verdict = pool.check("1", answer, timeout_s=args.deadline)
        took = time.perf_counter() - started
        worst[name] = {"seconds": round(took, 3), "timed_out": verdict.timed_out, "equivalent": verdict.equivalent}
    report["pathological"] = {
        "deadline_s": args.deadline,
        "cases": worst,
        "max_overrun_ms": round(1000 * max(0.0, max(c["seconds"] for c in worst.values()) - args.deadline), 1),
    }
    report["targets"] = {
        "overhead_ratio_le_1.5": all(report[k]["overhead_ratio"] <= 1.5 for k in ("self", "perturbed")),
        "overrun_le_100ms": report["pathological"]["max_overrun_ms"] <= 100,
    }
    report["pool_stats"] = dict(pool.stats)
    pool.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
