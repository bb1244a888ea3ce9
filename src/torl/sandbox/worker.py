"""The sandbox worker ("zygote"): runs INSIDE the isolation and executes untrusted code in forks.

Standalone on purpose: standard library only, no torl imports. The host bind-mounts just this
file into the sandbox, whose filesystem does not contain the torl checkout.

Life of a worker: the host starts it (inside bwrap, as pid 1 of a private pid namespace), sends
an `init` frame; the worker pre-imports the math stack and answers `ready`. Then for every `exec`
frame it forks a child (copy-on-write, so imports are already warm), the child sets its limits
and runs the code; the worker collects the output, enforces the wall clock and output cap, then
kills every other process in its namespace and wipes the scratch dir before answering `result`.

Being pid 1 matters: the kernel drops SIGKILL/SIGSTOP sent to a namespace's init from inside it,
so user code cannot kill the worker (`os.kill(os.getppid(), 9)` is a no-op).

Session mode (one worker per session): a *holder* process keeps the user's globals. Each block
runs in a fork of the holder; if the block completes (ok or a caught exception) that fork becomes
the new holder, otherwise (timeout, crash, memory kill) the previous holder and its state are kept.

Wire format on the host pipes: 4-byte big-endian length + UTF-8 JSON object.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import importlib
import io
import json
import linecache
import os
import resource
import select
import shutil
import signal
import socket
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

def _set_limits(lim: dict, *, strict: bool) -> None:
    """Per-execution rlimits. strict: hard = soft (stateless). Sessions keep hard at the
    configured maxima because later blocks of the same process lineage may need more."""
    def setl(res, soft, hard):
        if strict:
            resource.setrlimit(res, (soft, soft))
            return
        # Without privileges a hard limit can only go down: keep the lineage's first one.
        current_hard = resource.getrlimit(res)[1]
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        resource.setrlimit(res, (min(soft, hard), hard))

    vm = _vm_bytes()
    setl(resource.RLIMIT_AS, vm + lim["memory_mb"] * 2**20, vm + lim["max_memory_mb"] * 2**20)
    cpu = int(lim["timeout"]) + 1
    setl(resource.RLIMIT_CPU, cpu, int(lim["max_timeout_s"]) + 2)
    setl(resource.RLIMIT_NPROC, lim["max_processes"], lim["max_processes"])
    setl(resource.RLIMIT_NOFILE, lim["max_open_files"], lim["max_open_files"])
    setl(resource.RLIMIT_FSIZE, lim["max_file_size_mb"] * 2**20, lim["max_file_size_mb"] * 2**20)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Bounded stack: runaway recursion (with a raised recursion limit) crashes fast instead of
    # eating the whole memory budget first. Some hosts run with an unlimited stack.
    stack_soft, stack_hard = resource.getrlimit(resource.RLIMIT_STACK)
    cap = STACK_BYTES if stack_hard == resource.RLIM_INFINITY else min(STACK_BYTES, stack_hard)
    resource.setrlimit(resource.RLIMIT_STACK, (cap, cap if strict else stack_hard))


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _enter_child(lim: dict, out_fd: int, err_fd: int, *, keep_fd: int | None, strict: bool,
                 ready_fd: int | None = None) -> None:
    """Turn a fresh fork into a clean, limited process whose fds 1/2 are the output pipes.
    One byte on ready_fd tells the worker that set-up (our part) succeeded."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    if keep_fd is not None and keep_fd != CHILD_FD_KEEP:
        os.dup2(keep_fd, CHILD_FD_KEEP)
    _set_limits(lim, strict=strict)
    if ready_fd is not None:
        os.write(ready_fd, b"1")
    os.closerange(3 if keep_fd is None else CHILD_FD_KEEP + 1, 65536)
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
        exec(compile(code, CODE_FILENAME, "exec"), env)
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
        except BaseException:  # noqa: BLE001 - closed or broken by the user
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
    if exit_code == MEMORY_EXIT:
        return "memory", exit_code, "", f"MemoryError: exceeded the memory limit of {lim['memory_mb']} MB"
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


