"""LocalSandbox with real isolation: hostile code is contained, the pool survives, nothing leaks."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import psutil
import pytest

from torl.sandbox import (
    ExecStatus,
    InvalidCode,
    LocalSandbox,
    SandboxConfig,
    SandboxUnavailable,
    UnknownSession,
    format_observation,
)

REPO = Path(__file__).resolve().parents[1]
SHORT = 2.0  # timeout for the hostile snippets that loop


@pytest.fixture(scope="module")
def sandbox():
    sb = LocalSandbox(SandboxConfig(workers=2, max_sessions=2))
    sb.health_check_sync()
    yield sb
    pids = sb.worker_pids()
    sb.close()
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def assert_contained(sb: LocalSandbox) -> None:
    """Once every stateless worker reports its cleanup done, it is exactly bwrap -> zygote -> one
    spare (the child pre-forked for the next run, with no children), and the pool still answers."""
    sb.wait_idle_sync()
    for pid in sb.worker_pids():
        descendants = psutil.Process(pid).children(recursive=True)
        (zygote,) = psutil.Process(pid).children()
        spares = zygote.children()
        assert len(descendants) == 2 and len(spares) == 1, \
            f"leftover processes under worker {pid}: {[d.cmdline() for d in descendants]}"
    for _ in range(sb.config.workers):  # every worker, not just one
        after = sb.run_sync("print(6 * 7)")
        assert after.status is ExecStatus.OK and after.stdout == "42\n"


def test_basic_ok_and_error(sandbox):
    ok = sandbox.run_sync("import sympy\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 4, x))")
    assert ok.status is ExecStatus.OK and ok.stdout == "[-2, 2]\n" and ok.exit_code == 0
    err = sandbox.run_sync("print('before')\ndef f(n):\n    return 1 / n\nf(0)")
    assert err.status is ExecStatus.ERROR and err.exit_code == 1
    assert err.stdout == "before\n"
    assert 'File "<code>", line 3, in f' in err.stderr and "ZeroDivisionError" in err.stderr
    assert "worker.py" not in err.stderr  # our machinery is not in the traceback


def test_stateless_runs_do_not_share_state(sandbox):
    sandbox.run_sync("secret = 1\nopen('left.txt', 'w').write('x')")
    result = sandbox.run_sync("import os\nprint('secret' in globals(), os.listdir('.'))")
    assert result.stdout == "False []\n"


def test_exit_codes(sandbox):
    assert sandbox.run_sync("import sys\nsys.exit(0)").status is ExecStatus.OK
    three = sandbox.run_sync("import sys\nsys.exit(3)")
    assert three.status is ExecStatus.ERROR and three.exit_code == 3


def test_infinite_loop_times_out(sandbox):
    result = sandbox.run_sync("while True:\n    pass", timeout=SHORT)
    assert result.status is ExecStatus.TIMEOUT
    assert "exceeded 2 s" in format_observation(result)
    assert_contained(sandbox)


def test_fork_bomb(sandbox):
    result = sandbox.run_sync("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                              timeout=SHORT)
    assert result.status in (ExecStatus.TIMEOUT, ExecStatus.ERROR)
    assert_contained(sandbox)


def test_memory_bomb(sandbox):
    result = sandbox.run_sync("x = bytearray(8 * 1024**3)", memory_mb=256)
    assert result.status is ExecStatus.MEMORY
    grow = sandbox.run_sync("chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)", memory_mb=256, timeout=10)
    assert grow.status is ExecStatus.MEMORY
    assert_contained(sandbox)


def test_huge_output_is_cut(sandbox):
    result = sandbox.run_sync("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)", timeout=10)
    assert result.status is ExecStatus.OUTPUT_LIMIT and result.stdout_truncated
    assert len(result.stdout.encode()) <= sandbox.config.max_output_bytes
    big = sandbox.run_sync("print('z' * 100_000_000)", timeout=10)
    assert big.status is ExecStatus.OUTPUT_LIMIT
    obs = format_observation(big, max_chars=500)
    assert len(obs) < 700 and "characters cut" in obs and "OutputLimitError" in obs
    assert_contained(sandbox)


def test_one_gigabyte_file(sandbox):
    result = sandbox.run_sync("with open('big.bin', 'wb') as f:\n    for _ in range(1024):\n"
                              "        f.write(b'0' * 2**20)\nprint('wrote it all')", timeout=10)
    assert result.status is ExecStatus.ERROR and "wrote it all" not in result.stdout
    assert "File too large" in result.stderr or "No space left" in result.stderr
    assert_contained(sandbox)


def test_no_network_even_to_localhost(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        result = sandbox.run_sync(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
                                  "s.sendall(b'escaped')\nprint('connected')")
        assert result.status is ExecStatus.ERROR and "connected" not in result.stdout
        assert "ConnectionRefusedError" in result.stderr or "unreachable" in result.stderr
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever reached the host's listener
    finally:
        server.close()


def test_shell_cannot_touch_the_host(sandbox, tmp_path):
    marker = REPO / f"pwned-{uuid.uuid4().hex}"
    result = sandbox.run_sync(f"import os, subprocess\nos.system('touch {marker}; echo shell ran')\n"
                              f"print(subprocess.run(['sh', '-c', 'ls /root; id -u'], capture_output=True, text=True).stdout)")
    assert "shell ran" in result.stdout and "65534" in result.stdout  # a shell does run, as nobody
    assert not marker.exists()
    assert_contained(sandbox)


def test_killing_its_parent_is_harmless(sandbox):
    result = sandbox.run_sync("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                              "os.kill(1, signal.SIGTERM)\nprint('still here')")
    assert result.status is ExecStatus.OK and result.stdout == "still here\n"
    assert_contained(sandbox)


def test_segfault(sandbox):
    result = sandbox.run_sync("import ctypes\nprint('before', flush=True)\nctypes.string_at(0)")
    assert result.status is ExecStatus.ERROR and result.exit_code == -11
    assert result.stdout == "before\n" and "SIGSEGV" in format_observation(result)
    assert_contained(sandbox)


def test_os_exit_before_flush(sandbox):
    result = sandbox.run_sync("import os\nprint('line kept')\nos._exit(0)")
    assert result.status is ExecStatus.OK and result.stdout == "line kept\n"
    assert_contained(sandbox)


def test_deep_recursion(sandbox):
    result = sandbox.run_sync("def f(n):\n    return f(n + 1)\nf(0)")
    assert result.status is ExecStatus.ERROR and "RecursionError" in result.stderr
    obs = format_observation(result)
    assert obs.count('File "<code>"') <= 6 and "RecursionError" in obs
    # With the limit lifted, Python frames pile up until the memory or the time limit stops them.
    crash = sandbox.run_sync("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)",
                             memory_mb=128, timeout=SHORT)
    assert crash.status in (ExecStatus.ERROR, ExecStatus.MEMORY, ExecStatus.TIMEOUT)
    assert_contained(sandbox)


def test_background_sleepers_are_killed(sandbox):
    result = sandbox.run_sync("import os, subprocess\nsubprocess.Popen(['sleep', '1000'])\n"
                              "subprocess.Popen(['setsid', 'sleep', '1001'])\n"
                              "if os.fork() == 0:\n    os.setsid()\n    import time; time.sleep(1002)\nprint('spawned')")
    assert result.status is ExecStatus.OK
    sandbox.wait_idle_sync()  # the result comes before the cleanup; no run starts before it is done
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and p.info["cmdline"][:1] == ["sleep"]
                and p.info["cmdline"][1:] in (["1000"], ["1001"])]
    assert_contained(sandbox)


def test_host_files_are_invisible(sandbox):
    secret = Path.home() / f".torl-sandbox-secret-{uuid.uuid4().hex}"
    secret.write_text("top secret")
    try:
        code = (f"import os\nfor p in [{str(secret)!r}, {str(REPO / 'pyproject.toml')!r}, '/etc/shadow']:\n"
                "    try:\n        print(open(p).read())\n    except OSError as e:\n        print('denied', type(e).__name__)\n"
                f"for p in [{str(REPO / 'written.txt')!r}, {str(Path.home() / 'written.txt')!r}, '/usr/x']:\n"
                "    try:\n        open(p, 'w').write('x'); print('wrote', p)\n    except OSError as e:\n"
                "        print('denied', type(e).__name__)\nprint(os.listdir(os.path.expanduser('~')))")
        result = sandbox.run_sync(code)
        assert result.status is ExecStatus.OK
        assert "top secret" not in result.stdout and "[project]" not in result.stdout
        assert result.stdout.count("denied") == 6 and "wrote" not in result.stdout
        assert not (REPO / "written.txt").exists() and not (Path.home() / "written.txt").exists()
    finally:
        secret.unlink()


def test_scratch_is_private_and_wiped(sandbox):
    name = f"torl-escape-{uuid.uuid4().hex}"
    result = sandbox.run_sync(f"open('/tmp/{name}', 'w').write('x')\nimport os\nprint(os.getcwd())")
    assert result.status is ExecStatus.OK
    assert not Path("/tmp", name).exists()


@pytest.mark.parametrize("code, fragment", [
    (b"print(1)", "got bytes"),
    ("print(1)\x00", "NUL"),
    ("x = '\ud800'", "not valid Unicode"),
    ("#" * 300_000, "over the limit"),
])
def test_bad_code_is_rejected(sandbox, code, fragment):
    with pytest.raises(InvalidCode, match=fragment):
        sandbox.run_sync(code)


@pytest.mark.parametrize("kw", [{"timeout": -1}, {"timeout": 0}, {"timeout": 1e9}, {"timeout": float("nan")},
                                {"timeout": 10**400},
                                {"memory_mb": 1}, {"memory_mb": 10**9}])
def test_bad_limits_are_rejected(sandbox, kw):
    with pytest.raises(InvalidCode):
        sandbox.run_sync("print(1)", **kw)


def test_unknown_session(sandbox):
    with pytest.raises(UnknownSession):
        sandbox.run_sync("print(1)", session="nope")
    with pytest.raises(UnknownSession):
        sandbox.close_session_sync("nope")


def test_session_keeps_state_and_survives_failures(sandbox):
    session = sandbox.open_session_sync()
    try:
        run = lambda code, **kw: sandbox.run_sync(code, session=session, **kw)
        assert run("x = 5\nimport numpy as np").status is ExecStatus.OK
        assert run("print(x * 2)").stdout == "10\n"
        assert run("x = 7\nwhile True: pass", timeout=SHORT).status is ExecStatus.TIMEOUT
        assert run("print(x)").stdout == "5\n"  # a timed-out block leaves the state as it was
        failed = run("y = x + 1\nraise ValueError('boom')")
        assert failed.status is ExecStatus.ERROR and "ValueError: boom" in failed.stderr
        assert run("print(y)").stdout == "6\n"  # like a notebook: lines before the error took effect
        assert run("import os\nos.kill(os.getppid(), 9)\nz = 1").status is ExecStatus.OK
        assert run("print(y, z)").stdout == "6 1\n"
        assert run("import os\nos.fork() or os.setsid() or __import__('time').sleep(500)").status is ExecStatus.OK
        assert run("print(y + 1)").stdout == "7\n"
    finally:
        sandbox.close_session_sync(session)
    with pytest.raises(UnknownSession):
        sandbox.run_sync("print(1)", session=session)


def test_session_cap(sandbox):
    sessions = [sandbox.open_session_sync() for _ in range(sandbox.config.max_sessions)]
    try:
        with pytest.raises(Exception, match="too many open sessions"):
            sandbox.open_session_sync()
    finally:
        for s in sessions:
            sandbox.close_session_sync(s)


def test_blocking_call_inside_event_loop_is_refused(sandbox):
    async def inner():
        sandbox.run_sync("print(1)")

    with pytest.raises(RuntimeError, match="inside a running event loop"):
        asyncio.run(inner())


async def test_hundreds_of_concurrent_runs_from_one_loop():
    async with LocalSandbox(SandboxConfig(workers=3)) as sb:
        codes = [f"import math\nprint({i}, math.factorial({i % 20}))" for i in range(300)]
        results = await asyncio.gather(*(sb.run(c) for c in codes))
        assert [r.stdout for r in results] == [f"{i} {__import__('math').factorial(i % 20)}\n" for i in range(300)]
        assert all(r.status is ExecStatus.OK for r in results)


async def test_dead_worker_is_sandbox_error_and_pool_heals():
    async with LocalSandbox(SandboxConfig(workers=1)) as sb:
        await sb.start()
        victim = sb.worker_pids()[0]
        task = asyncio.create_task(sb.run("import time\ntime.sleep(5)", timeout=8))
        await asyncio.sleep(1.0)
        psutil.Process(victim).kill()  # our infrastructure dies under a running execution
        result = await task
        assert result.status is ExecStatus.SANDBOX_ERROR and "died" in result.sandbox_message
        with pytest.raises(Exception, match="sandbox failure"):
            format_observation(result)
        healed = await sb.run("print('back')")
        assert healed.status is ExecStatus.OK and healed.stdout == "back\n"
        assert sb.worker_pids() != [victim] and sb.stats["worker_restarts"] == 1


async def test_isolation_none_is_an_explicit_loud_opt_out():
    as_root = os.geteuid() == 0
    if as_root:  # unisolated code would be host root: a second, explicit opt-out is needed
        with pytest.raises(SandboxUnavailable, match="host root.*allow_host_root=True"):
            async with LocalSandbox(SandboxConfig(workers=1, isolation="none")) as sb:
                await sb.run("print(1)")

    async def run_unisolated():
        async with LocalSandbox(SandboxConfig(workers=1, isolation="none", allow_host_root=as_root)) as sb:
            return await sb.run("import os\nprint(os.getpid() != 1)")

    with pytest.warns(RuntimeWarning, match="UNISOLATED"):
        result = await run_unisolated()
    assert result.status is ExecStatus.OK and result.stdout == "True\n"


def test_unusable_isolation_refuses_at_start(monkeypatch):
    from torl.sandbox import SandboxUnavailable
    from torl.sandbox.local import isolation

    def missing():
        raise isolation.IsolationError("bubblewrap (bwrap) not found")

    monkeypatch.setattr(isolation, "find_bwrap", missing)
    sb = LocalSandbox(SandboxConfig(workers=1))
    try:
        with pytest.raises(SandboxUnavailable, match="bwrap"):
            sb.run_sync("print(1)")
    finally:
        sb.close()


def test_pids_of_this_test_process_are_untouched():
    # The pids cgroup must only ever hold sandbox workers, never the test runner.
    assert "torl-sandbox" not in Path(f"/proc/{os.getpid()}/cgroup").read_text()
