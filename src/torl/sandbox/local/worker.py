"""The sandbox worker ("zygote"): runs INSIDE the isolation and executes untrusted code in forks.

Standalone on purpose: standard library only, no torl imports. The host bind-mounts just this
file into the sandbox, whose filesystem does not contain the torl checkout.

Life of a worker: the host starts it (inside bwrap, as pid 1 of a private pid namespace), sends
an `init` frame; the worker pre-imports the math stack and answers `ready`.

Stateless runs keep fork and set-up off the critical path. The worker always holds one *spare*:
a child forked (copy-on-write, so imports are warm) right after the previous run's cleanup, with
its fds and fixed limits set, blocked reading its request socket. For an `exec` frame the worker
passes the code to the spare, which applies the per-run limits (memory, CPU) and runs it; the
worker collects the output and enforces the wall clock and output cap. When the code finishes,
the spare reports its exit status on a report pipe and the worker answers `result` at once,
without waiting for the big address space to be torn down. Only then does it kill every other
process in its namespace, wipe the scratch dirs (and reset their roots), remove IPC objects and
message queues, fork the next spare, and answer `idle`. The
host hands the worker out again only after `idle`, so no run ever starts while leftovers of the
previous one exist.

Being pid 1 matters: the kernel drops SIGKILL/SIGSTOP sent to a namespace's init from inside it,
so user code cannot kill the worker (`os.kill(os.getppid(), 9)` is a no-op).

Session mode (one worker per session): a *holder* process keeps the user's globals. Each block
runs in a fork of the holder; if the block completes (ok or a caught exception) that fork becomes
the new holder, otherwise (timeout, crash, memory kill) the previous holder and its state are kept.
No code of the session runs between blocks: the fork hooks a block registered are dropped before
the next holder is forked from its state, and the holder is kept stopped (SIGSTOP) until the next
block arrives.

Wire format on the host pipes: 4-byte big-endian length + UTF-8 JSON object.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import fcntl
import gc
import importlib
import io
import json
import linecache
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
import time
import traceback
import types

HEADER = struct.Struct(">I")
MEMORY_EXIT = 87              # child exit status meaning "the code ran out of memory"
SETUP_FAILED_EXIT = 86        # child exit status when our own set-up failed before user code
STACK_BYTES = 64 * 2**20      # main-thread stack limit for user code
CODE_FILENAME = "<code>"      # what tracebacks show for user code
CHILD_FD_KEEP = 3             # session children keep their holder socket on this fd
SPARE_REQUEST_FD = 3          # a spare's socket to the worker: the run request comes in, SET_UP goes
                              # out; closed before the user's code, so the code cannot fake SET_UP
SPARE_REPORT_FD = 255         # a spare reports its exit status here; high, so the user's own files
                              # still start at fd 3
SET_UP = b"R"                 # the spare's set-up succeeded; sent right before the user's code
BAD_REQUEST = b"I"            # instead of SET_UP, then why: the request's files cannot be written
REPORT_DONE = ord("D")        # followed by one byte, the exit status, after the user's code
DONE_LINGER_S = 2.0           # a spare that reported done waits this long for the worker to kill it
_PR_SET_DUMPABLE = 4


# ---------------------------------------------------------------- framing (host pipes)

def encode_frame(obj: dict) -> bytes:
    body = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(body)) + body


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> dict | None:
    head = _read_exact(fd, HEADER.size)
    if head is None:
        return None
    body = _read_exact(fd, HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def write_frame(fd: int, obj: dict) -> None:
    data = memoryview(encode_frame(obj))
    while data:
        data = data[os.write(fd, data):]


# ---------------------------------------------------------------- the child: runs user code

def _set_limit(res: int, soft: int, hard: int, *, strict: bool) -> None:
    """strict: hard = soft, so the code cannot raise its own limit (every run, and every session
    block). Otherwise hard stays at the configured maxima (the worker's own set-up)."""
    # Without privileges a hard limit can only go down: never ask for more than the current one
    # (in a session, the blocks before this one may have lowered it).
    current_hard = resource.getrlimit(res)[1]
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    if strict:
        resource.setrlimit(res, (soft, soft))
        return
    resource.setrlimit(res, (min(soft, hard), hard))


def _set_run_limits(lim: dict, *, strict: bool, vm: int | None = None) -> None:
    """The rlimits that depend on the request: address space (on top of vm, our size now unless
    given) and CPU time."""
    vm = _vm_bytes() if vm is None else vm
    _set_limit(resource.RLIMIT_AS, vm + lim["memory_mb"] * 2**20, vm + lim["max_memory_mb"] * 2**20, strict=strict)
    _set_limit(resource.RLIMIT_CPU, int(lim["timeout"]) + 1, int(lim["max_timeout_s"]) + 2, strict=strict)


def _set_fixed_limits(lim: dict, *, strict: bool) -> None:
    """The rlimits that are the same for every run (the worker's configured caps)."""
    def setl(res, soft, hard):
        _set_limit(res, soft, hard, strict=strict)

    setl(resource.RLIMIT_NPROC, lim["max_processes"], lim["max_processes"])
    setl(resource.RLIMIT_NOFILE, lim["max_open_files"], lim["max_open_files"])
    setl(resource.RLIMIT_FSIZE, lim["max_file_size_mb"] * 2**20, lim["max_file_size_mb"] * 2**20)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Bounded stack: runaway recursion (with a raised recursion limit) crashes fast instead of
    # eating the whole memory budget first. Some hosts run with an unlimited stack.
    _, stack_hard = resource.getrlimit(resource.RLIMIT_STACK)
    cap = STACK_BYTES if stack_hard == resource.RLIM_INFINITY else min(STACK_BYTES, stack_hard)
    resource.setrlimit(resource.RLIMIT_STACK, (cap, cap if strict else stack_hard))


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _enter_child(lim: dict, out_fd: int, err_fd: int, *, keep_fds: dict[int, int], strict: bool,
                 run_limits: bool = True) -> None:
    """Turn a fresh fork into a clean, limited process whose fds 1/2 are the output pipes.
    keep_fds maps fds to keep to the numbers they get; every other fd is closed.
    run_limits=False leaves the per-request limits to the caller (a spare gets them later)."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    # Park the kept fds above every target first, so moving one cannot overwrite another that is
    # still to move. Not inheritable: programs the code execs do not get our control pipes.
    above = max(keep_fds.values(), default=2) + 1
    parked = {fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above): target for fd, target in keep_fds.items()}
    for fd, target in parked.items():
        os.dup2(fd, target, inheritable=False)
    keep = set(keep_fds.values())
    low = 3
    for fd in sorted(keep) + [65536]:  # close everything else
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    # Before the rlimits: RLIMIT_NOFILE forbids dup2 onto fds at or above it.
    _set_fixed_limits(lim, strict=strict)
    if run_limits:
        _set_run_limits(lim, strict=strict)
    # Line-buffered like a terminal, so output printed before a crash or os._exit is kept.
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
    sys.argv = [CODE_FILENAME]


def _fresh_main_module() -> dict:
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module  # so pickle/multiprocessing find user functions
    return module.__dict__


def _run_user_code(code: str, env: dict) -> int:
    """Run code like `python script.py` would; return the exit status."""
    linecache.cache[CODE_FILENAME] = (len(code), None, code.splitlines(True), CODE_FILENAME)
    status = 0
    try:
        exec(compile(code, CODE_FILENAME, "exec"), env)  # noqa: S102 - running it is the point (sandboxed)
    except SystemExit as e:
        status = _system_exit_status(e)
    except BaseException as e:  # noqa: BLE001 - user code may raise anything
        # Skip our own frame (this function) so the traceback starts in the user's code.
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        try:
            traceback.print_exception(type(e), e, tb)
        except BaseException:  # noqa: BLE001 - e.g. still out of memory
            os.write(2, f"{type(e).__name__}\n".encode())
        status = MEMORY_EXIT if isinstance(e, MemoryError) else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - closed or broken by the user
            pass
    return status


def _system_exit_status(e: SystemExit) -> int:
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return 1 if code == MEMORY_EXIT else code & 0xFF
    print(code, file=sys.stderr)
    return 1


# ---------------------------------------------------------------- output collection

class _Collector:
    """Reads the child's stdout/stderr pipes, keeping at most `cap` bytes in total."""

    def __init__(self, out_fd: int, err_fd: int, cap: int):
        self.fds = {out_fd: bytearray(), err_fd: bytearray()}
        self.out_fd, self.err_fd, self.cap = out_fd, err_fd, cap
        self.total = 0
        self.truncated = {out_fd: False, err_fd: False}
        for fd in self.fds:
            os.set_blocking(fd, False)

    def read(self, fd: int) -> bool:
        """Read what is available; return False at EOF."""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self.total += len(chunk)
            buf = self.fds[fd]
            room = self.cap - len(self.fds[self.out_fd]) - len(self.fds[self.err_fd])
            if room < len(chunk):
                self.truncated[fd] = True
            buf += chunk[:max(room, 0)]
            if self.over_cap:
                return True

    @property
    def over_cap(self) -> bool:
        return self.total > self.cap

    def drain(self) -> None:
        for fd in self.fds:
            if not self.over_cap:
                self.read(fd)

    def text(self, fd: int) -> str:
        return self.fds[fd].decode("utf-8", "replace")

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _classify(wait_status: int | None, killed_for: str | None, lim: dict) -> tuple[str, int | None, str, str]:
    """(status, exit_code, stderr_note, sandbox_message) for a finished child."""
    if wait_status is None:
        exit_code = None
    elif os.WIFSIGNALED(wait_status):
        exit_code = -os.WTERMSIG(wait_status)
    else:
        exit_code = os.waitstatus_to_exitcode(wait_status)
    if killed_for == "timeout":
        return "timeout", exit_code, "", f"TimeoutError: execution exceeded {lim['timeout']:g} s"
    if killed_for == "output_limit":
        return ("output_limit", exit_code, "",
                f"OutputLimitError: output exceeded {lim['max_output_bytes']} bytes; execution stopped")
    if exit_code == -signal.SIGXCPU:
        return "timeout", exit_code, "", f"TimeoutError: execution exceeded {lim['timeout']:g} s of CPU time"
    if exit_code == MEMORY_EXIT:  # Python itself exits 1 after an uncaught MemoryError
        return "memory", 1, "", f"MemoryError: exceeded the memory limit of {lim['memory_mb']} MB"
    if exit_code == 0:
        return "ok", 0, "", ""
    if exit_code is not None and exit_code < 0:
        sig = -exit_code
        desc = signal.strsignal(sig) or ""
        return "error", exit_code, f"\nProcess terminated by {_signal_name(sig)} ({desc})\n", ""
    return "error", exit_code, "", ""


def _result(collector: _Collector, wait_status, killed_for, lim, t0: float, **extra) -> dict:
    status, exit_code, note, message = _classify(wait_status, killed_for, lim)
    stderr = collector.text(collector.err_fd) + note
    return {
        "op": "result", "status": status, "exit_code": exit_code,
        "stdout": collector.text(collector.out_fd), "stderr": stderr,
        "stdout_truncated": collector.truncated[collector.out_fd],
        "stderr_truncated": collector.truncated[collector.err_fd],
        "duration_s": time.monotonic() - t0, "sandbox_message": message, **extra,
    }


# ---------------------------------------------------------------- process cleanup

def _reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_namespace(keep: set[int], deadline_s: float = 5.0, child_pidfd: int | None = None) -> bool:
    """Kill every process in our private pid namespace except `keep` and ourselves; wait until
    they are gone. kill(-1) is atomic against fork bombs (no fork completes after it).
    child_pidfd: the main victim, usually the last; waited for without polling /proc."""
    me = os.getpid()
    if not keep:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + deadline_s
    if child_pidfd is not None:
        select.select([child_pidfd], [], [], deadline_s)
    while time.monotonic() < end:
        _reap_zombies()
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me and int(p) not in keep]
        if not others:
            return True
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.0005)
    return False


