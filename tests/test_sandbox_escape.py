"""Attacks on LocalSandbox as an attacker would try them, with torl running as root (as in GPU
containers) or not: no path to host root, nothing that outlives a run, all memory bounded,
output that cannot break the pipe, sessions held to their limits, cleanup that cannot be broken."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sandbox_helpers import descendants, one_worker_fixture, run

from torl.sandbox import ExecStatus, InvalidCode
from torl.sandbox.local import cgroups

AS_ROOT = os.geteuid() == 0
TORL = str(Path(sys.executable).with_name("torl"))  # the console script, as a user runs it
SYS_ADD_KEY = {"x86_64": 248, "aarch64": 217}[os.uname().machine]
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}[os.uname().machine]
SYS_IO_URING_SETUP = 425


one_worker = one_worker_fixture(max_sessions=4)


# ---------------------------------------------------------------- 1. never host root

def test_code_never_runs_as_host_root(one_worker):
    result = run(one_worker, "import os; print(os.getuid(), os.geteuid())")
    assert result.stdout == "65534 65534\n"
    # Seen from the host (uid_map inside is relative to bwrap's own namespaces): no process of
    # the sandbox, bwrap, the worker or the spare that runs the next code, has host uid 0.
    procs = [psutil.Process(p) for p in one_worker.worker_pids()] + descendants(one_worker.worker_pids())
    uids = []
    for proc in procs:
        try:
            uids.append(proc.uids())
        except psutil.NoSuchProcess:  # a short-lived helper exited between listing and reading: nothing to check
            pass
    assert uids and all(u.real != 0 and u.effective != 0 for u in uids)


@pytest.mark.parametrize("path", ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/swappiness",
                                  "/proc/sys/vm/drop_caches", "/proc/sys/kernel/hostname"])
def test_kernel_interfaces_are_not_writable(one_worker, path):
    before = Path(path).read_text() if os.path.exists(path) and path != "/proc/sys/vm/drop_caches" else None
    result = run(one_worker, f"try:\n    open({path!r}, 'w').write('1')\n    print('WROTE')\n"
                             f"except OSError as e:\n    print('refused', e.errno)")
    assert result.stdout.startswith("refused"), result.stdout
    if before is not None:
        assert Path(path).read_text() == before


def test_host_keyrings_are_out_of_reach(one_worker):
    # A key in this (host) process's session keyring, which the workers were started from.
    libc = ctypes.CDLL(None, use_errno=True)
    key = libc.syscall(SYS_ADD_KEY, b"user", b"torl-test-secret", b"payload", 7, ctypes.c_int(-3))
    assert key > 0, os.strerror(ctypes.get_errno())
    result = run(one_worker, f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print('keys:', 'torl-test-secret' in open('/proc/keys').read())
print('add_key:', libc.syscall({SYS_ADD_KEY}, b"user", b"x", b"y", 1, ctypes.c_int(-3)), ctypes.get_errno())
print('keyctl:', libc.syscall({SYS_KEYCTL}, 0, ctypes.c_int(-3), 0), ctypes.get_errno())
""")
    lines = result.stdout.splitlines()
    assert lines[0] == "keys: False"
    assert lines[1].startswith("add_key: -1 ") and lines[2].startswith("keyctl: -1 ")


@pytest.mark.parametrize("name, code", [
    ("new user namespace", "libc.unshare(0x10000000)"),
    ("new mount namespace", "libc.unshare(0x00020000)"),
    ("mount", "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)"),
    ("io_uring", f"libc.syscall({SYS_IO_URING_SETUP}, 8, ctypes.create_string_buffer(120))"),
    ("ptrace", "libc.ptrace(16, 1, None, None)"),  # PTRACE_ATTACH to the worker
])
def test_seccomp_refuses_what_model_code_never_needs(one_worker, name, code):
    result = run(one_worker, f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                             f"print({code}, ctypes.get_errno())")
    ret, err = result.stdout.split()
    assert ret == "-1" and int(err) in (1, 38), (name, result.stdout)  # EPERM (or ENOSYS)


def test_subprocesses_and_threads_still_work(one_worker):
    result = run(one_worker, "import subprocess, sys, threading\n"
                             "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
                             "print(subprocess.run([sys.executable, '-c', 'print(6*7)'], capture_output=True,"
                             " text=True).stdout.strip())")
    assert result.stdout == "thread\n42\n"


# ---------------------------------------------------------------- 2. nothing outlives a run

