"""Verifier throughput and worst-case latency: torl's hang-proof pool vs raw math-verify.

    .venv/bin/python bench/verify.py [--limit N] [--deadline S] [--baseline DIR [--rounds R]]

MATH-500 golds are checked against themselves and against a perturbed (wrong) answer, once with
math-verify called directly in this process (parse + verify, its own SIGALRM timeouts), once
with torl's comparison in this process (no deadline), and once through torl's pool (a fresh
worker, result cache off, so every check crosses the process boundary). `overhead_ratio` is
pool / raw math-verify (target <= 1.5); `process_boundary_ratio` is pool / in-process torl, the
price of the deadline alone. Self checks hit torl's identical-string shortcut, so the perturbed
(wrong-answer) set is the fair comparison. Then the pathological set runs
under a deadline and the worst overrun past it is reported. Prints one JSON object.

`--baseline DIR` compares two versions of the verifier in one run: DIR is a copy of an older
`src/torl/reward` (e.g. `cp -r src/torl/reward /tmp/reward_orig` before a change). Each round
measures the baseline and the current tree, each in a fresh process importing its own
`torl.reward`; the best round of each is kept, and `slowdown` is current time / baseline time
per set (target <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "torl" / "bundled_data" / "benchmarks" / "math500.jsonl"  # shipped with torl
PATHOLOGICAL = {
    "tower_5^5^5^5": "5^{5^{5^{5}}}",
    "huge_power_plus_1": "10^{10^{9}}+1",
    "nested_sqrt_400": "\\sqrt{" * 400 + "2" + "}" * 400,
    "nested_parens_5000": "(" * 5000 + "1" + ")" * 5000,
    "latex_60KB": "\\frac{1}{2}+" * 5000 + "1",
    "nested_braces_3000": "{" * 3000 + "1" + "}" * 3000,
    # inputs for the answer-part, piecewise, unit and degree readings
    "boxes_5000": "\\boxed{2}, " * 5000,
    "cases_3000": "\\begin{cases}" * 3000,
    "backslashes_60K": "\\" * 60000 + "x",
    "unit_word_60K": "1 " + "a" * 60000,
    "degrees_in_trig_5000": "\\sin " + "30^\\circ+" * 5000,
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


def measure(limit: int, deadline: float) -> dict:
    from torl.reward import VerifierPool

    golds = [json.loads(line)["answer"] for line in DATA.open()][:limit]
    raw_math_verify([("1", "1")])  # import/grammar load outside the timings
    torl_in_process([("1", "1")])
    report: dict = {"checks": len(golds), "torl_reward": str(Path(sys.modules["torl.reward"].__file__).parent)}
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
        verdict = pool.check("1", answer, timeout_s=deadline)
        took = time.perf_counter() - started
        worst[name] = {"seconds": round(took, 3), "timed_out": verdict.timed_out, "equivalent": verdict.equivalent}
    report["pathological"] = {
        "deadline_s": deadline,
        "cases": worst,
        "max_overrun_ms": round(1000 * max(0.0, max(c["seconds"] for c in worst.values()) - deadline), 1),
    }
    report["targets"] = {
        "overhead_ratio_le_1.5": all(report[k]["overhead_ratio"] <= 1.5 for k in ("self", "perturbed")),
        "overrun_le_100ms": report["pathological"]["max_overrun_ms"] <= 100,
    }
    report["pool_stats"] = dict(pool.stats)
    pool.close()
    return report


def _package_root(reward_dir: Path, into: Path) -> Path:
    """A directory holding `torl/` with `reward_dir` as its `torl.reward` (for PYTHONPATH)."""
    (into / "torl").mkdir(parents=True)
    shutil.copy(REPO / "src" / "torl" / "__init__.py", into / "torl" / "__init__.py")
    shutil.copytree(reward_dir, into / "torl" / "reward", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def _measure_in_subprocess(root: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, __file__, "--limit", str(args.limit), "--deadline", str(args.deadline)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def compare_with_baseline(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"baseline": _package_root(Path(args.baseline), Path(tmp) / "baseline"), "current": REPO / "src"}
        for _ in range(args.rounds):  # interleaved, so load on the machine hits both alike
            for name, root in roots.items():
                runs[name].append(_measure_in_subprocess(root, args))
    best = {name: {s: max(r[s]["torl_checks_per_s"] for r in reports) for s in ("self", "perturbed")}
            for name, reports in runs.items()}
    slowdown = {s: round(best["baseline"][s] / best["current"][s], 3) for s in ("self", "perturbed")}
    return {
        "rounds": args.rounds,
        "best_torl_checks_per_s": best,
        "slowdown": slowdown,
        "within_1.2x": all(v <= 1.2 for v in slowdown.values()),
        "max_overrun_ms": {name: max(r["pathological"]["max_overrun_ms"] for r in reports)
                           for name, reports in runs.items()},
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500, help="number of MATH-500 golds")
    ap.add_argument("--deadline", type=float, default=1.0, help="deadline for the pathological set")
    ap.add_argument("--baseline", metavar="DIR", help="an older copy of src/torl/reward to compare against")
    ap.add_argument("--rounds", type=int, default=2, help="with --baseline: measurements of each version")
    ap.add_argument("--smoke", action="store_true", help="20 golds, one round: checks the bench still runs")
    args = ap.parse_args()
    if args.smoke:
        args.limit, args.rounds = 20, 1
    logging.disable(logging.WARNING)
    report = compare_with_baseline(args) if args.baseline else measure(args.limit, args.deadline)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