def _wipe_dir(path: str) -> bool:
    """Empty a scratch dir, even if the code chmod-ed things away or nested directories deeper
    than any path can name. Iterative, one directory fd at a time, every step relative to it:
    no recursion limit, no PATH_MAX. Returns False if something is left."""
    try:
        os.chmod(path, 0o1777)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    names: list[str] = []  # the way down from `path` to where fd points
    budget = 10_000_000    # entries visited at most; a tmpfs cannot hold more than this anyway
    try:
        while budget > 0:
            budget -= 1
            child = _first_entry(fd)
            if child is not None:
                name, is_dir = child
                if not is_dir:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=fd)
                    continue
                with contextlib.suppress(OSError):
                    os.chmod(name, 0o700, dir_fd=fd, follow_symlinks=False)
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError:
                    return False
                os.close(fd)
                fd, names = sub, names + [name]
                continue
            if not names:  # the top is empty
                return True
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            try:
                os.rmdir(names.pop(), dir_fd=fd)
            except OSError:
                return False
        return False
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _first_entry(dir_fd: int) -> tuple[str, bool] | None:
    """One entry of the directory (name, is a real directory), or None if it is empty."""
    with os.scandir(dir_fd) as it:
        for entry in it:
            return entry.name, entry.is_dir(follow_symlinks=False)
    return None


