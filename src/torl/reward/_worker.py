"""A warm verifier worker process: reads requests on stdin, answers on stdout.

Frames are a 4-byte big-endian length followed by a pickle. Requests: `(kind, args, soft_s)`
with kind "check" (gold, predicted) or "parseable" (answer,). Answers: `("ok", value)` or
`("gave_up", why)`. The worker runs checks in its main thread, so a SIGALRM timer at `soft_s`
can interrupt pure-Python sympy work and keep the worker warm; work stuck in C (a huge
integer power, a regex) ignores the signal, and the parent kills the process at the hard
deadline. The worker exits on EOF and when its parent goes away.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import struct
import sys
import threading
import time

_HEADER = struct.Struct(">I")


class _SoftDeadline(BaseException):
    """Raised by the timer. A BaseException so math-verify's `except Exception` cannot swallow it."""


_armed = False


def _on_alarm(signum, frame):
    if _armed:
        raise _SoftDeadline()


def _exit_when_orphaned(parent_pid: int) -> None:
    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _read_exact(stream, n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def _send(stream, obj) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _run(kind: str, args: tuple):
    from torl.reward.equivalence import compare, parseable
    from torl.reward.verdict import Verdict

    try:
        if kind == "check":
            return compare(*args)
        if kind == "parseable":
            return parseable(*args)
        raise ValueError(f"unknown request kind {kind!r}")
    except (_SoftDeadline, MemoryError, RecursionError):
        raise
    except Exception as e:  # noqa: BLE001 -- a parser bug on odd input: not equivalent, cause kept
        if kind == "parseable":
            return False
        return Verdict(False, reason=f"verifier error: {type(e).__name__}: {str(e)[:200]}")


def main() -> None:
    global _armed
    parent_pid = int(os.environ.get("TORL_VERIFY_PARENT", os.getppid()))
    _exit_when_orphaned(parent_pid)
    memory_mb = int(os.environ.get("TORL_VERIFY_MEMORY_MB", "0"))
    if memory_mb > 0:  # a runaway sympy expression fails with MemoryError instead of swapping the box
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol stream

    from torl.reward.equivalence import compare

    compare("\\frac{1}{2}", "0.5")  # load the LaTeX grammar now, not on the first real check
    signal.signal(signal.SIGALRM, _on_alarm)
    _send(answers, ("ready", os.getpid()))

    while True:
        header = _read_exact(requests, _HEADER.size)
        if header is None:
            return
        payload = _read_exact(requests, _HEADER.unpack(header)[0])
        if payload is None:
            return
        kind, args, soft_s = pickle.loads(payload)
        try:
            try:
                _armed = True
                signal.setitimer(signal.ITIMER_REAL, max(soft_s, 0.001))
                answer = ("ok", _run(kind, args))
            finally:
                _armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftDeadline:
            answer = ("gave_up", "deadline reached")
        except MemoryError:
            answer = ("gave_up", "memory limit reached")
        except RecursionError:
            answer = ("gave_up", "recursion limit reached (deeply nested input)")
        _send(answers, answer)


if __name__ == "__main__":
    main()