SYSV = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
for i in range(4):
    ident = libc.shmget(0x7000 + i, 40 * 2**20, 0o1666)  # IPC_CREAT | 0666
    addr = libc.shmat(ident, None, 0)
    ctypes.memset(addr, 1, 40 * 2**20)
    libc.shmdt(ctypes.c_void_p(addr))
print(libc.msgget(0x7100, 0o1666) >= 0)
"""


def test_sysv_ipc_does_not_outlive_its_run(one_worker):
    made = run(one_worker, SYSV, memory_mb=1024)
    assert made.status is ExecStatus.OK and made.stdout == "True\n", made.stderr
    one_worker.wait_idle_sync()
    after = run(one_worker, "print(len(open('/proc/sysvipc/shm').read().splitlines()) - 1,"
                            " len(open('/proc/sysvipc/msg').read().splitlines()) - 1)")
    assert after.stdout == "0 0\n"


def test_hostname_nice_and_limits_of_the_worker_cannot_be_changed(one_worker):
    attack = run(one_worker, """
import os, resource, socket
for what, call in [("hostname", lambda: socket.sethostname("pwned")),
                   ("nice of pid 1", lambda: os.setpriority(os.PRIO_PROCESS, 1, 19)),
                   ("nice of the uid", lambda: os.setpriority(os.PRIO_USER, 0, 19)),
                   ("limits of pid 1", lambda: resource.prlimit(1, resource.RLIMIT_NOFILE, (4, 4)))]:
    try:
        call()
        print(what, "CHANGED")
    except OSError as e:
        print(what, "refused")
os.nice(5)  # its own priority, on the other hand, is its own business
print("own nice", os.getpriority(os.PRIO_PROCESS, 0))
""")
    assert "CHANGED" not in attack.stdout, attack.stdout
    assert "own nice 5" in attack.stdout
    one_worker.wait_idle_sync()
    after = run(one_worker, "import os, resource, socket\n"
                            "print(socket.gethostname(), os.getpriority(os.PRIO_PROCESS, 1),"
                            " os.getpriority(os.PRIO_PROCESS, 0), resource.prlimit(1, resource.RLIMIT_NOFILE)[0] > 4)")
    assert after.stdout == "sandbox 0 0 True\n"


# ---------------------------------------------------------------- 3. all memory is bounded

MEMFD = """
import os
held = []
for i in range(5):
    fd = os.memfd_create(f"m{i}")
    os.write(fd, b"x" * (40 * 2**20))
    held.append(fd)