_LIBC = ctypes.CDLL(None, use_errno=True)


def _remove_sysv_ipc() -> bool:
    """Remove every SysV shared-memory segment, message queue and semaphore set of our IPC
    namespace: they would outlive the run that made them. False if one could not be removed."""
    clean = True
    for table, remove in (("shm", lambda i: _LIBC.shmctl(i, 0, None)), ("msg", lambda i: _LIBC.msgctl(i, 0, None)),
                          ("sem", lambda i: _LIBC.semctl(i, 0, 0))):  # 0 = IPC_RMID
        try:
            with open(f"/proc/sysvipc/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            ident = int(row.split()[1])
            if remove(ident) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.EIDRM):
                clean = False
    return clean


MQUEUE_DIR = "/dev/mqueue"  # mounted by the host's bwrap command (isolation.py)
_ROOT_TIME_NS = 0           # what the scratch roots' atime and mtime are reset to


def _remove_posix_mqueues() -> bool:
    """Remove every POSIX message queue of our IPC namespace. False if one could not be removed."""
    try:
        names = os.listdir(MQUEUE_DIR)
    except FileNotFoundError:
        return True  # not mounted (an older host command): nothing we could list
    except OSError:
        return False
    clean = True
    for name in names:
        try:
            os.unlink(os.path.join(MQUEUE_DIR, name))
        except FileNotFoundError:
            pass
        except OSError:
            clean = False
    return clean


