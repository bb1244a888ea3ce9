"""Sandbox speed: torl's isolated LocalSandbox vs a fresh interpreter per call vs an unisolated warm pool.

    .venv/bin/python bench/sandbox.py [--quick | --smoke]
    .venv/bin/python bench/sandbox.py --baseline DIR [--smoke]

With --baseline, DIR is an older copy of the sandbox (a `src` root holding torl/sandbox, or the
sandbox package itself, e.g. from `git archive main src | tar -x -C DIR`): this tree's sandbox and
that one are measured side by side in one run: each in a child process of its own, driven call by
call in alternation so both see the same load, and the ratios new/old of the medians are printed (the hardening must stay within 1.2x). --smoke: a few calls of
each kind, to check in CI that the bench still runs (about a minute; no timing claims).

(a) torl LocalSandbox, isolation on (bwrap + forks of a warm zygote)
(b) subprocess.run([sys.executable, "-c", code]) per call (cold interpreter, no isolation)
(c) a warm multiprocessing pool running exec() with pre-imported numpy/sympy, no isolation
    (the ToRA / Qwen-Math evaluator style)

Prints JSON: p50/p99 latency per snippet kind (one caller, sequential) and executions/s for a
concurrent mix, plus ratios. Targets: (a) trivial p50 <= 15 ms; (a) throughput >= 20x (b);
(a) trivial p50 <= 3x (c).

Fairness: every backend is warmed up on every snippet kind first; (a) and (c) latencies are
measured interleaved, call by call, so both see the same machine load; throughput rounds
alternate a, c, a, c and each backend keeps its better round. The machine's load average is
reported before and after, since on a shared machine it moves every number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
if "--serve-calls" not in sys.argv:  # a --baseline child gets its tree on PYTHONPATH from the parent
    sys.path.insert(0, HERE_SRC)

from torl.sandbox import LocalSandbox, SandboxConfig

TIMEOUT_S = 1.0
SNIPPETS = {
    "trivial": "print(1 + 1)",
    "math": "import sympy, numpy as np\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 5*x + 6, x), "
            "np.linalg.det(np.array([[2.0, 1.0], [1.0, 3.0]])))",
    "error": "def f(n):\n    return 1 / n\nf(0)",
    "timeout": "while True:\n    pass",
}


def _timeout_for(code: str) -> float:
    """The looping snippet gets TIMEOUT_S; the others a generous limit (a cold sympy import is slow)."""
    return TIMEOUT_S if code == SNIPPETS["timeout"] else 30.0


# ---------------------------------------------------------------- (c) the unisolated warm pool

def _pool_init() -> None:
    import numpy  # noqa: F401
    import sympy  # noqa: F401


def _alarm(signum, frame):
    raise TimeoutError("timeout")


def _pool_exec(code: str) -> tuple[str, str]:
    out = io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, _timeout_for(code))
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<code>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the unisolated pool under comparison
        return "ok", out.getvalue()
    except TimeoutError:
        return "timeout", out.getvalue()
    except Exception as e:  # noqa: BLE001
        return "error", f"{type(e).__name__}: {e}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# ---------------------------------------------------------------- the three backends behind one call

def run_subprocess(code: str) -> str:
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=_timeout_for(code), check=False)
        return "ok" if proc.returncode == 0 else "error"
    except subprocess.TimeoutExpired:
        return "timeout"


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentiles(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"p50_ms": round(1000 * statistics.median(s), 2),
            "p99_ms": round(1000 * s[min(len(s) - 1, int(0.99 * len(s)))], 2), "n": len(s)}


async def _settled(sb: LocalSandbox) -> None:
    """Wait until no worker is still cleaning up after a run (older sandboxes clean up before answering)."""
    if hasattr(sb, "wait_idle"):
        await sb.wait_idle()


def _check(kind: str, status: str) -> None:
    expected = {"trivial": "ok", "math": "ok", "error": "error", "timeout": "timeout"}[kind]
    assert status == expected, f"{kind} snippet gave {status}, expected {expected}"


async def bench_torl_and_pool(sb: LocalSandbox, pool, counts: dict, mix: list[str], workers: int,
                              warmup: int) -> tuple[dict, dict]:
    """(a) and (c): latencies interleaved call by call, then alternating throughput rounds."""
    async def torl_call(code: str) -> str:
        return (await sb.run(code, timeout=_timeout_for(code))).status.value

    def pool_call(code: str) -> str:
        return pool.apply(_pool_exec, (code,))[0]

    for kind, code in SNIPPETS.items():  # warm-up: every worker, every kind (not timed)
        for _ in range(warmup if kind != "timeout" else 0):
            await torl_call(code)
            pool_call(code)
    await _settled(sb)
    times: dict[str, dict[str, list[float]]] = {"a": {}, "c": {}}
    for kind, code in SNIPPETS.items():
        a_times, c_times = times["a"].setdefault(kind, []), times["c"].setdefault(kind, [])
        for _ in range(counts[kind]):
            t = time.perf_counter()
            status = await torl_call(code)
            a_times.append(time.perf_counter() - t)
            _check(kind, status)
            await _settled(sb)  # (a)'s background cleanup must not eat (c)'s CPU
            t = time.perf_counter()
            status = pool_call(code)
            c_times.append(time.perf_counter() - t)
            _check(kind, status)
    throughput: dict[str, float] = {"a": 0.0, "c": 0.0}
    with ThreadPoolExecutor(workers) as threads:
        for _ in range(2):
            await _settled(sb)
            t = time.perf_counter()
            results = await asyncio.gather(*(sb.run(c, timeout=_timeout_for(c)) for c in mix))
            throughput["a"] = max(throughput["a"], len(mix) / (time.perf_counter() - t))
            assert all(r.status.value in ("ok", "error") for r in results)
            await _settled(sb)
            t = time.perf_counter()
            list(threads.map(pool_call, mix))
            throughput["c"] = max(throughput["c"], len(mix) / (time.perf_counter() - t))
    return tuple({"latency": {k: percentiles(v) for k, v in times[x].items()},  # type: ignore[return-value]
                  "throughput_per_s": round(throughput[x], 1)} for x in ("a", "c"))


async def bench_warm(counts: dict, mix: list[str], workers: int, warmup: int) -> tuple[dict, dict]:
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers, initializer=_pool_init) as pool:
        pool.map(_pool_exec, ["print(0)"] * workers * 2)
        async with LocalSandbox(SandboxConfig(workers=workers)) as sb:
            await sb.start()
            return await bench_torl_and_pool(sb, pool, counts, mix, workers, warmup)


def bench_sync(call, counts: dict, mix: list[str], workers: int) -> dict:
    latency = {}
    for kind, code in SNIPPETS.items():
        times = []
        for _ in range(counts[kind]):
            t = time.perf_counter()
            call(code)
            times.append(time.perf_counter() - t)
        latency[kind] = percentiles(times)
    with ThreadPoolExecutor(workers) as pool:
        t = time.perf_counter()
        list(pool.map(call, mix))
        elapsed = time.perf_counter() - t
    return {"latency": latency, "throughput_per_s": round(len(mix) / elapsed, 1)}


# ---------------------------------------------------------------- this tree vs a baseline copy
#
# Each tree's sandbox lives in a child process of its own (two versions of torl.sandbox cannot
# share one interpreter). The parent drives both call by call, alternating which goes first, so
# every pair of samples sees the same machine load; ratios are of the medians.

SESSION_BLOCK = "x = globals().get('x', 0) + 1\nprint(x)"
MIX_CYCLE = ["trivial", "trivial", "math", "error"]


async def serve_calls(workers: int, mix_size: int) -> None:
    """Child side: start a LocalSandbox, then answer one JSON command per stdin line."""
    loop = asyncio.get_running_loop()
    t = time.perf_counter()
    async with LocalSandbox(SandboxConfig(workers=workers, max_sessions=1)) as sb:
        await sb.start()
        start_s = time.perf_counter() - t
        for kind, code in SNIPPETS.items():  # warm-up, not timed
            for _ in range(workers if kind != "timeout" else 0):
                await sb.run(code, timeout=_timeout_for(code))
        session = await sb.open_session()
        mix = [SNIPPETS[MIX_CYCLE[i % 4]] for i in range(mix_size)]
        print(json.dumps({"start_s": start_s}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            op = json.loads(line)["op"]
            await _settled(sb)
            t = time.perf_counter()
            if op == "throughput":
                results = await asyncio.gather(*(sb.run(c, timeout=_timeout_for(c)) for c in mix))
                assert all(r.status.value in ("ok", "error") for r in results), [r.status for r in results]
                print(json.dumps({"value": len(mix) / (time.perf_counter() - t)}), flush=True)
                continue
            if op == "session_block":
                status = (await sb.run(SESSION_BLOCK, session=session)).status.value
                assert status == "ok", status
            else:
                status = (await sb.run(SNIPPETS[op], timeout=_timeout_for(SNIPPETS[op]))).status.value
                _check(op, status)
            print(json.dumps({"value": time.perf_counter() - t}), flush=True)


class _Child:
    def __init__(self, src: str, args: argparse.Namespace, mix_size: int) -> None:
        env = {**os.environ, "PYTHONPATH": src}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-calls", "--workers", str(args.workers),
             "--mix-size", str(mix_size)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.start_s = self._answer()["start_s"]

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a measuring child (PYTHONPATH={self.proc.args}) died; see its stderr above")
        return json.loads(line)

    def call(self, op: str) -> float:
        self.proc.stdin.write(json.dumps({"op": op}) + "\n")
        self.proc.stdin.flush()
        return self._answer()["value"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def _is_sandbox_package(p: Path) -> bool:
    """Either layout: worker.py at the top (before the wings) or in the local wing."""
    return (p / "worker.py").is_file() or (p / "local" / "worker.py").is_file()


def _baseline_root(path: str) -> str:
    """A directory to put on PYTHONPATH so that `torl.sandbox` is the baseline's."""
    p = Path(path).resolve()
    if _is_sandbox_package(p / "torl" / "sandbox"):
        return str(p)
    if _is_sandbox_package(p / "src" / "torl" / "sandbox"):
        return str(p / "src")
    if _is_sandbox_package(p):  # the sandbox package itself: give it a `torl` parent
        root = Path(tempfile.mkdtemp(prefix="torl-bench-baseline-"))
        (root / "torl").mkdir()
        (root / "torl" / "__init__.py").write_text("")
        (root / "torl" / "sandbox").symlink_to(p)
        return str(root)
    raise SystemExit(f"--baseline {path}: no torl/sandbox (or worker.py) found there")


