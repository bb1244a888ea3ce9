"""LocalSandbox: a self-healing pool of warm, isolated worker processes on this machine.

Each worker is one `worker.py` zygote inside bwrap (see isolation.py), as an unprivileged host
uid of its own and, where the host allows, in pids and memory cgroups of its own (cgroups.py).
Stateless runs share a pool of N workers (an idle queue; callers beyond N wait their turn). A stateless worker answers a run twice: `result` as soon as the code is done,
then `idle` once it has killed the run's leftovers and wiped its scratch; only then does it go
back to the idle queue, so the caller never waits for the cleanup and no run ever starts next to
another run's leftovers. A session pins a dedicated worker for its lifetime. A worker that dies or
stops answering is replaced in the background; the run it was serving gets a SANDBOX_ERROR
result, because that failure is ours, never the code's.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import NoReturn

from torl.errors import WorkerDied
from torl.sandbox.base import InvalidCode, Sandbox, SandboxUnavailable, UnknownSession
from torl.sandbox.config import SandboxConfig
from torl.sandbox.local import cgroups, isolation
from torl.sandbox.local.worker import HEADER, encode_frame
from torl.sandbox.result import ExecResult, ExecStatus

log = logging.getLogger("torl.sandbox")

_MEMORY_SLACK = 32 * 2**20   # beyond the idle worker and memory_mb: the run's own interpreter pages
_ANSWER_GRACE_S = 15.0       # beyond the timeout, for cleanup and slow machines, before we call a worker hung
_MAX_RESPAWN_FAILURES = 3    # consecutive failed replacements before runs are answered "unavailable" (meanwhile)
_RESPAWN_BACKOFF_S = (0.25, 10.0)  # first and longest pause between tries; tries never stop
_counter = itertools.count()


class _WorkerProcess:
    """Host-side handle of one worker: spawn, request/answer over its pipes, kill."""

    def __init__(self, config: SandboxConfig, mode: str):
        self.config, self.mode = config, mode
        self.name = f"{os.getpid()}-{next(_counter)}"
        self.proc: asyncio.subprocess.Process | None = None
        self.cgroups: cgroups.WorkerCgroups | None = None
        self.host_uid: int | None = None
        self.memory_base: int | None = None      # bytes the idle worker holds (memory cgroup only)
        self.memory_limit: int | None = None
        self._oom_kills = 0
        self.scratch: str | None = None
        self.info: dict = {}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_task: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> dict:
        cfg = self.config
        isolated = cfg.isolation == "bwrap"
        preexec, pass_fds = None, ()
        if isolated:
            launch = isolation.worker_launch(
                isolation.find_bwrap(), scratch_mb=cfg.scratch_mb, max_processes=cfg.max_processes, name=self.name,
                drop_privileges=isolation.running_as_root() and not cfg.allow_host_root)
            cmd, env, scratch = launch.argv, {}, isolation.SCRATCH_INSIDE
            preexec, pass_fds = launch.preexec, launch.pass_fds
            self.cgroups, self.host_uid = launch.cgroups, launch.host_uid
        else:
            cmd, env = isolation.unisolated_command(), isolation.unisolated_env()
            scratch = self.scratch = tempfile.mkdtemp(prefix="torl-sandbox-")
            env["HOME"] = env["TMPDIR"] = scratch
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, preexec_fn=preexec, pass_fds=pass_fds,
                start_new_session=not isolated, cwd=scratch if not isolated else "/")
        except BaseException:  # e.g. out of fds (EMFILE): leave no cgroup or scratch dir behind
            await self.kill()
            raise
        finally:
            for fd in pass_fds:
                os.close(fd)
        self._stderr_task = asyncio.create_task(self._pump_stderr())
        init = {"op": "init", "mode": self.mode, "isolated": isolated, "scratch": scratch,
                "preload": list(cfg.preload), "warmup": cfg.warmup, "limits": cfg.worker_limits()}
        try:
            self.info = await self.request(init, timeout=cfg.start_timeout_s)
        except WorkerDied as e:
            await self.kill()
            raise WorkerDied(f"worker failed to start: {e}{self._root_hint()}") from None
        if self.info.get("op") != "ready":
            await self.kill()
            raise WorkerDied(f"worker failed to start: {self.info.get('message', self.info)}")
        if isolated and isolation.running_as_root():
            try:
                await self._turn_off_time_wait()
            except OSError as e:  # could not even start the helper (e.g. EMFILE): a failed start, retried
                await self.kill()
                raise WorkerDied(f"worker failed to start: cannot configure its network namespace: {e}") from None
        if self.cgroups is not None and self.cgroups.has_memory:
            # Everything the worker holds now (interpreter, pre-imports, the spare) is the base;
            # each run may add its memory_mb on top, whatever kind of memory it uses.
            self.memory_base = self.cgroups.memory_usage() + _MEMORY_SLACK
        return self.info

    async def _turn_off_time_wait(self) -> None:
        """No TIME_WAIT in the worker's network namespace (see isolation.py); a warning if not."""
        cmd = isolation.no_time_wait_command(self.proc.pid)
        if cmd is None:
            return  # the worker is gone already: the first request says so
        helper = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                      stdout=asyncio.subprocess.DEVNULL,
                                                      stderr=asyncio.subprocess.PIPE)
        _, err = await helper.communicate()
        if helper.returncode != 0:
            log.warning("could not turn TIME_WAIT off in a sandbox worker's network namespace (closed "
                        "connections stay visible to the next runs for ~60 s): %s",
                        err.decode(errors="replace").strip()[-300:])

    def _root_hint(self) -> str:
        if self.host_uid is None:
            return ""
        return ("; the sandbox runs each worker as an unprivileged host uid, which needs unprivileged user "
                "namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, "
                "kernel.apparmor_restrict_unprivileged_userns=0) and a readable interpreter; "
                "SandboxConfig(allow_host_root=True) runs code as host root instead (unsafe)")

    def limit_memory(self, memory_mb: int) -> None:
        """Bound all memory of the worker's next run (cgroup); CgroupError if the bound cannot be set."""
        if self.memory_base is None:
            return
        limit = self.memory_base + memory_mb * 2**20
        if limit != self.memory_limit:
            self.cgroups.set_memory_limit(limit, socket_bytes=memory_mb * 2**20)
            self.memory_limit = limit

    @property
    def oom_kills_seen(self) -> int:
        """The OOM-kill count as last read by oom_kills()."""
        return self._oom_kills

    def oom_kills(self) -> int:
        """OOM kills in this worker's memory cgroup so far (kept past kill(), which removes it)."""
        if self.cgroups is not None and self.memory_base is not None:
            self._oom_kills = self.cgroups.oom_kills()
        return self._oom_kills

    async def request(self, message: dict, timeout: float) -> dict:
        """Send one frame and wait for the answer; WorkerDied if the worker ends or hangs."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(encode_frame(message))
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError) as e:
            await self._died(e)
        return await self.receive(timeout)

    async def receive(self, timeout: float) -> dict:
        """Wait for the worker's next frame; WorkerDied if it ends or says nothing within timeout."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):  # no extra task per call, unlike wait_for
                return await self._read_frame()
        except TimeoutError:
            await self.kill()
            raise WorkerDied(f"no answer within {timeout:.0f} s; worker killed{self._stderr_hint()}") from None
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            await self._died(e)

    async def _died(self, error: BaseException) -> NoReturn:
        await self.kill()
        raise WorkerDied(f"worker process ended ({type(error).__name__}, exit status "
                         f"{self.proc.returncode}){self._stderr_hint()}") from None

    async def _read_frame(self) -> dict:
        head = await self.proc.stdout.readexactly(HEADER.size)
        size = HEADER.unpack(head)[0]
        # JSON escapes a control byte as \\u00XX: 6 bytes of frame per byte of output at worst.
        limit = 6 * self.config.max_output_bytes + self.config.max_fetch_bytes * 4 // 3 + 1_000_000
        if size > limit:
            raise ConnectionError(f"oversized frame ({size} bytes)")
        return json.loads(await self.proc.stdout.readexactly(size))

    async def _pump_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(text)
            log.debug("worker %s: %s", self.name, text)

    def _stderr_hint(self) -> str:
        tail = " | ".join(x for x in list(self.stderr_tail)[-6:] if x.strip())
        return f"; worker stderr: {tail}" if tail else ""

    async def kill(self) -> None:
        """Kill the worker and everything in it; idempotent."""
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    if self.config.isolation == "none":
                        os.killpg(self.proc.pid, 9)  # its own session: children too
                    else:
                        self.proc.kill()  # bwrap's --die-with-parent takes the namespace down
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 5)
        if self.cgroups is not None:
            self.oom_kills()
            for _ in range(100):  # the namespace's processes may take a moment to be gone
                if self.cgroups.remove():
                    break
                await asyncio.sleep(0.02)
            self.cgroups = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    async def close(self) -> None:
        if self.alive:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(encode_frame({"op": "close"}))
        await self.kill()