def _reset_root(path: str) -> bool:
    """Drop the extended attributes code can set on a scratch mount root (user.*, ACLs; trusted.*
    and security.* need capabilities it lacks) and reset its mode and times."""
    try:
        for name in os.listxattr(path, follow_symlinks=False):
            if name.startswith(("user.", "system.posix_acl_")):
                os.removexattr(path, name, follow_symlinks=False)
        os.chmod(path, 0o1777)
        os.utime(path, ns=(_ROOT_TIME_NS, _ROOT_TIME_NS), follow_symlinks=False)
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- the spare child

_DONE, _KEEP, _FORGET = "done", "keep", "forget"  # what a _supervise watcher answers


class _Spare:
    """Worker-side handles of a forked child that waits for its run request."""

    def __init__(self, pid: int, pidfd: int, request: socket.socket, report_r: int, out_r: int, err_r: int):
        self.pid, self.pidfd = pid, pidfd
        self.request, self.report_r = request, report_r
        self.out_r, self.err_r = out_r, err_r

    def discard(self) -> None:
        """Close our ends and reap it (it must be dead already)."""
        self.request.close()
        for fd in (self.pidfd, self.report_r, self.out_r, self.err_r):
            os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _spare_main(fixed_limits: dict, out_w: int, err_w: int, request_fd: int, report_w: int) -> None:
    """Body of a spare: set up, wait for the request, run it, report, exit. Never returns."""
    status = SETUP_FAILED_EXIT
    try:
        _enter_child(fixed_limits, out_w, err_w, keep_fds={request_fd: SPARE_REQUEST_FD, report_w: SPARE_REPORT_FD},
                     strict=True, run_limits=False)
        _raise_oom_score()
        vm = _vm_bytes()  # measured now, while we wait, instead of on the critical path
        report_pipe = _file_identity(SPARE_REPORT_FD)
        request = read_frame(SPARE_REQUEST_FD)
        if request is None:  # the worker is gone, or dropped us: nothing to run
            os._exit(0)
        try:
            _prepare_io(request)
        except OSError as e:  # colliding or over-long names...: the request's fault, not ours
            why = f"files: cannot write {e.filename!r}: {e.strerror or e}"
            os.write(SPARE_REQUEST_FD, BAD_REQUEST + why.encode("utf-8", "replace")[:2000])
            os._exit(0)
        _set_run_limits(request["limits"], strict=True, vm=vm)
        main = _fresh_main_module()
        # On the request socket, which the worker only reads afterwards: writing it does not wake
        # the worker (and take a CPU from the code) now.
        os.write(SPARE_REQUEST_FD, SET_UP)
        os.close(SPARE_REQUEST_FD)
        status = _run_user_code(request["code"], main)
        try:
            # Only if the fd is still our pipe: the code may have closed it or put its own file there
            # (then the worker just waits for our exit).
            if _file_identity(SPARE_REPORT_FD) == report_pipe:
                os.write(SPARE_REPORT_FD, bytes((REPORT_DONE, status)))
                # Get off the CPU so the worker can answer at once; it kills us in its cleanup.
                # Exiting now would first unmap our ~170 MB, competing with it for the CPU.
                time.sleep(DONE_LINGER_S)
        except BaseException:  # noqa: BLE001, S110 - the code broke something of ours: the worker waits for our exit
            pass
    except BaseException:  # noqa: BLE001 - our set-up failed: say why on stderr
        traceback.print_exc()
    finally:
        os._exit(status)


def _prepare_io(request: dict) -> None:
    """Write the request's files into the working directory and give its stdin to fd 0."""
    for path, data in request.get("files", {}).items():
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
    if request.get("stdin"):
        fd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)  # unnamed: nothing left in the scratch dir
        data = memoryview(request["stdin"].encode("utf-8", "surrogatepass"))
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
        os.close(fd)