def compare_with_baseline(args: argparse.Namespace) -> dict:
    trees = {"new": os.path.abspath(HERE_SRC), "old": _baseline_root(args.baseline)}
    scale = 0.1 if args.smoke else 1
    counts = {"trivial": max(3, int(200 * scale)), "math": max(2, int(30 * scale)),
              "error": max(2, int(60 * scale)), "session_block": max(3, int(60 * scale)), "timeout": 1}
    throughput_rounds = 1 if args.smoke else 4
    loadavg_before = _loadavg()
    children = {name: _Child(src, args, mix_size=8 if args.smoke else 100) for name, src in trees.items()}
    try:
        samples: dict[str, dict[str, list[float]]] = {"new": {}, "old": {}}
        for op, n in [*counts.items(), ("throughput", throughput_rounds)]:
            for i in range(n):
                for name in (("new", "old") if i % 2 == 0 else ("old", "new")):
                    samples[name].setdefault(op, []).append(children[name].call(op))
    finally:
        for child in children.values():
            child.close()
    report: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_before": loadavg_before, "loadavg_after": _loadavg()},
                    "workers": args.workers, "trees": trees}
    for name in ("new", "old"):
        report[name] = {"worker_pool_start_s": round(children[name].start_s, 3),
                        "latency": {op: percentiles(v) for op, v in samples[name].items() if op != "throughput"},
                        "throughput_per_s": round(statistics.median(samples[name]["throughput"]), 1)}
    # Ratios of the medians (p50) of the interleaved samples; throughput: of the median rounds.
    ratios = {f"{op}_p50_new_over_old": round(report["new"]["latency"][op]["p50_ms"] / report["old"]["latency"][op]["p50_ms"], 2)
              for op in counts if op != "timeout"}
    ratios["throughput_old_over_new"] = round(report["old"]["throughput_per_s"] / report["new"]["throughput_per_s"], 2)
    report["ratios"] = ratios
    report["within_1.2x"] = {k: v <= 1.2 for k, v in ratios.items()}
    report["all_within_1.2x"] = all(report["within_1.2x"].values())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about 30 s)")
    parser.add_argument("--smoke", action="store_true", help="a few calls of each kind: checks the bench runs")
    parser.add_argument("--workers", type=int, default=4, help="parallel workers for every backend")
    parser.add_argument("--baseline", metavar="DIR", help="an older copy of the sandbox to compare against")
    parser.add_argument("--serve-calls", action="store_true", help=argparse.SUPPRESS)  # a --baseline child
    parser.add_argument("--mix-size", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_calls:
        asyncio.run(serve_calls(args.workers, args.mix_size))
        return
    if args.baseline:
        print(json.dumps(compare_with_baseline(args), indent=2))
        return
    scale = 1 if args.quick or args.smoke else 3
    warm_counts = {"trivial": 100 * scale, "math": 20 * scale, "error": 30 * scale, "timeout": 2}
    if args.smoke:
        warm_counts = {"trivial": 5, "math": 2, "error": 2, "timeout": 1}
    cold_counts = {"trivial": 4 * scale, "math": 2 * scale, "error": 3 * scale, "timeout": 2}
    cycle = ["trivial", "trivial", "math", "error"]
    warm_mix = [SNIPPETS[cycle[i % 4]] for i in range(8 if args.smoke else 100 * scale)]
    cold_mix = [SNIPPETS[cycle[i % 4]] for i in range(8 * scale)]

    report = {"machine": {"cpus": os.cpu_count(), "loadavg_before": _loadavg()},
              "workers": args.workers, "timeout_s": TIMEOUT_S}
    a, c = asyncio.run(bench_warm(warm_counts, warm_mix, args.workers, warmup=2 * args.workers))
    report["a_torl_isolated"], report["c_warm_pool_unisolated"] = a, c
    report["b_subprocess_per_call"] = bench_sync(run_subprocess, cold_counts, cold_mix, args.workers)
    report["machine"]["loadavg_after"] = _loadavg()

    a, b, c = (report[k] for k in ("a_torl_isolated", "b_subprocess_per_call", "c_warm_pool_unisolated"))
    report["ratios"] = {
        "throughput_a_over_b": round(a["throughput_per_s"] / b["throughput_per_s"], 1),
        "throughput_a_over_c": round(a["throughput_per_s"] / c["throughput_per_s"], 2),
        "trivial_p50_a_over_c": round(a["latency"]["trivial"]["p50_ms"] / c["latency"]["trivial"]["p50_ms"], 2),
        "math_p50_a_over_c": round(a["latency"]["math"]["p50_ms"] / c["latency"]["math"]["p50_ms"], 2),
    }
    report["targets"] = {
        "a_trivial_p50_le_15ms": a["latency"]["trivial"]["p50_ms"] <= 15,
        "throughput_a_ge_20x_b": report["ratios"]["throughput_a_over_b"] >= 20,
        "trivial_p50_a_le_3x_c": report["ratios"]["trivial_p50_a_over_c"] <= 3,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
