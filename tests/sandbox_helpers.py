"""What the attack tests on LocalSandbox (test_sandbox_escape.py, test_sandbox_hostile.py) share."""

from __future__ import annotations

import psutil
import pytest

from torl.sandbox import ExecStatus, LocalSandbox, SandboxConfig


def one_worker_fixture(max_sessions: int):
    """A module-scoped `one_worker` fixture: a LocalSandbox with one worker, so consecutive stateless runs
    are served by the same zygote; `max_sessions` is the session limit the module's tests work against."""

    @pytest.fixture(scope="module", name="one_worker")
    def one_worker():
        sb = LocalSandbox(SandboxConfig(workers=1, max_sessions=max_sessions))
        sb.health_check_sync()
        yield sb
        sb.close()

    return one_worker


def run(sb, code: str, **kw):
    """`sb.run_sync`, failing the test if the sandbox itself broke (an attack must get a verdict, not an outage)."""
    result = sb.run_sync(code, **kw)
    assert result.status is not ExecStatus.SANDBOX_ERROR, result.sandbox_message
    return result


def descendants(pids: list[int]) -> list[psutil.Process]:
    """Every live process below `pids` (a sandbox's workers: its zygotes and what they forked)."""
    procs = []
    for pid in pids:
        try:
            procs += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return procs