def fetch_files(root: str, paths: list[str], budget: int) -> tuple[dict[str, str], list[str]]:
    """Read the named regular files below root (base64), within budget bytes in all. Runs in
    the worker after the code has ended: no symlink is followed at the last component, no FIFO
    or device is opened for reading. Returns (files, paths left out for size)."""
    found, skipped = {}, []
    for path in paths:
        try:
            fd = os.open(os.path.join(root, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_size > budget:
                skipped.append(path)
                continue
            data = os.read(fd, st.st_size + 1)
            while len(data) <= st.st_size and (more := os.read(fd, st.st_size + 1 - len(data))):
                data += more
            data = data[:budget]
            budget -= len(data)
            found[path] = base64.b64encode(data).decode("ascii")
        finally:
            os.close(fd)
    return found, skipped


def _file_identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Report:
    """Reads a spare's report pipe: REPORT_DONE + exit status.

    The user's code can write here too (it runs in the same process). That can only make the
    worker answer early with a status the code chose, which it could get by exiting anyway:
    the cleanup that follows kills it like any leftover."""

    def __init__(self, fd: int):
        self.fd = fd
        self.exit_status: int | None = None
        self._tail = b""
        os.set_blocking(fd, False)

    def on_readable(self) -> str:
        """Read what is there; _DONE once the exit status is known, _FORGET at end of file."""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                return _FORGET
            self._tail = (self._tail + chunk)[-2:]
        if len(self._tail) == 2 and self._tail[0] == REPORT_DONE:
            self.exit_status = self._tail[1]
            return _DONE
        return _KEEP


# ---------------------------------------------------------------- the worker

class Worker:
    def __init__(self, init: dict, host_in: int, host_out: int):
        self.cfg = init
        self.host_in, self.host_out = host_in, host_out
        self.isolated = init["isolated"]       # pid 1 of a private pid namespace
        self.scratch = init["scratch"]
        self.session = init["mode"] == "session"
        self.holder_pid: int | None = None
        self.holder_sock: socket.socket | None = None
        self.spare: _Spare | None = None
        self.spare_error = ""

    # -- start-up
    def prepare(self) -> dict:
        if self.isolated and os.getpid() != 1:
            raise RuntimeError(f"expected to be pid 1 of a private pid namespace, am pid {os.getpid()}")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:  # not dumpable: user code cannot ptrace us or open our /proc/<pid>/fd
            ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        os.chdir(self.scratch)
        # A spare parks fds above SPARE_REPORT_FD while it sets up: make sure that is allowed.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1024 and soft != resource.RLIM_INFINITY:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard) if hard != resource.RLIM_INFINITY else 1024, hard))
        loaded, failed = [], {}
        for name in self.cfg["preload"]:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception as e:  # noqa: BLE001 - reported to the host, which warns
                failed[name] = f"{type(e).__name__}: {e}"
        if self.cfg.get("warmup"):
            try:
                exec(compile(self.cfg["warmup"], "<warmup>", "exec"), {})  # noqa: S102 - our own warm-up code
            except Exception as e:  # noqa: BLE001
                failed["<warmup>"] = f"{type(e).__name__}: {e}"
        if self.session:
            _FORK_HOOKS.snapshot()
        # Park everything imported so far outside the collector's reach: forks then do not
        # touch (and copy) those pages when the garbage collector runs in them.
        gc.collect()
        gc.freeze()
        if self.session:
            self._spawn_holder()
        return {"op": "ready", "pid": os.getpid(), "uid": os.getuid(), "python": sys.version.split()[0],
                "preloaded": loaded, "failed": failed, "hostname": socket.gethostname(),
                "net_interfaces": _net_interfaces(), "vm_kb": _vm_bytes() // 1024}

    def serve(self) -> None:
        write_frame(self.host_out, self.prepare())
        if not self.session:
            self._fork_spare()
        while True:
            req = read_frame(self.host_in)
            if req is None or req.get("op") == "close":
                return
            if req.get("op") == "ping":
                write_frame(self.host_out, {"op": "pong"})
                continue
            lim = {**self.cfg["limits"], "timeout": req["timeout"], "memory_mb": req["memory_mb"]}
            if self.session:
                write_frame(self.host_out, self._exec_session(req["code"], lim))
                continue
            result, used = self._exec_stateless(req, lim)
            write_frame(self.host_out, result)  # the caller has its answer; now make us clean again
            clean = self._clean_up_after(used)
            self._fork_spare()
            write_frame(self.host_out, {"op": "idle", "recycle": not clean})

    # -- stateless execution
    def _fork_spare(self) -> None:
        """Fork the child that will run the next request and let it set itself up meanwhile."""
        self.spare = None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request, request_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        report_r, report_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (out_r, out_w, err_r, err_w, report_r, report_w):
                os.close(fd)
            request.close()
            request_theirs.close()
            self.spare_error = f"worker could not fork: {e}"
            return
        if pid == 0:
            _spare_main(self.cfg["limits"], out_w, err_w, request_theirs.fileno(), report_w)
        request_theirs.close()
        for fd in (out_w, err_w, report_w):
            os.close(fd)
        self.spare = _Spare(pid, os.pidfd_open(pid), request, report_r, out_r, err_r)

    def _exec_stateless(self, request: dict, lim: dict) -> tuple[dict, _Spare | None]:
        """Run code in the spare; return the result and the spare that ran it (None if there was
        none), for the cleanup."""
        t0 = time.monotonic()
        if self.spare is not None and select.select([self.spare.pidfd], [], [], 0)[0]:
            self.spare.discard()  # it died while waiting (killed from outside?): fork a fresh one
            self.spare = None
        if self.spare is None:  # the last fork failed, or the spare died: one more try
            self._fork_spare()
        spare, self.spare = self.spare, None
        if spare is None:
            return {"op": "result", "status": "sandbox_error", "sandbox_message": self.spare_error,
                    "recycle": True}, None
        try:
            write_frame(spare.request.fileno(), {"code": request["code"], "limits": lim,
                                                 "stdin": request.get("stdin"), "files": request.get("files", {})})
        except OSError:
            pass  # the spare died: it never says SET_UP, which is handled below
        collector = _Collector(spare.out_r, spare.err_r, lim["max_output_bytes"])
        report = _Report(spare.report_r)
        watchers = {spare.pidfd: lambda: _DONE, report.fd: report.on_readable}
        killed_for = self._supervise(collector, watchers, lim, kill=lambda: _kill_quiet(spare.pid))
        if killed_for is None and report.exit_status is not None:
            # It finished and said how. Its exit (unmapping ~170 MB) is the cleanup's business.
            wait_status = _exit_status_to_wait(report.exit_status)
        else:
            _, wait_status = os.waitpid(spare.pid, 0)
            report.on_readable()  # whatever it managed to say before it ended
        collector.drain()
        collector.close()
        os.close(report.fd)
        spare.request.setblocking(False)
        try:
            said = spare.request.recv(4096)  # SET_UP, sent before the code ran, if at all
        except OSError:
            said = b""
        spare.request.close()
        set_up = said[:1] == SET_UP
        if said[:1] == BAD_REQUEST:  # no code ran; the worker is fine, the request was not
            return {"op": "result", "status": "invalid_request",
                    "sandbox_message": said[1:].decode("utf-8", "replace")}, spare
        if not set_up:  # died before the user's code started: that is on us
            return {"op": "result", "status": "sandbox_error", "recycle": True,
                    "sandbox_message": "execution set-up failed in the worker: "
                                       + collector.text(collector.err_fd)[-2000:]}, spare
        result = _result(collector, wait_status, killed_for, lim, t0)
        if request.get("fetch_files"):
            result["files"], skipped = fetch_files(self.scratch, request["fetch_files"], request["max_fetch_bytes"])
            if skipped:
                result["sandbox_message"] += (f" fetch_files: left out, over {request['max_fetch_bytes']} bytes: "
                                              + ", ".join(skipped)).lstrip()
        return result, spare

    def _clean_up_after(self, spare: _Spare | None) -> bool:
        """Kill what the last run left, reap its child, wipe the scratch dirs; False if not clean."""
        if self.isolated:  # reaps the child too
            clean = _kill_namespace(keep=set(), child_pidfd=spare.pidfd if spare else None)
        else:
            if spare is not None:
                _kill_quiet(-spare.pid)  # no pid namespace: the child's process group is all we can reach
                with contextlib.suppress(ChildProcessError):  # already reaped if it was killed
                    os.waitpid(spare.pid, 0)
            clean = True
        if spare is not None:
            os.close(spare.pidfd)
        clean = _wipe_dir(self.scratch) and clean
        if self.isolated:  # our own /dev/shm and IPC namespace; unisolated runs share the host's
            clean = _wipe_dir("/dev/shm") and clean
            clean = _remove_sysv_ipc() and clean
            clean = _remove_posix_mqueues() and clean
            # The mount roots themselves outlive the wipe: their xattrs (up to 64 KB a value) and
            # times would carry a message to the next run.
            clean = _reset_root(self.scratch) and _reset_root("/dev/shm") and clean
        return clean

    def _supervise(self, collector: _Collector, watchers: dict, lim: dict, kill) -> str | None:
        """Pump output until a watcher (fd -> callable run when the fd is readable) answers _DONE,
        the deadline passes, or the output cap is exceeded. Returns why we killed the child, or None.
        A watcher may add watchers to the dict; they are polled from then on."""
        deadline = time.monotonic() + lim["timeout"]
        poller = select.poll()
        open_pipes = set(collector.fds)
        registered = set()
        for fd in (*collector.fds, *watchers):
            poller.register(fd, select.POLLIN)
            registered.add(fd)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                kill()
                return "timeout"
            for fd, _ev in poller.poll(max(1, int(left * 1000))):
                if fd in open_pipes:
                    if not collector.read(fd):
                        poller.unregister(fd)
                        open_pipes.discard(fd)
                    if collector.over_cap:
                        kill()
                        return "output_limit"
                    continue
                if fd not in registered:
                    continue
                verdict = watchers[fd]()
                if verdict == _DONE:
                    return None
                if verdict == _FORGET:
                    poller.unregister(fd)
                    registered.discard(fd)
            for fd in watchers.keys() - registered:
                poller.register(fd, select.POLLIN)
                registered.add(fd)

    # -- session execution
    def _spawn_holder(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                os.closerange(3, theirs.fileno())
                os.closerange(theirs.fileno() + 1, 65536)
                _holder_loop(theirs, _fresh_main_module())
            finally:
                os._exit(0)
        theirs.close()
        self.holder_pid, self.holder_sock = pid, ours

    def _exec_session(self, code: str, lim: dict) -> dict:
        """Run one block of a session. Only what this process observes decides the outcome: the
        block is over when its runner process has exited (its pidfd), never on a message, which
        the block's own code could forge; everything but the session's holder is killed after."""
        t0 = time.monotonic()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        body = json.dumps({"code": code, "limits": lim}).encode("utf-8", "surrogatepass")
        sock = self.holder_sock
        _signal_quiet(self.holder_pid, signal.SIGCONT)  # stopped between blocks (below)
        try:
            socket.send_fds(sock, [HEADER.pack(len(body))], [out_w, err_w])
            sock.sendall(body)
        except OSError:
            pass  # the holder is gone: no runner is reported, handled below like a broken holder
        os.close(out_w)
        os.close(err_w)
        collector = _Collector(out_r, err_r, lim["max_output_bytes"])
        messages = _HolderMessages(sock)
        runner = {"pidfd": None}

        def on_message() -> str:
            messages.read()
            if messages.runner in (os.getpid(), self.holder_pid):
                messages.runner = None  # not a runner: only a fresh fork of the holder can be one
            if runner["pidfd"] is None and messages.runner is not None:
                try:
                    runner["pidfd"] = os.pidfd_open(messages.runner)
                except OSError:  # already gone (or not a pid of ours): nothing to wait for
                    return _DONE
                watchers[runner["pidfd"]] = on_runner_exit  # _supervise polls it from now on
            if messages.lost:
                return _DONE if runner["pidfd"] is None else _FORGET
            return _KEEP

        def on_runner_exit() -> str:
            return _DONE

        def kill():
            if messages.runner:
                _kill_quiet(messages.runner)
            else:
                _kill_quiet(self.holder_pid)

        watchers = {sock.fileno(): on_message}
        killed_for = self._supervise(collector, watchers, lim, kill)
        # The holder reports the runner's exit status once it has reaped it.
        end = time.monotonic() + 2.0
        while messages.exited is None and not messages.lost and time.monotonic() < end:
            if select.select([sock], [], [], 0.05)[0]:
                messages.read()
        if runner["pidfd"] is not None:
            os.close(runner["pidfd"])
        old_holder = self.holder_pid
        completed = (killed_for is None and messages.runner is not None and messages.new_holder is not None
                     and messages.new_holder not in (old_holder, os.getpid()) and _alive(messages.new_holder))
        if completed:
            _kill_quiet(old_holder)
            self.holder_pid = messages.new_holder
        wait_status = messages.exited
        if wait_status is None and messages.done is not None and killed_for is None:
            wait_status = _exit_status_to_wait(messages.done)
        collector.drain()
        if self.isolated:
            _kill_namespace(keep={self.holder_pid} if _alive(self.holder_pid) else set())
        elif messages.runner and messages.runner != self.holder_pid:
            # No pid namespace: the runner's process group is all we can reach.
            _kill_quiet(-messages.runner)
        collector.drain()
        collector.close()
        note = ""
        if messages.runner is None and killed_for is None and not messages.lost:
            wait_status = None  # the holder never started the block
        if messages.runner is None or not _alive(self.holder_pid):
            # No runner ever reported: the holder is broken (killed, or replaced by the code).
            _kill_quiet(self.holder_pid)
            sock.close()
            if self.isolated:
                _kill_namespace(keep=set())
            self._spawn_holder()
            note = ("\nSessionReset: the session's interpreter process was lost; "
                    "earlier definitions are gone and later blocks start from a fresh state.\n")
        elif completed or messages.exited is not None:
            # Between blocks the holder stays stopped: nothing of the session runs until the next
            # block (it has said all it will about this one: a new holder says nothing until asked).
            _signal_quiet(self.holder_pid, signal.SIGSTOP)
        result = _result(collector, wait_status, killed_for, lim, t0, session_reset=bool(note),
                         state_advanced=completed and not note)
        result["stderr"] += note
        if result["status"] == "ok" and (note or not completed):
            result["status"] = "error"
        return result


class _HolderMessages:
    """Lines the session's processes send on the holder socket. The block's code can write there
    too, so they only ever name pids to look at; a bounded buffer keeps garbage harmless."""

    LIMIT = 65536

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.runner: int | None = None
        self.done: int | None = None
        self.new_holder: int | None = None
        self.exited: int | None = None
        self.lost = False
        self._buf = bytearray()
        sock.setblocking(False)

    def read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.lost = True
                return
            self._buf += chunk
            if len(self._buf) > self.LIMIT:
                del self._buf[:-self.LIMIT // 2]
            while b"\n" in self._buf:
                line, _, rest = bytes(self._buf).partition(b"\n")
                self._buf[:] = rest
                self._take(line)

    def _take(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        for key, attr in (("runner", "runner"), ("done", "done"), ("holder", "new_holder"), ("exited", "exited")):
            value = msg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 \
                    and (attr != "runner" or self.runner is None):  # the first runner report is the holder's
                setattr(self, attr, value)


class _ForkHooks:
    """The interpreter's lists of `os.register_at_fork` hooks, reset to what they held when the
    worker was ready (the libraries' own hooks, such as `random`'s reseed).

    CPython keeps them in three plain lists that Python code cannot name; a hook of our own,
    registered once at start-up, is found in each of them by the garbage collector's referrers."""

    def __init__(self) -> None:
        self.saved: list[tuple[list, list]] = []

    @staticmethod
    def _marker() -> None:
        pass

    def snapshot(self) -> None:
        os.register_at_fork(before=self._marker, after_in_parent=self._marker, after_in_child=self._marker)
        lists = [ref for ref in gc.get_referrers(_ForkHooks._marker) if type(ref) is list]
        if len(lists) != 3:
            raise RuntimeError(f"cannot find the interpreter's fork-hook lists (found {len(lists)})")
        self.saved = [(hooks, list(hooks)) for hooks in lists]

    def restore(self) -> None:
        for hooks, saved in self.saved:
            hooks[:] = saved


_FORK_HOOKS = _ForkHooks()


def _holder_loop(sock: socket.socket, env: dict) -> None:
    """Hold a session's globals. Each block runs in a fork (the runner); when the block's code is
    done, the runner forks the next holder, single-threaded (threads the code left behind do not
    survive a fork), and exits; otherwise this holder and its state stay."""
    while True:
        req, fds = _receive_block(sock)
        if req is None:
            os._exit(0)
        out_w, err_w = fds
        pid = os.fork()
        if pid == 0:
            try:
                _enter_child(req["limits"], out_w, err_w, keep_fds={sock.detach(): CHILD_FD_KEEP}, strict=True)
                _raise_oom_score()
                sock = socket.socket(fileno=CHILD_FD_KEEP)
                sock.sendall(json.dumps({"runner": os.getpid()}).encode() + b"\n")
                status = _run_user_code(req["code"], env)
                # The next holder is forked from the code's state, but none of the code's fork
                # hooks may run in it: there they would run between blocks, outside every clock.
                _FORK_HOOKS.restore()
                holder = os.fork()
                if holder == 0:
                    os.setsid()
                    devnull = os.open("/dev/null", os.O_RDWR)
                    os.dup2(devnull, 1)
                    os.dup2(devnull, 2)
                    _holder_loop(sock, env)
                    os._exit(0)
                sock.sendall(json.dumps({"done": status, "holder": holder}).encode() + b"\n")
            except BaseException:  # noqa: BLE001 - report as a failed block, keep the old holder
                os._exit(1)
            os._exit(status)
        os.close(out_w)
        os.close(err_w)
        _, wait_status = os.waitpid(pid, 0)
        sock.sendall(json.dumps({"exited": wait_status}).encode() + b"\n")


def _receive_block(sock: socket.socket) -> tuple[dict | None, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, 2)
    if not head:
        return None, []
    while len(head) < HEADER.size:
        more = sock.recv(HEADER.size - len(head))
        if not more:
            return None, []
        head += more
    size = HEADER.unpack(head)[0]
    body = bytearray()
    while len(body) < size:
        more = sock.recv(size - len(body))
        if not more:
            return None, []
        body += more
    return json.loads(body), fds


def _raise_oom_score() -> None:
    """Make this process the memory cgroup's first OOM victim, not the worker."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")


def _exit_status_to_wait(code: int) -> int:
    return (code & 0xFF) << 8


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_quiet(pid: int) -> None:
    _signal_quiet(pid, signal.SIGKILL)


def _signal_quiet(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _net_interfaces() -> list[str]:
    try:
        with open("/proc/net/dev") as f:
            return [line.split(":")[0].strip() for line in f.readlines()[2:]]
    except OSError:
        return []


def main() -> None:
    # The host talks on fds 0/1. Move them away so stray prints (ours or a library's) cannot
    # corrupt the protocol: fd 1 becomes a copy of stderr, which the host logs.
    host_in, host_out = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    init = read_frame(host_in)
    if init is None:
        return
    try:
        worker = Worker(init, host_in, host_out)
        worker.serve()
    except BaseException as e:  # noqa: BLE001 - tell the host why we died, then die
        traceback.print_exc()
        try:
            write_frame(host_out, {"op": "fatal", "message": f"{type(e).__name__}: {e}"})
        except OSError as write_error:
            if write_error.errno != errno.EPIPE:
                raise
        os._exit(1)


if __name__ == "__main__":
    main()
