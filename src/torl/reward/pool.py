"""Hang-proof equivalence checks: a pool of warm verifier processes, each check under a deadline.

Why processes: sympy can hang on innocent-looking answers (`5^(5^(5^5))` builds a number with
more digits than atoms in the universe) inside C code that no Python-level timeout interrupts,
and math-verify's own timeout is `signal.alarm`, which only works in a main thread. So every check
runs in a worker process (`torl.reward._worker`); the caller waits on the worker's pipe until the
deadline, and a worker that overruns is killed and replaced in the background. A soft SIGALRM
inside the worker, a little before the deadline, ends most slow checks without losing the warm
worker. Callers may be any thread; `acheck` serves event loops. Verdicts (not time-outs, which
depend on load) are cached in an LRU keyed on (gold, predicted).

The deadline bounds the check's work. Waiting for a free worker is separate (`queue_timeout_s`):
if no worker frees up in that time, or workers cannot start, `VerifierUnavailable` is raised,
because an overloaded or broken verifier is our failure and must not read as a wrong answer.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from torl.errors import VerifierUnavailable
from torl.reward.verdict import Verdict

DEFAULT_TIMEOUT_S = 5.0
_HEADER = struct.Struct(">I")
_START_TIMEOUT_S = 120.0


class _Overran(Exception):
    pass


class _Died(Exception):
    pass


class _Worker:
    """One verifier process and the two pipes to it."""

    def __init__(self, memory_mb: int):
        env = dict(os.environ)
        src_dir = str(Path(__file__).resolve().parents[2])  # so the worker imports this very torl
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_dir, env.get("PYTHONPATH", "")) if p)
        env["TORL_VERIFY_PARENT"] = str(os.getpid())
        env["TORL_VERIFY_MEMORY_MB"] = str(memory_mb)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from torl.reward._worker import main; main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self._buffer = b""

    def wait_ready(self, timeout_s: float) -> None:
        try:
            message = self._receive(time.monotonic() + timeout_s)
        except (_Overran, _Died) as e:
            self.kill()
            raise VerifierUnavailable(
                f"verifier worker did not start ({type(e).__name__.strip('_').lower()}); "
                "check that math-verify is installed: pip install 'math-verify[antlr4_13_2]'"
            ) from None
        if message[0] != "ready":
            self.kill()
            raise VerifierUnavailable(f"verifier worker sent {message[0]!r} instead of 'ready'")

    def request(self, message: tuple, deadline: float):
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died() from None
        return self._receive(deadline)

    def _receive(self, deadline: float):
        fd = self.proc.stdout.fileno()
        while True:
            if len(self._buffer) >= _HEADER.size:
                size = _HEADER.unpack_from(self._buffer)[0]
                if len(self._buffer) >= _HEADER.size + size:
                    frame = self._buffer[_HEADER.size:_HEADER.size + size]
                    self._buffer = self._buffer[_HEADER.size + size:]
                    return pickle.loads(frame)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Overran()
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                raise _Overran()
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _Died()
            self._buffer += chunk

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        # Reap off the caller's path: the caller already has its verdict.
        threading.Thread(target=self.proc.wait, daemon=True).start()

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the worker exits by itself
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class VerifierPool:
    """`workers` warm verifier processes shared by every thread and event loop of this process."""

    def __init__(self, workers: int = 2, *, memory_mb: int = 4096, queue_timeout_s: float = 300.0,
                 cache_size: int = 100_000):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.size = workers
        self.memory_mb = memory_mb
        self.queue_timeout_s = queue_timeout_s
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._start_error: str | None = None
        self._cache: collections.OrderedDict[tuple, object] = collections.OrderedDict()
        self._cache_size = cache_size
        self.stats = collections.Counter()  # checks, cache_hits, timeouts, restarts, crashes

    # ---- workers -------------------------------------------------------------------------
    def _spawn(self) -> None:
        try:
            worker = _Worker(self.memory_mb)
            worker.wait_ready(_START_TIMEOUT_S)
        except (OSError, VerifierUnavailable) as e:
            with self._lock:
                self._start_error = str(e)
            return
        with self._lock:
            if self._closed:
                worker.close()
                return
            self._all.add(worker)
            self._start_error = None
        self._idle.put(worker)

    def _ensure_started(self) -> None:
        with self._lock:
            if self._closed:
                raise VerifierUnavailable("the verifier pool was closed")
            if self._started:
                return
            self._started = True
        for _ in range(self.size):
            threading.Thread(target=self._spawn, daemon=True, name="torl-verifier-spawn").start()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
        self._count("restarts")
        threading.Thread(target=self._spawn, daemon=True, name="torl-verifier-spawn").start()

    def _acquire(self) -> _Worker:
        self._ensure_started()
        give_up = time.monotonic() + self.queue_timeout_s
        while True:
            try:
                return self._idle.get(timeout=0.2)
            except queue.Empty:
                pass
            with self._lock:
                broken = self._start_error if not self._all else None
            if broken:
                raise VerifierUnavailable(broken)
            if time.monotonic() > give_up:
                raise VerifierUnavailable(
                    f"no verifier worker free after {self.queue_timeout_s:.0f}s; "
                    "raise TORL_VERIFY_WORKERS or the queue timeout")

    def _call(self, kind: str, args: tuple, timeout_s: float):
        """Run one request under the deadline: (("ok", value) or ("gave_up", why)), seconds it took.

        The time counts from when a worker took the request, not the wait for a free worker."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        soft_s = timeout_s - min(0.25 * timeout_s, 0.5)
        for attempt in (1, 2):
            worker = self._acquire()
            started = time.monotonic()
            try:
                answer = worker.request((kind, args, soft_s), started + timeout_s)
            except _Overran:
                self._replace(worker)
                return ("gave_up", f"deadline of {timeout_s:g}s reached (worker killed)"), timeout_s
            except _Died:
                self._replace(worker)
                self._count("crashes")
                if attempt == 2:  # it crashed twice on this input: the input's doing, not chance
                    return ("gave_up", "verifier crashed on this input twice"), time.monotonic() - started
                continue
            self._idle.put(worker)
            return answer, time.monotonic() - started
        raise AssertionError("unreachable")

    # ---- public --------------------------------------------------------------------------
    def check(self, gold: str, predicted: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
        """Compare two bare answers; returns within `timeout_s` once a worker is free."""
        key = ("check", gold, predicted)
        cached = self._cache_get(key)
        if cached is not None:
            return cached
        (status, value), elapsed = self._call("check", (gold, predicted), timeout_s)
        self._count("checks")
        if status == "ok":
            verdict = Verdict(value.equivalent, False, value.gold_parsed, value.pred_parsed, value.reason, elapsed)
            self._cache_put(key, verdict)
            return verdict
        self._count("timeouts")
        return Verdict(False, True, reason=f"verifier gave up: {value}", elapsed_s=elapsed)

    async def acheck(self, gold: str, predicted: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
        """`check` for event loops: the wait happens in a thread, the loop keeps running."""
        return await asyncio.to_thread(self.check, gold, predicted, timeout_s=timeout_s)

    def parseable(self, answer: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
        """Whether `answer` parses into something checkable (False if parsing overruns)."""
        key = ("parseable", answer)
        cached = self._cache_get(key)
        if cached is not None:
            return cached
        (status, value), _ = self._call("parseable", (answer,), timeout_s)
        if status != "ok":
            return False
        self._cache_put(key, bool(value))
        return bool(value)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.close()

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    # ---- cache ---------------------------------------------------------------------------
    def _cache_get(self, key):
        with self._lock:
            value = self._cache.get(key)
            if value is not None:
                self._cache.move_to_end(key)
                self.stats["cache_hits"] += 1  # under the lock already
            return value

    def _cache_put(self, key, value) -> None:
        with self._lock:
            self._cache[key] = value
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


_default: VerifierPool | None = None
_default_pid = 0
_default_lock = threading.Lock()


def default_workers() -> int:
    """TORL_VERIFY_WORKERS, else up to 4 workers (one per core)."""
    value = os.environ.get("TORL_VERIFY_WORKERS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"TORL_VERIFY_WORKERS must be an integer, got {value!r}") from None
    return max(1, min(4, os.cpu_count() or 1))


def default_pool() -> VerifierPool:
    """The process-wide pool (re-created in a forked child, whose parent's workers are not its own)."""
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default = VerifierPool(default_workers())
            _default_pid = os.getpid()
        return _default


@atexit.register
def _close_default() -> None:
    if _default is not None and _default_pid == os.getpid():
        _default.close()