class LocalSandbox(Sandbox):
    """Runs untrusted Python in isolated, warm worker processes on this machine.

    `await sandbox.start()` starts the pool (otherwise the first `run` does). Use it from one
    event loop, or through the blocking forms (`run_sync`, `run_batch`, `close`).
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides):
        self.config = config if config is not None else SandboxConfig(**overrides)
        if config is not None and overrides:
            raise TypeError("pass either a SandboxConfig or keyword overrides, not both")
        self.stats: collections.Counter[str] = collections.Counter()
        self._workers: list[_WorkerProcess] = []
        self._idle: asyncio.Queue[_WorkerProcess | None] | None = None
        self._sessions: dict[str, tuple[_WorkerProcess, asyncio.Lock]] = {}
        self._session_limits: dict[str, tuple[float, int]] = {}
        self._start_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heal_tasks: set[asyncio.Task] = set()      # replacing dead workers
        self._settle_tasks: set[asyncio.Task] = set()    # waiting for workers to finish their cleanup
        self._unavailable: str | None = None
        self._respawn_failures = 0
        self._closed = False
        self.worker_info: dict = {}

    # -- lifecycle
    async def start(self) -> None:
        """Check isolation and start all workers in parallel; SandboxUnavailable if impossible."""
        self._bind_loop()
        async with self._start_lock:
            if self._idle is not None:
                return
            if self._closed:
                raise SandboxUnavailable("sandbox is closed")
            self._check_isolation()
            workers = [_WorkerProcess(self.config, "stateless") for _ in range(self.config.workers)]
            outcomes = await asyncio.gather(*(w.start() for w in workers), return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                await asyncio.gather(*(w.kill() for w in workers))
                raise SandboxUnavailable(f"{len(failures)} of {len(workers)} sandbox workers failed to start: "
                                         f"{_describe(failures[0])}")
            self.worker_info = workers[0].info
            if self.worker_info.get("failed"):
                log.warning("sandbox workers could not pre-import: %s", self.worker_info["failed"])
            self._workers = workers
            self._idle = asyncio.Queue()
            for w in workers:
                self._idle.put_nowait(w)

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop, self._start_lock = loop, asyncio.Lock()
        elif self._loop is not loop:
            raise RuntimeError("this LocalSandbox is bound to another event loop (its workers' pipes live there): "
                               "create one sandbox per event loop, or use only the blocking forms")

    def _check_isolation(self) -> None:
        cfg = self.config
        as_root = isolation.running_as_root()
        if as_root and not cfg.allow_host_root and cfg.isolation == "none":
            raise SandboxUnavailable(
                "sandbox refused to start: isolation='none' as root would run model-written code as host root; "
                "use isolation='bwrap', run torl as a non-root user, or set allow_host_root=True (unsafe)")
        if as_root and cfg.allow_host_root:
            message = ("torl sandbox: allow_host_root=True: model-written code runs as HOST ROOT "
                       f"({'inside bwrap namespaces' if cfg.isolation == 'bwrap' else 'UNISOLATED'}).")
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        if cfg.isolation == "none":
            message = ("torl sandbox: isolation='none': model-written code runs UNISOLATED with your user's "
                       "rights (files, network, processes). Only for trusted code or throwaway machines.")
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return
        try:
            isolation.find_bwrap()
            isolation.check_seccomp()
            if as_root:
                cgroups.remove_stale()
        except isolation.IsolationError as e:
            raise SandboxUnavailable(f"sandbox isolation unavailable: {e}") from None

    async def aclose(self) -> None:
        self._closed = True
        for task in [*self._heal_tasks, *self._settle_tasks]:
            task.cancel()
        workers = self._workers + [w for w, _ in self._sessions.values()]
        self._workers, self._sessions = [], {}
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
        if self._idle is not None:
            self._idle.put_nowait(None)  # wake anyone still waiting for a worker

    # -- running code
    async def run(self, code: str, *, timeout: float | None = None, memory_mb: int | None = None,
                  session: str | None = None, stdin: str | None = None, files: Mapping[str, bytes] | None = None,
                  fetch_files: Sequence[str] = ()) -> ExecResult:
        code = self.config.check_code(code)
        timeout, memory_mb = self.config.check_limits(timeout, memory_mb)
        io = self.config.check_io(stdin, files, fetch_files)
        request = {"op": "exec", "code": code, "timeout": timeout, "memory_mb": memory_mb, **io}
        if session is not None:
            if io:
                raise InvalidCode("stdin, files and fetch_files are for stateless runs, not sessions")
            worker, lock = self._session(session)
            async with lock:
                self._check_session_limits(session, timeout, memory_mb)
                return await self._execute(worker, request, session=session)
        await self._ensure_started()
        while True:
            worker = await self._idle.get()
            if worker is None:
                if not (self._closed or self._unavailable):
                    continue  # a wake-up from an outage that is over
                self._idle.put_nowait(None)  # wake the next waiter too
                raise SandboxUnavailable(self._unavailable or "sandbox is closed")
            if worker.alive:
                break
            self.stats["worker_died_idle"] += 1  # e.g. killed from outside: replace, take another
            self._replace(worker)
        try:
            result = await self._execute(worker, request)
        except InvalidCode:  # the request's fault; the worker cleans up as after any run
            self._settle(worker)
            raise
        except BaseException:  # e.g. cancelled: its answer may still be on the way, so never reuse it
            if not self._closed:
                self._replace(worker)
            raise
        if self._closed:
            pass
        elif worker.alive:
            self._settle(worker)
        else:
            self._replace(worker)
        return result

    async def _execute(self, worker: _WorkerProcess, request: dict, session: str | None = None) -> ExecResult:
        self.stats["executions"] += 1
        try:
            worker.limit_memory(request["memory_mb"])
        except cgroups.CgroupError as e:
            await worker.kill()
            if session is not None:  # the session's own state is over the block's limit
                return ExecResult(status=ExecStatus.MEMORY, sandbox_message=f"{self._memory_message(request)} ({e})")
            return self._sandbox_error(f"could not bound the run's memory: {e}")
        oom_before = worker.oom_kills_seen  # no read per run: every OOM kill ends a run in error or timeout
        try:
            answer = await worker.request(request, timeout=request["timeout"] + _ANSWER_GRACE_S)
        except WorkerDied as e:
            if worker.oom_kills() > oom_before:  # the run's memory took the worker down: the code's doing
                self.stats["status/memory"] += 1
                return ExecResult(status=ExecStatus.MEMORY, exit_code=-9, sandbox_message=self._memory_message(request))
            where = f"session {session} worker" if session else "worker"
            return self._sandbox_error(f"{where} died while running code: {e}")
        if answer.get("op") != "result":
            await worker.kill()
            return self._sandbox_error(f"worker sent an unexpected answer: {str(answer)[:300]}")
        if answer.get("status") == "invalid_request":  # e.g. input files it could not write: no code ran
            self.stats["invalid_requests"] += 1
            raise InvalidCode(answer.get("sandbox_message") or "the request could not be set up")
        if answer.get("recycle"):
            self.stats["worker_recycled"] += 1
            await worker.kill()  # leftovers it could not clean, or a failed set-up: a fresh worker replaces it
        result = ExecResult(
            status=ExecStatus(answer["status"]), stdout=answer.get("stdout", ""), stderr=answer.get("stderr", ""),
            exit_code=answer.get("exit_code"), duration_s=answer.get("duration_s", 0.0),
            stdout_truncated=answer.get("stdout_truncated", False),
            stderr_truncated=answer.get("stderr_truncated", False),
            sandbox_message=answer.get("sandbox_message", ""),
            files={name: base64.b64decode(data) for name, data in answer.get("files", {}).items()})
        if session is not None:
            if answer.get("state_advanced"):  # the block's process, with its limits, now holds the state
                self._session_limits[session] = (request["timeout"], request["memory_mb"])
            elif answer.get("session_reset"):
                self._session_limits.pop(session, None)
        if result.status in (ExecStatus.ERROR, ExecStatus.TIMEOUT) and worker.oom_kills() > oom_before:
            # Killed by the memory cgroup (memfd, tmpfs, shared memory... beyond memory_mb).
            result.status, result.sandbox_message = ExecStatus.MEMORY, self._memory_message(request)
        self.stats[f"status/{result.status.value}"] += 1
        if result.status is ExecStatus.SANDBOX_ERROR:
            log.error("sandbox error: %s", result.sandbox_message)
        return result

    @staticmethod
    def _memory_message(request: dict) -> str:
        return f"MemoryError: the run's memory (all kinds) exceeded its limit of {request['memory_mb']} MB"

    def _check_session_limits(self, session: str, timeout: float, memory_mb: int) -> None:
        """A session's limits can stay or shrink, never grow: each block's rlimits are hard limits
        that its successor (the process holding the session's state) inherits."""
        floor = self._session_limits.get(session)
        if floor is not None and (timeout > floor[0] or memory_mb > floor[1]):
            raise InvalidCode(f"session {session}: limits can only stay or shrink from block to block "
                              f"(this block asks timeout={timeout:g}, memory_mb={memory_mb}; earlier blocks had "
                              f"timeout={floor[0]:g}, memory_mb={floor[1]}): open a new session for larger limits")

    def _sandbox_error(self, message: str) -> ExecResult:
        self.stats["status/sandbox_error"] += 1
        log.error("sandbox error: %s", message)
        return ExecResult(status=ExecStatus.SANDBOX_ERROR, sandbox_message=message)

    async def _ensure_started(self) -> None:
        if self._unavailable:
            raise SandboxUnavailable(self._unavailable)
        if self._idle is None:
            await self.start()
        else:
            self._bind_loop()

    # -- after a stateless run
    def _settle(self, worker: _WorkerProcess) -> None:
        """Put the worker back in the idle queue once it reports its cleanup done (in the background)."""
        task = asyncio.create_task(self._return_when_idle(worker))
        self._settle_tasks.add(task)
        task.add_done_callback(self._settle_tasks.discard)

    async def _return_when_idle(self, worker: _WorkerProcess) -> None:
        try:
            answer = await worker.receive(timeout=_ANSWER_GRACE_S)
        except WorkerDied as e:
            log.error("sandbox worker died while cleaning up after a run: %s", e)
            self.stats["worker_died_cleaning"] += 1
            self._replace(worker)
            return
        if answer.get("op") != "idle":
            log.error("sandbox worker sent an unexpected answer instead of 'idle': %s", str(answer)[:300])
            self._replace(worker)
        elif answer.get("recycle"):
            self.stats["worker_recycled"] += 1  # leftovers it could not clean: a fresh worker replaces it
            self._replace(worker)
        elif not self._closed:
            self._idle.put_nowait(worker)

    async def wait_idle(self) -> None:
        """Wait until no pool worker is still cleaning up after a run or being replaced."""
        while pending := self._settle_tasks | self._heal_tasks:
            await asyncio.wait(pending)

    def wait_idle_sync(self) -> None:
        """Blocking form of `wait_idle`."""
        self._call_blocking(self.wait_idle())

    # -- healing
    def _replace(self, dead: _WorkerProcess) -> None:
        task = asyncio.create_task(self._respawn(dead))
        self._heal_tasks.add(task)
        task.add_done_callback(self._heal_tasks.discard)

    async def _respawn(self, dead: _WorkerProcess) -> None:
        """Start a replacement, retrying with backoff for as long as the sandbox is open: failures
        are often transient (out of fds or processes for a moment, EMFILE/EAGAIN), so they are
        never latched. After a few failures in a row with no live worker left, runs are answered
        SandboxUnavailable (not left waiting) until a replacement starts; then the sandbox is
        available again."""
        await dead.kill()
        with contextlib.suppress(ValueError):
            self._workers.remove(dead)
        self.stats["worker_restarts"] += 1
        pause = _RESPAWN_BACKOFF_S[0]
        while not self._closed:
            fresh = _WorkerProcess(self.config, "stateless")
            try:
                await fresh.start()
            except Exception as e:  # noqa: BLE001 - any failure to start is retried, never latched
                self._respawn_failures += 1
                self.stats["worker_start_failures"] += 1
                log.error("could not replace a sandbox worker (try %d, next in %.1f s): %s",
                          self._respawn_failures, pause, _describe(e))
                if (self._respawn_failures >= _MAX_RESPAWN_FAILURES and self._unavailable is None
                        and not any(w.alive for w in self._workers)):  # while one lives, runs wait for it
                    self._unavailable = f"sandbox workers are failing to start (retrying): {_describe(e)}"
                    self._idle.put_nowait(None)  # wake the waiting runs: they get SandboxUnavailable
                await asyncio.sleep(pause)
                pause = min(2 * pause, _RESPAWN_BACKOFF_S[1])
                continue
            self._respawn_failures = 0
            if self._closed:
                await fresh.kill()
                return
            self._unavailable = None  # recovered: a None left in the idle queue is now skipped
            self._workers.append(fresh)
            self._idle.put_nowait(fresh)
            return

    # -- sessions
    async def open_session(self) -> str:
        """Start a dedicated worker whose globals persist across `run(..., session=id)` calls."""
        self._bind_loop()
        if self._unavailable:
            raise SandboxUnavailable(self._unavailable)
        if self._closed:
            raise SandboxUnavailable("sandbox is closed")
        if len(self._sessions) >= self.config.max_sessions:
            raise SandboxUnavailable(f"too many open sessions ({len(self._sessions)}, "
                                     f"SandboxConfig.max_sessions): close_session() the ones you are done with")
        self._check_isolation()
        worker = _WorkerProcess(self.config, "session")
        session = uuid.uuid4().hex[:12]
        self._sessions[session] = (worker, asyncio.Lock())  # reserve the slot while starting
        try:
            await worker.start()
        except WorkerDied as e:
            self._sessions.pop(session, None)
            raise SandboxUnavailable(f"could not start a session worker: {e}") from None
        self.stats["sessions_opened"] += 1
        return session

    async def close_session(self, session: str) -> None:
        worker, lock = self._session(session)
        self._sessions.pop(session, None)
        self._session_limits.pop(session, None)
        async with lock:
            await worker.close()

    def _session(self, session: str) -> tuple[_WorkerProcess, asyncio.Lock]:
        try:
            return self._sessions[session]
        except (KeyError, TypeError):
            raise UnknownSession(f"unknown sandbox session {session!r}: open one with open_session() "
                                 "(it may have been closed already)") from None

    # -- checks
    async def health_check(self) -> None:
        """Run a known snippet; SandboxUnavailable with the reason if the answer is wrong."""
        try:
            result = await self.run("import math, numpy, sympy\nprint(math.factorial(5), int(numpy.arange(4).sum()), "
                                    "sympy.Integer(2)**10)", timeout=30)
        except SandboxUnavailable:
            raise
        except Exception as e:
            raise SandboxUnavailable(f"sandbox health check failed: {_describe(e)}") from e
        if result.status is not ExecStatus.OK or result.stdout.strip() != "120 6 1024":
            detail = result.sandbox_message or result.stderr.strip()[-500:] or result.stdout[:200]
            raise SandboxUnavailable(f"sandbox health check failed: status {result.status.value}: {detail}")

    def worker_pids(self) -> list[int]:
        """Host pids of the worker processes (bwrap monitors), for diagnostics and tests."""
        return [w.pid for w in self._workers + [w for w, _ in self._sessions.values()] if w.alive]

    def isolation_report(self) -> list[tuple[str, bool, str]]:
        """(mechanism, active, detail) rows describing how code is confined right now."""
        cfg, info = self.config, self.worker_info
        if cfg.isolation == "none":
            return [("isolation", False, "isolation='none': code runs UNISOLATED (rlimits only)")]
        worker = next((w for w in self._workers if w.alive), None)
        host_uid = worker.host_uid if worker else None
        groups = worker.cgroups if worker else None
        as_root = isolation.running_as_root()
        memory_cgroup = bool(groups and groups.has_memory)
        if host_uid is not None:
            uid_detail = f"code runs as uid {info.get('uid')} inside = unprivileged host uid {host_uid} (one per worker)"
        elif as_root:
            uid_detail = "allow_host_root=True: code runs as HOST ROOT inside the namespaces"
        else:
            uid_detail = f"code runs as uid {info.get('uid')} inside = your own host uid {os.getuid()}"
        return [
            ("bubblewrap", True, isolation.find_bwrap()),
            ("uid mapping", not (as_root and host_uid is None), uid_detail),
            ("pid namespace", info.get("pid") == 1, (f"worker is pid {info.get('pid')} inside; user code "
                                                     "cannot signal it, every leftover process is killed")),
            ("user namespace", info.get("uid") == isolation.SANDBOX_UID,
             "no capabilities; no new user namespaces inside (--disable-userns)"),
            ("network namespace", set(info.get("net_interfaces", [])) <= {"lo"},
             f"interfaces: {', '.join(info.get('net_interfaces', [])) or 'none'}"),
            ("seccomp", True, "denylist: keyrings, namespaces, mount, io_uring, ptrace, bpf, inotify, other "
                              "processes' limits/priorities; sockets of AF_UNIX/AF_INET/AF_INET6 only"
                              + ("" if memory_cgroup else "; memfd_create and shmget (no memory cgroup)")),
            ("filesystem", True, "read-only allowlist: /usr, interpreter dirs " + ", ".join(isolation.python_roots())
             + f"; private tmpfs /tmp ({cfg.scratch_mb} MB), wiped after each run; home and project hidden"),
            ("memory cgroup", memory_cgroup,
             f"all memory of a run (memfd, tmpfs, shared memory) within memory_mb (+{cfg.memory_mb} MB default); "
             + ("socket buffers bounded too" if groups.socket_memory_bounded else "socket buffers NOT bounded (cgroup "
                                                                                   "v1 without memory.kmem.tcp)")
             if memory_cgroup else "not available on this host: memfd_create and SysV shmget refused instead"),
            ("process bound", True, (f"pids cgroup, max {cfg.max_processes} + 4 per worker; " if groups and "pids" in groups.dirs
                                     else "") + f"RLIMIT_NPROC={cfg.max_processes}"),
            ("rlimits", True, (f"address space +{cfg.memory_mb} MB, CPU ~timeout, {cfg.max_open_files} files, "
                               f"{cfg.max_file_size_mb} MB per file, no core dumps; hard = soft, in sessions too")),
            ("output cap", True, f"{cfg.max_output_bytes} bytes, then killed"),
        ]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if not isinstance(error, (WorkerDied, SandboxUnavailable)) else str(error)
