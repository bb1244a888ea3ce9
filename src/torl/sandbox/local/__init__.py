"""The local wing: a pool of warm, isolated worker processes on this machine.

sandbox.py is `LocalSandbox` (the pool, limits, sessions); isolation.py, seccomp.py and cgroups.py
confine each worker; worker.py is the stdlib-only program that runs inside (launched by path, never
imported there). Code outside `torl.sandbox` gets `LocalSandbox` from `torl.sandbox` or
`make_sandbox`, not from here.
"""

from __future__ import annotations

from torl.sandbox.local.sandbox import LocalSandbox

__all__ = ["LocalSandbox"]