print("held", len(held))
"""


@pytest.mark.parametrize("code", [MEMFD, ("for i in range(5):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * 40 * 2**20)\n"
                                          "print('held 5')")], ids=["memfd", "tmpfs"])
def test_memory_outside_the_address_space_is_bounded(one_worker, code):
    result = run(one_worker, code, memory_mb=64)
    assert "held 5" not in result.stdout
    if cgroups.available()["memory"] and AS_ROOT:
        assert result.status is ExecStatus.MEMORY, (result.status, result.stderr[-300:])
    else:  # no memory cgroup: memfd is refused (seccomp), the tmpfs is smaller than 200 MB... or not
        assert result.status in (ExecStatus.MEMORY, ExecStatus.ERROR)
    one_worker.wait_idle_sync()
    assert run(one_worker, "print('fine')").stdout == "fine\n"  # the pool survived it


# ---------------------------------------------------------------- 4. output cannot break the pipe

@pytest.mark.parametrize("code", [
    "import sys; sys.stdout.write(chr(1) * 990000)",
    "import os; os.write(1, bytes(range(256)) * 3900)",
    "import sys; sys.stdout.write('\\ud800' * 300000)",
    "import os; os.write(2, b'\\xff\\xfe' * 490000)",
])
def test_any_output_bytes_give_ok_or_output_limit(one_worker, code):
    result = one_worker.run_sync(code)
    assert result.status in (ExecStatus.OK, ExecStatus.OUTPUT_LIMIT), result.sandbox_message
    assert len(result.stdout) + len(result.stderr) > 0


def test_control_characters_come_back_exactly(one_worker):
    result = run(one_worker, "import sys; sys.stdout.write(chr(1) * 990000)")
    assert result.status is ExecStatus.OK and result.stdout == "\x01" * 990000


# ---------------------------------------------------------------- 5. sessions keep per-call limits

def test_session_block_cannot_raise_its_memory_limit(one_worker):
    session = one_worker.open_session_sync()
    try:
        result = run(one_worker, "import resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
                                 "try:\n    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))\n"
                                 "except ValueError:\n    pass\nx = bytearray(300 * 2**20)\nprint('allocated')",
                     session=session, memory_mb=64)
        assert result.status is ExecStatus.MEMORY and "allocated" not in result.stdout
        with pytest.raises(InvalidCode, match="only stay or shrink"):
            one_worker.run_sync("print(1)", session=session, memory_mb=128)
    finally:
        one_worker.close_session_sync(session)


def test_session_thread_left_spinning_does_not_survive_the_block(one_worker):
    session = one_worker.open_session_sync()
    try:
        started = run(one_worker, "import signal, threading\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
                                  "threading.Thread(target=lambda: [None for _ in iter(int, 1)], daemon=True).start()\n"
                                  "x = 41", session=session)
        assert started.status is ExecStatus.OK
        procs = descendants(one_worker.worker_pids())
        before = sum(p.cpu_times().user + p.cpu_times().system for p in procs if p.is_running())
        time.sleep(1.0)
        after = sum(p.cpu_times().user + p.cpu_times().system for p in procs if p.is_running())
        assert after - before < 0.3  # nothing of the session spins between blocks
        assert run(one_worker, "print(x + 1)", session=session).stdout == "42\n"
    finally:
        one_worker.close_session_sync(session)


@pytest.mark.parametrize("forged", [{"done": 0}, {"done": 0, "holder": "SELF"}, "garbage" * 20000])
def test_session_block_cannot_forge_its_own_completion(one_worker, forged):
    session = one_worker.open_session_sync()
    try:
        assert run(one_worker, "x = 5", session=session).status is ExecStatus.OK
        payload = repr(forged) if isinstance(forged, str) else f"json.dumps({forged!r}).replace('\"SELF\"', str(os.getpid()))"
        forge = run(one_worker, f"import json, os, time\nfor fd in range(3, 8):\n    try:\n"
                                f"        os.write(fd, ({payload} + '\\n').encode())\n    except OSError:\n        pass\n"
                                "x = 6\ntime.sleep(30)", session=session, timeout=2)
        assert forge.status is ExecStatus.TIMEOUT
        for _ in range(3):  # the session goes on with the state from before the forged block
            later = run(one_worker, "print(x)", session=session, timeout=2)
            assert later.status is ExecStatus.OK and later.stdout == "5\n", (later.stdout, later.stderr)
    finally:
        one_worker.close_session_sync(session)


# ---------------------------------------------------------------- 6. cleanup cannot be broken

def test_deeply_nested_scratch_is_wiped_without_losing_the_worker(one_worker):
    restarts = one_worker.stats["worker_restarts"]
    made = run(one_worker, "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
                           "open('leaf', 'w').write('x')\nos.chmod('.', 0)\nprint('deep')")
    assert made.stdout == "deep\n"
    one_worker.wait_idle_sync()
    after = run(one_worker, "import os; print(os.listdir('/tmp'))")
    assert after.stdout == "[]\n"
    assert one_worker.stats["worker_restarts"] == restarts and one_worker.stats["worker_recycled"] == 0


# ---------------------------------------------------------------- refusing host root

def test_check_reports_protections_and_refuses_host_root_without_opt_out():
    out = subprocess.run([TORL, "sandbox", "check"], capture_output=True, text=True,
                         timeout=120, check=False)
    for row in ("uid mapping", "seccomp", "memory cgroup", "process bound"):
        assert row in out.stdout, out.stdout + out.stderr
    assert "[OFF] uid mapping" not in out.stdout
    if AS_ROOT:
        refused = subprocess.run([TORL, "sandbox", "check", "--isolation", "none"],
                                 capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 2 and "host root" in refused.stderr and len(refused.stderr.splitlines()) == 1
        opted = subprocess.run([TORL, "sandbox", "check", "--allow-host-root"],
                               capture_output=True, text=True, timeout=120, check=False)
        assert "[OFF] uid mapping" in opted.stdout and "HOST ROOT" in opted.stdout


def test_stdin_files_and_fetch_files_roundtrip(one_worker):
    result = run(one_worker, "import sys\nname = sys.stdin.read().strip()\n"
                             "open('out/answer.txt', 'w').write(open('data/in.txt').read() + name)",
                 stdin="torl\n", files={"data/in.txt": b"hello ", "out/.keep": b""},
                 fetch_files=["out/answer.txt", "missing.txt"])
    assert result.status is ExecStatus.OK, result.stderr
    assert result.files == {"out/answer.txt": b"hello torl"}
    for bad in ("/etc/passwd", "../x", "a/../../x"):
        with pytest.raises(InvalidCode):
            one_worker.run_sync("pass", files={bad: b""})
    assert json.dumps(result.to_dict())  # ExecResult stays JSON-ready with files in it