def _kill_namespace(keep: set[int], deadline_s: float = 5.0) -> bool:
    """Kill every process in our private pid namespace except `keep` and ourselves; wait until
    they are gone. kill(-1) is atomic against fork bombs (no fork completes after it)."""
    me = os.getpid()
    if not keep:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    end = time.monotonic() + deadline_s
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
    """Empty a scratch dir, even if the code chmod-ed things away. Returns False if it failed."""
    def fix_and_retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    try:
        os.chmod(path, 0o1777)
        entries = list(os.scandir(path))
    except OSError:
        return False
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, onerror=fix_and_retry)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    try:
        return not os.listdir(path)
    except OSError:
        return False


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
        loaded, failed = [], {}
        for name in self.cfg["preload"]:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception as e:  # noqa: BLE001 - reported to the host, which warns
                failed[name] = f"{type(e).__name__}: {e}"
        if self.cfg.get("warmup"):
            try:
                exec(compile(self.cfg["warmup"], "<warmup>", "exec"), {})
            except Exception as e:  # noqa: BLE001
                failed["<warmup>"] = f"{type(e).__name__}: {e}"
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
        while True:
            req = read_frame(self.host_in)
            if req is None or req.get("op") == "close":
                return
            if req.get("op") == "ping":
                write_frame(self.host_out, {"op": "pong"})
                continue
            lim = {**self.cfg["limits"], "timeout": req["timeout"], "memory_mb": req["memory_mb"]}
            run = self._exec_session if self.session else self._exec_stateless
            write_frame(self.host_out, run(req["code"], lim))

    # -- stateless execution
    def _exec_stateless(self, code: str, lim: dict) -> dict:
        t0 = time.monotonic()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (out_r, out_w, err_r, err_w, ready_r, ready_w):
                os.close(fd)
            return {"op": "result", "status": "sandbox_error", "sandbox_message": f"worker could not fork: {e}",
                    "recycle": True}
        if pid == 0:
            status = SETUP_FAILED_EXIT
            try:
                _enter_child(lim, out_w, err_w, keep_fd=None, strict=True, ready_fd=ready_w)
                status = _run_user_code(code, _fresh_main_module())
            except BaseException:  # noqa: BLE001 - our set-up failed: say why on stderr
                traceback.print_exc()
            finally:
                os._exit(status)
        for fd in (out_w, err_w, ready_w):
            os.close(fd)
        collector = _Collector(out_r, err_r, lim["max_output_bytes"])
        pidfd = os.pidfd_open(pid)
        killed_for = self._supervise(collector, [pidfd], lim, kill=lambda: _kill_quiet(pid))
        os.close(pidfd)
        _, wait_status = os.waitpid(pid, 0)
        collector.drain()
        clean = self._cleanup(keep=set(), child=pid)
        collector.drain()
        collector.close()
        clean = _wipe_dir(self.scratch) and clean
        if self.isolated:
            clean = _wipe_dir("/dev/shm") and clean
        set_up = os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        if not set_up:  # died before the user's code started: that is on us
            return {"op": "result", "status": "sandbox_error", "recycle": True,
                    "sandbox_message": "execution set-up failed in the worker: "
                                       + collector.text(collector.err_fd)[-2000:]}
        return _result(collector, wait_status, killed_for, lim, t0, recycle=not clean)

    def _supervise(self, collector: _Collector, done_fds: list[int], lim: dict, kill, on_done=None) -> str | None:
        """Pump output until a fd in done_fds is readable (and on_done(fd) says so), the deadline
        passes, or the output cap is exceeded. Returns why we killed the child, or None."""
        deadline = time.monotonic() + lim["timeout"]
        poller = select.poll()
        open_pipes = set(collector.fds)
        for fd in (*collector.fds, *done_fds):
            poller.register(fd, select.POLLIN)
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
                elif on_done is None or on_done(fd):
                    return None

    def _cleanup(self, keep: set[int], child: int) -> bool:
        if self.isolated:
            return _kill_namespace(keep)
        _kill_quiet(-child)  # no pid namespace: the child's process group is all we can reach
        return True

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
        t0 = time.monotonic()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        body = json.dumps({"code": code, "limits": lim}).encode("utf-8", "surrogatepass")
        sock = self.holder_sock
        socket.send_fds(sock, [HEADER.pack(len(body))], [out_w, err_w])
        sock.sendall(body)
        os.close(out_w)
        os.close(err_w)
        collector = _Collector(out_r, err_r, lim["max_output_bytes"])
        state = {"runner": None, "done": None, "exited": None, "lost": False}
        buf = bytearray()
        sock.setblocking(False)

        def on_message(fd: int) -> bool:
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                return False
            if not chunk:
                state["lost"] = True
                return True
            buf.extend(chunk)
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue  # garbage written by the user's code into its own session socket
                for key in ("runner", "done", "exited"):
                    if key in msg and isinstance(msg[key], int):
                        state[key] = msg[key]
            return state["done"] is not None or state["exited"] is not None

        def kill():
            _kill_quiet(state["runner"] if state["runner"] else self.holder_pid)

        killed_for = self._supervise(collector, [sock.fileno()], lim, kill, on_done=on_message)
        if killed_for is not None:  # wait briefly for the holder to report the runner's death
            end = time.monotonic() + 2.0
            while state["exited"] is None and state["done"] is None and not state["lost"] and time.monotonic() < end:
                if select.select([sock], [], [], 0.05)[0]:
                    on_message(sock.fileno())
        sock.setblocking(True)
        note = ""
        if state["runner"] is None and not state["lost"] and killed_for is None:
            _kill_quiet(self.holder_pid)  # set-up failed before user code: recycle the worker
            collector.close()
            return {"op": "result", "status": "sandbox_error", "recycle": True,
                    "sandbox_message": "session block set-up failed in the worker"}
        if state["done"] is not None and killed_for is None:
            # The runner completed the block: it is the new holder, the old one goes.
            _kill_quiet(self.holder_pid)
            self.holder_pid = state["runner"]
            wait_status = _exit_status_to_wait(state["done"])
        else:
            wait_status = state["exited"]
        collector.drain()
        self._cleanup(keep={self.holder_pid} if _alive(self.holder_pid) else set(), child=state["runner"] or 0)
        collector.drain()
        collector.close()
        if not _alive(self.holder_pid):
            sock.close()
            self._spawn_holder()
            note = ("\nSessionReset: the session's interpreter process was killed; "
                    "earlier definitions are lost and later blocks start from a fresh state.\n")
        result = _result(collector, wait_status, killed_for, lim, t0, session_reset=bool(note))
        result["stderr"] += note
        if result["status"] == "ok" and note:
            result["status"] = "error"
        return result


def _holder_loop(sock: socket.socket, env: dict) -> None:
    """Hold a session's globals; run each block in a fork that becomes the next holder on success."""
    while True:
        head, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, 2)
        if not head:
            os._exit(0)
        while len(head) < HEADER.size:
            more = sock.recv(HEADER.size - len(head))
            if not more:
                os._exit(0)
            head += more
        size = HEADER.unpack(head)[0]
        body = bytearray()
        while len(body) < size:
            more = sock.recv(size - len(body))
            if not more:
                os._exit(0)
            body += more
        req = json.loads(body)
        out_w, err_w = fds
        pid = os.fork()
        if pid == 0:
            try:
                _enter_child(req["limits"], out_w, err_w, keep_fd=sock.detach(), strict=False)
                sock = socket.socket(fileno=CHILD_FD_KEEP)
                sock.sendall(json.dumps({"runner": os.getpid()}).encode() + b"\n")
                status = _run_user_code(req["code"], env)
                devnull = os.open("/dev/null", os.O_RDWR)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                sock.sendall(json.dumps({"done": status}).encode() + b"\n")
            except BaseException:  # noqa: BLE001 - report as a failed block, keep the old holder
                os._exit(1)
            _holder_loop(sock, env)  # we are the holder now
            os._exit(0)
        os.close(out_w)
        os.close(err_w)
        _, wait_status = os.waitpid(pid, 0)
        sock.sendall(json.dumps({"exited": wait_status}).encode() + b"\n")


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
    try:
        os.kill(pid, signal.SIGKILL)
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
