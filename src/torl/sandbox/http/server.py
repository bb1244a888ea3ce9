"""`torl sandbox serve`: any `Sandbox` over HTTP, in SandboxFusion's `/run_code` shape.

SandboxFusion clients work unchanged; torl's `RemoteSandbox` reads the extra fields and gets
the exact `ExecResult` back.

Endpoints
    POST   /run_code                      SandboxFusion request -> SandboxFusion response (+ `torl`)
    POST   /torl/sessions                 open a stateful session -> {"session_id": "..."}
    POST   /torl/sessions/{id}/run_code   like /run_code, inside that session (state persists)
    DELETE /torl/sessions/{id}            close it
    GET    /health                        runs the sandbox's health check: 200 or 503
    GET    /v1/ping                       liveness, as SandboxFusion: "pong" (never needs the token)

Request (`/run_code`): `code` (str, required), `language` ("python" only), `run_timeout`
(seconds; absent = the sandbox's default), `memory_limit_MB` (-1 or absent = the sandbox's
default), `stdin` (str or null), `files` ({path: base64 content}, written into the run's
working directory first; null contents are skipped, as SandboxFusion does) and `fetch_files`
([path], read back after the run). Paths are relative to the working directory. SandboxFusion's
`compile_timeout` is ignored (Python is not compiled); `args` must be empty.

Response: SandboxFusion's `{status, message, compile_result, run_result{status, execution_time,
return_code, stdout, stderr}, executor_pod_name, files}` with `status` Success / Failed /
SandboxError, `run_result.status` Finished / TimeLimitExceeded / Error and `files` the fetched
files that existed after the run ({path: base64}), plus `torl: {status, exit_code, duration_s,
stdout_truncated, stderr_truncated, sandbox_message}` holding the exact `ExecStatus`
(SandboxFusion has no memory or output-limit states).

Bad requests get HTTP 400 (401 without the token, 404 for an unknown session, 408 for a body
that does not arrive in time, 413 when too large) with `{"detail": "<one line>", "torl_error":
"<kind>"}`.

Protections
    token         with `--token` / $TORL_SANDBOX_TOKEN every request but /v1/ping needs
                  `Authorization: Bearer <token>`, or Basic auth with the token as password, which
                  is what the SandboxFusion client sends for an endpoint `http://torl:<token>@host:port`.
    read timeout  a request's headers must arrive within `--read-timeout` s of its first byte
                  (or of the connection opening), and its body within that long of the headers;
                  otherwise the connection is dropped (a body gets a 408 first when it can).
    session TTL   a session unused for `--session-ttl` s is closed, so abandoned sessions cannot
                  hold every `max_sessions` slot for good.
    run queue     at most `--max-pending-runs` runs are admitted at once (running or waiting for a
                  worker), whose bodies hold at most 4 x `--max-request-mb` together; beyond that a
                  run gets 503 with `Retry-After` before its body is read, so queued requests
                  cannot take the server's memory.
    connections   at most `max_connections` open connections, fewer than the server's file
                  descriptors (it keeps a reserve for replacing workers); connections that have not
                  yet sent a request are capped lower and the oldest is dropped for a new one, so
                  a flood of idle connections cannot lock real clients out. A 401 closes its
                  connection: without the token a client holds nothing beyond one request.
    public hosts  `torl sandbox serve` refuses a non-loopback `--host` without a token unless
                  `--insecure` is given.
"""

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import functools
import hmac
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torl.sandbox.base import InvalidCode, Sandbox, SandboxUnavailable, UnknownSession
from torl.sandbox.config import check_utf8, finite_float
from torl.sandbox.result import ExecResult, ExecStatus

if TYPE_CHECKING:  # fastapi costs ~1 s to import: only `create_app` pulls it in
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080  # SandboxFusion's port, so its clients need no change
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_SESSION_TTL_S = 600.0
DEFAULT_MAX_CONNECTIONS = 1024
RETRY_AFTER_S = 1           # what a busy answer tells the client to wait
_PENDING_BODIES = 4         # bytes of admitted request bodies: at most this many of the largest size
_FDS_PER_WORKER = 12        # its pipes, plus what starting a replacement opens for a moment
_FDS_RESERVED = 64          # the server's own files, sockets and imports
TOKEN_ENV = "TORL_SANDBOX_TOKEN"
SUPPORTED_LANGUAGES = ("python",)
OPEN_PATHS = frozenset({"/v1/ping"})  # answered without the token: liveness probes carry none

# ExecStatus -> (SandboxFusion RunStatus, CommandRunStatus of run_result)
_FUSION_STATUS = {
    ExecStatus.OK: ("Success", "Finished"),
    ExecStatus.ERROR: ("Failed", "Finished"),
    ExecStatus.MEMORY: ("Failed", "Finished"),
    ExecStatus.OUTPUT_LIMIT: ("Failed", "Finished"),
    ExecStatus.TIMEOUT: ("Failed", "TimeLimitExceeded"),
    ExecStatus.SANDBOX_ERROR: ("SandboxError", "Error"),
}


class BadRequest(Exception):
    """A client mistake: answered with `status_code` and a one-line `detail`."""

    def __init__(self, status_code: int, torl_error: str, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.torl_error, self.detail = status_code, torl_error, detail


@dataclasses.dataclass
class RunRequest:
    """The parts of a SandboxFusion `/run_code` request that torl's sandbox uses."""

    code: str
    timeout: float | None
    memory_mb: int | None
    stdin: str | None = None
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    fetch_files: list[str] = dataclasses.field(default_factory=list)

    def run_options(self) -> dict[str, Any]:
        """Keyword arguments for `Sandbox.run`; the file/stdin ones only when used, so a
        `Sandbox` without them still serves plain runs."""
        options: dict[str, Any] = {"timeout": self.timeout, "memory_mb": self.memory_mb}
        if self.stdin:
            options["stdin"] = self.stdin
        if self.files:
            options["files"] = self.files
        if self.fetch_files:
            options["fetch_files"] = self.fetch_files
        return options


def parse_run_request(body: bytes) -> RunRequest:
    """Validate a `/run_code` body; raise `BadRequest` naming the first problem."""
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest(400, "invalid_request", "request body is not UTF-8: send UTF-8 JSON") from None
    except RecursionError:  # json's C parser recurses per nesting level
        raise BadRequest(400, "invalid_request", "request body is nested too deeply to parse: "
                                                 "send a flat JSON object") from None
    except ValueError as e:
        raise BadRequest(400, "invalid_request",
                         f"request body is not valid JSON: {_one_line(e)}") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, "invalid_request", "request body must be a JSON object")

    code = payload.get("code")
    if not isinstance(code, str):
        raise BadRequest(400, "invalid_request", "field `code` (a string of Python) is required")
    _check_utf8("code", code)
    language = payload.get("language")
    if language not in SUPPORTED_LANGUAGES:
        raise BadRequest(400, "unsupported_language",
                         f"language {_short_repr(language)} is not supported: torl's sandbox runs only "
                         f"{', '.join(SUPPORTED_LANGUAGES)}")

    timeout = payload.get("run_timeout")
    if timeout is not None:
        timeout = finite_float(timeout)
        if timeout is None or timeout <= 0:
            raise BadRequest(400, "invalid_request", f"run_timeout must be a finite number of seconds > 0, "
                                                     f"got {_short_repr(payload['run_timeout'])}")
    memory = payload.get("memory_limit_MB")
    if memory == -1:  # SandboxFusion's "no limit given"
        memory = None
    if memory is not None and not (isinstance(memory, int) and not isinstance(memory, bool) and memory > 0):
        raise BadRequest(400, "invalid_request", f"memory_limit_MB must be a positive integer or -1 "
                                                 f"(default), got {_short_repr(memory)}")

    stdin = payload.get("stdin")
    if stdin is not None:
        if not isinstance(stdin, str):
            raise BadRequest(400, "invalid_request", f"stdin must be a string or null, got {type(stdin).__name__}")
        _check_utf8("stdin", stdin)
    files = payload.get("files") or {}
    if not isinstance(files, dict):
        raise BadRequest(400, "invalid_request", "files must be an object {path: base64 content}")
    decoded: dict[str, bytes] = {}
    for path, content in files.items():
        if content is None:  # SandboxFusion skips these too
            continue
        if not isinstance(content, str):
            raise BadRequest(400, "invalid_request",
                             f"files[{_short_repr(path)}] must be a base64 string, got {type(content).__name__}")
        try:
            decoded[path] = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, "invalid_request",
                             f"files[{_short_repr(path)}] is not valid base64: encode the file's bytes") from None
    fetch = payload.get("fetch_files") or []
    if not (isinstance(fetch, list) and all(isinstance(p, str) for p in fetch)):
        raise BadRequest(400, "invalid_request", "fetch_files must be a list of paths (strings)")
    if payload.get("args"):
        raise BadRequest(400, "unsupported_field",
                         "field `args` is not supported: torl's sandbox runs a code string; leave it empty")
    return RunRequest(code, timeout, memory, stdin, decoded, list(dict.fromkeys(fetch)))


def to_fusion_response(result: ExecResult) -> dict[str, Any]:
    """An `ExecResult` in SandboxFusion's response shape, plus the exact torl fields."""
    status, run_status = _FUSION_STATUS[result.status]
    timed_out = result.status is ExecStatus.TIMEOUT
    return {
        "status": status,
        # SandboxFusion fills `message` only for its own failures.
        "message": result.sandbox_message if result.status is ExecStatus.SANDBOX_ERROR else "",
        "compile_result": None,
        "run_result": {
            "status": run_status,
            "execution_time": result.duration_s,
            # SandboxFusion reports no return code for a run it stopped at the time limit.
            "return_code": None if timed_out else result.exit_code,
            "stdout": result.stdout,
            "stderr": result.stderr,
        },
        "executor_pod_name": None,
        "files": {path: base64.b64encode(content).decode("ascii") for path, content in result.files.items()},
        "torl": {
            "status": result.status.value,
            "exit_code": result.exit_code,
            "duration_s": result.duration_s,
            "stdout_truncated": result.stdout_truncated,
            "stderr_truncated": result.stderr_truncated,
            "sandbox_message": result.sandbox_message,
        },
    }


class SessionReaper:
    """Closes sessions opened through the server once unused for `ttl_s` (None: never).

    A session is "used" while one of its blocks runs; the clock restarts when the block ends.
    """

    _REMEMBERED = 10_000  # closed-for-idleness ids kept for a clear 404

    def __init__(self, sandbox: Sandbox, ttl_s: float | None) -> None:
        self.sandbox, self.ttl_s = sandbox, ttl_s
        self.last_used: dict[str, float] = {}
        self.busy: collections.Counter[str] = collections.Counter()
        self.expired: collections.OrderedDict[str, None] = collections.OrderedDict()

    def opened(self, session: str) -> None:
        self.last_used[session] = time.monotonic()

    def forget(self, session: str) -> None:
        self.last_used.pop(session, None)

    @contextlib.contextmanager
    def using(self, session: str) -> Iterator[None]:
        tracked = session in self.last_used
        if tracked:
            self.busy[session] += 1
        try:
            yield
        finally:
            if tracked:
                self.busy[session] -= 1
                if self.busy[session] <= 0:
                    del self.busy[session]  # no zero entries left behind by closed sessions
                if session in self.last_used:
                    self.last_used[session] = time.monotonic()

    def expired_message(self, session: str) -> str | None:
        if session in self.expired and session not in self.last_used:
            return (f"session {session!r} was closed after {self.ttl_s:g} s unused (the server's "
                    "--session-ttl): open a new one")
        return None

    async def sweep(self) -> None:
        if self.ttl_s is None:
            return
        now = time.monotonic()
        idle = [s for s, t in self.last_used.items() if not self.busy[s] and now - t >= self.ttl_s]
        for session in idle:
            # Dropped from the table before awaiting, so a request arriving meanwhile gets the 404.
            del self.last_used[session]
            self.busy.pop(session, None)
            self.expired[session] = None
            while len(self.expired) > self._REMEMBERED:
                self.expired.popitem(last=False)
            log.info("closing session %s: unused for %g s", session, self.ttl_s)
            try:
                await self.sandbox.close_session(session)
            except UnknownSession:
                pass
            except Exception as e:  # noqa: BLE001 - one failed close must not stop the reaper
                log.warning("could not close idle session %s: %s: %s", session, type(e).__name__, e)

    async def run_forever(self) -> None:
        if self.ttl_s is None:
            return
        while True:
            await asyncio.sleep(min(max(self.ttl_s / 4, 0.05), 5.0))
            await self.sweep()


def create_app(
    sandbox: Sandbox,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    token: str | None = None,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    session_ttl_s: float | None = DEFAULT_SESSION_TTL_S,
    max_pending_runs: int | None = None,
) -> "FastAPI":
    """A FastAPI app serving `sandbox`. The caller owns the sandbox's lifetime (and `aclose`).

    `token`: required on every request but /v1/ping (None: no authentication). `read_timeout_s`:
    how long a request body may take to arrive. `session_ttl_s`: close sessions unused this
    long (None or 0: never). `max_pending_runs`: runs admitted at once, running or queued
    (None: `default_max_pending_runs(sandbox)`); more get 503 with Retry-After.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    if token is not None and not token:
        raise ValueError("token must be a non-empty string (or None for no authentication)")
    reaper = SessionReaper(sandbox, session_ttl_s or None)
    # Bodies of admitted runs: room for a few requests of the largest size at once.
    admission = _Admission(default_max_pending_runs(sandbox) if max_pending_runs is None else max_pending_runs,
                           max_bytes=_PENDING_BODIES * max_request_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = asyncio.create_task(reaper.run_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="torl sandbox", summary="SandboxFusion-compatible Python sandbox",
                  description=__doc__, lifespan=lifespan)
    app.state.session_reaper = reaper
    if token is not None:
        app.add_middleware(_RequireToken, token=token)

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        # After a 408 the rest of the body may never come: do not wait for it on this connection.
        headers = {"Connection": "close"} if exc.status_code == 408 else None
        if exc.status_code == 503:  # busy: nothing ran; the client may send it again after a while
            headers = {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse({"detail": exc.detail, "torl_error": exc.torl_error}, exc.status_code,
                            headers=headers)

    def gone(session: str) -> None:
        message = reaper.expired_message(session)
        if message is not None:
            raise BadRequest(404, "unknown_session", message)

    async def run(request: Request, session: str | None) -> Response:
        try:
            with admission.slot() as slot:  # before the body is read: a refused request costs no memory
                return await admitted_run(request, session, slot)
        except BadRequest as e:
            if e.status_code == 503:
                # Read the rest of the body without keeping it, so the client gets to read the
                # answer (a client still sending when the connection closes sees only a reset).
                await _discard_body(request, max_request_bytes, read_timeout_s)
            raise

    async def admitted_run(request: Request, session: str | None, slot: "_Slot") -> Response:
        parsed = parse_run_request(await _read_body(request, max_request_bytes, read_timeout_s, take=slot.take))
        if session is not None:
            gone(session)
        try:
            with contextlib.nullcontext() if session is None else reaper.using(session):
                result = await sandbox.run(parsed.code, session=session, **parsed.run_options())
        except InvalidCode as e:
            raise BadRequest(400, "invalid_request", _one_line(e)) from None
        except UnknownSession as e:
            raise BadRequest(404, "unknown_session", _one_line(e)) from None
        except Exception as e:  # our failure, never the code's: say so, keep serving
            log.exception("sandbox.run failed")
            result = ExecResult(ExecStatus.SANDBOX_ERROR, sandbox_message=f"{type(e).__name__}: {_one_line(e)}")
        # ensure_ascii: output may hold lone surrogates, which UTF-8 cannot encode but JSON
        # escapes can carry exactly.
        return Response(json.dumps(to_fusion_response(result)), media_type="application/json")

    @app.post("/run_code")
    async def run_code(request: Request) -> Response:
        return await run(request, None)

    @app.post("/torl/sessions/{session_id}/run_code")
    async def run_code_in_session(session_id: str, request: Request) -> Response:
        return await run(request, session_id)

    @app.post("/torl/sessions")
    async def open_session() -> JSONResponse:
        try:
            session = await sandbox.open_session()
        except Exception as e:  # noqa: BLE001 - answered as 503, the server keeps serving
            return _unavailable("could not open a session", e)
        reaper.opened(session)
        return JSONResponse({"session_id": session})

    @app.delete("/torl/sessions/{session_id}")
    async def close_session(session_id: str) -> JSONResponse:
        gone(session_id)
        reaper.forget(session_id)
        try:
            await sandbox.close_session(session_id)
        except UnknownSession as e:
            raise BadRequest(404, "unknown_session", _one_line(e)) from None
        except Exception as e:  # noqa: BLE001 - answered as 503
            return _unavailable("could not close the session", e)
        return JSONResponse({"closed": session_id})

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            await sandbox.health_check()
        except Exception as e:  # noqa: BLE001 - answered as 503
            return _unavailable("health check failed", e)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/ping")
    async def ping() -> str:
        return "pong"

    return app


def default_max_pending_runs(sandbox: Sandbox) -> int:
    """Runs admitted at once by default: one per worker and session, plus as many again queued
    for the pool, so a steady client never waits on the network for a free worker."""
    config = getattr(sandbox, "config", None)
    workers, sessions = getattr(config, "workers", None), getattr(config, "max_sessions", None)
    if isinstance(workers, int) and isinstance(sessions, int):
        return 2 * workers + sessions
    return 64


class _Admission:
    """Bounds on runs in the server at once, by number and by the bytes of their bodies; past
    either, BadRequest 503 (busy), never a queue. The byte bound keeps a few huge requests from
    taking the memory that many small ones would share."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        if limit < 1:
            raise ValueError(f"max_pending_runs must be >= 1, got {limit}")
        self.limit, self.pending = limit, 0
        self.max_bytes, self.bytes = max_bytes, 0

    def _busy(self, what: str) -> BadRequest:
        return BadRequest(503, "busy", f"the sandbox server is at its limit of {what}: retry after {RETRY_AFTER_S} s")

    @contextlib.contextmanager
    def slot(self) -> Iterator["_Slot"]:
        if self.pending >= self.limit:
            raise self._busy(f"{self.limit} pending runs (--max-pending-runs)")
        self.pending += 1
        slot = _Slot(self)
        try:
            yield slot
        finally:
            self.pending -= 1
            self.bytes -= slot.bytes


class _Slot:
    """One admitted run: counts its body's bytes against the server's budget as they arrive."""

    def __init__(self, admission: _Admission) -> None:
        self.admission, self.bytes = admission, 0

    def take(self, n: int) -> None:
        if self.admission.bytes + n > self.admission.max_bytes:
            raise self.admission._busy(f"{self.admission.max_bytes} bytes of pending request bodies")
        self.admission.bytes += n
        self.bytes += n


class _RequireToken:
    """ASGI middleware: 401 for any request without the token (but OPEN_PATHS)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode("utf-8")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not self._authorized(scope["headers"]):
            from fastapi.responses import JSONResponse

            response = JSONResponse(
                {"detail": "missing or wrong sandbox token: send 'Authorization: Bearer <token>' (RemoteSandbox: "
                           f"token= or ${TOKEN_ENV}; SandboxFusion clients: http://torl:<token>@host:port)",
                 "torl_error": "unauthorized"},
                # Connection: close, so a client without the token holds no connection open.
                401, headers={"WWW-Authenticate": 'Bearer realm="torl sandbox"', "Connection": "close"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, credentials = value.strip().partition(b" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == b"basic":  # what `requests` sends for http://user:token@host
            try:
                credentials = base64.b64decode(credentials, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        elif scheme != b"bearer":
            return False
        return hmac.compare_digest(credentials, self.token)  # constant time: no guessing byte by byte


async def _read_body(request: Any, limit: int, timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                     take: Any = None) -> bytes:
    """The request body, refusing (413) past `limit` bytes without reading the rest, and (408)
    when it has not all arrived within `timeout_s`. take(n), if given, is told of each n bytes
    before they are kept (it raises to refuse them)."""
    from starlette.requests import ClientDisconnect

    too_large = BadRequest(413, "too_large",
                           f"request body is larger than {limit} bytes: send less code "
                           "(or raise --max-request-mb on the server)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    if take is not None and declared.isdigit():
        take(int(declared))  # the whole body at once: refused before any of it is read
        take = None
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                if take is not None:
                    take(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(408, "read_timeout",
                         f"request body did not arrive within {timeout_s:g} s: send it whole "
                         "(or raise --read-timeout on the server)") from None
    except ClientDisconnect:
        raise BadRequest(400, "client_disconnected", "the client closed the connection mid-body") from None
    return b"".join(chunks)


async def _discard_body(request: Any, limit: int, timeout_s: float) -> None:
    """Read what is left of the body (up to `limit` bytes, within `timeout_s`), keeping none of it."""
    from starlette.requests import ClientDisconnect

    size = 0
    with contextlib.suppress(TimeoutError, ClientDisconnect, RuntimeError):  # RuntimeError: already consumed
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return


def _unavailable(what: str, e: Exception) -> Any:
    from fastapi.responses import JSONResponse

    log.warning("%s: %s: %s", what, type(e).__name__, e)
    return JSONResponse({"detail": f"{what}: {type(e).__name__}: {_one_line(e)}",
                         "torl_error": "sandbox_unavailable"}, 503)


def _one_line(e: BaseException) -> str:
    # str(KeyError("x")) is "'x'": use the message itself.
    text = str(e.args[0]) if len(e.args) == 1 else str(e)
    return " ".join(text.split()) or type(e).__name__


def _short_repr(value: Any, limit: int = 60) -> str:
    # A 400-digit number or a huge string must not become a 400-digit error message.
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_utf8(field: str, text: str) -> None:
    try:
        check_utf8(field, text)
    except InvalidCode as e:
        raise BadRequest(400, "invalid_request", str(e)) from None


# -- HTTP/1.1 protocol with a read deadline -------------------------------------------------------


@functools.cache
def _timed_h11_protocol() -> type:
    """uvicorn's h11 protocol plus a deadline for receiving each request.

    uvicorn times out only idle keep-alive connections, and any byte received cancels that
    timer: a client that opens a connection, or sends half its headers, holds the connection
    forever. Here a clock starts at the connection's opening and at the first byte of each
    request, and stops once the headers are in (the app then times the body it reads); a body
    the app answered without reading (401, 404) must still finish before the clock runs out.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        read_timeout_s = DEFAULT_READ_TIMEOUT_S
        max_connections = DEFAULT_MAX_CONNECTIONS
        max_waiting = DEFAULT_MAX_CONNECTIONS // 4  # connections that have not sent a request yet
        # Open connections, oldest first (per server: uvicorn_config makes a subclass for each).
        open_connections: "collections.OrderedDict[Any, None]"
        waiting: "collections.OrderedDict[Any, None]"
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()
            cls = type(self)
            cls.open_connections[self] = None
            cls.waiting[self] = None
            # Over the bounds, drop the oldest connection still waiting to send its first request
            # (a flood cannot keep a new, real client out), then the oldest idle keep-alive one.
            if len(cls.waiting) > cls.max_waiting:
                next(iter(cls.waiting))._drop("too many connections waiting to send a request")
            if len(cls.open_connections) > cls.max_connections:
                idle = next((c for c in cls.open_connections if c is not self and c._idle()), self)
                idle._drop("too many open connections")

        def _idle(self) -> bool:
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def _drop(self, why: str) -> None:
            cls = type(self)
            cls.open_connections.pop(self, None)
            cls.waiting.pop(self, None)
            if not self.transport.is_closing():
                log.debug("dropping connection from %s: %s", self.client, why)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()  # a new request's first bytes; later ones do not restart its clock
            super().data_received(data)
            self._after_event()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._after_event()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            type(self).open_connections.pop(self, None)
            type(self).waiting.pop(self, None)
            super().connection_lost(exc)

        def _after_event(self) -> None:
            if self.cycle is not None:  # a request's headers are in: no longer a waiting connection
                type(self).waiting.pop(self, None)
            state = self.conn.their_state
            if state is h11.IDLE:
                if self.conn.trailing_data[0]:  # part of a pipelined request is waiting
                    self._arm()
            elif state is h11.SEND_BODY and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # answered without reading the body: the rest must still come in time
            else:
                self._disarm()

        def _arm(self) -> None:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(self.read_timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _timed_out(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                log.info("dropping connection from %s: request not received within %g s",
                         self.client, self.read_timeout_s)
                self.transport.close()

    return TimedH11Protocol


def uvicorn_config(app: Any, *, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                   log_level: str = "info", max_connections: int = DEFAULT_MAX_CONNECTIONS) -> "uvicorn.Config":
    """uvicorn settings for serving `app`: HTTP/1.1 (h11) with a read deadline per request and a
    bound on open connections (a quarter of them for connections yet to send a request)."""
    import uvicorn

    if not (math.isfinite(read_timeout_s) and read_timeout_s > 0):
        raise ValueError(f"read_timeout_s must be a finite number of seconds > 0, got {read_timeout_s!r}")
    if max_connections < 4:
        raise ValueError(f"max_connections must be >= 4, got {max_connections}")
    # Always h11, even with httptools installed: the deadline is built on h11's states.
    protocol = type("TimedH11Protocol", (_timed_h11_protocol(),), {
        "read_timeout_s": read_timeout_s, "max_connections": max_connections,
        "max_waiting": max(2, max_connections // 4),
        "open_connections": collections.OrderedDict(), "waiting": collections.OrderedDict()})
    # Keep idle connections longer than clients do (RemoteSandbox: 4 s), so a client never
    # sends a request on a connection the server is closing at that moment.
    return uvicorn.Config(app, http=protocol, log_level=log_level, timeout_keep_alive=75,
                          timeout_graceful_shutdown=5)


# -- `torl sandbox serve` -------------------------------------------------------------------------


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one. Raises OSError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


async def serve(sandbox: Sandbox, sock: socket.socket, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                log_level: str = "info", token: str | None = None,
                read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                session_ttl_s: float | None = DEFAULT_SESSION_TTL_S, max_pending_runs: int | None = None) -> None:
    """Serve `sandbox` on `sock` until the server is told to exit (Ctrl-C / SIGTERM)."""
    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises the stopping signal once it has shut down, which for SIGTERM kills
        # the process before the caller can close the sandbox's workers: just stop instead.
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C skips waiting for open requests
            self.should_exit = True

    app = create_app(sandbox, max_request_bytes=max_request_bytes, token=token,
                     read_timeout_s=read_timeout_s, session_ttl_s=session_ttl_s, max_pending_runs=max_pending_runs)
    config = uvicorn_config(app, read_timeout_s=read_timeout_s, log_level=log_level,
                            max_connections=connection_budget(sandbox))
    await Server(config).serve(sockets=[sock])


def connection_budget(sandbox: Sandbox) -> int:
    """Open connections to allow: what the file-descriptor limit leaves after a reserve for the
    server itself and for its workers (replacing one opens pipes: running out of fds must never
    be what stops a worker from starting)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = getattr(sandbox, "config", None)
    workers = getattr(config, "workers", 0) + getattr(config, "max_sessions", 0)
    reserve = _FDS_RESERVED + _FDS_PER_WORKER * workers
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(4, min(DEFAULT_MAX_CONNECTIONS, soft - reserve))


def register_serve(sandbox_subparsers: Any) -> None:
    """Add `serve` to the `torl sandbox` sub-commands (`sandbox_subparsers` from add_subparsers)."""
    # dataclass only: keeps `torl --help` fast
    from torl.sandbox.config import SandboxConfig

    parser = sandbox_subparsers.add_parser(
        "serve", help="serve the local sandbox over HTTP (SandboxFusion-compatible /run_code)",
        description="Serve torl's local sandbox over HTTP in SandboxFusion's /run_code shape, plus "
                    "torl's session endpoints. Point RemoteSandbox (or any SandboxFusion client) at it.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; anyone who can reach it can run code)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port (default: {DEFAULT_PORT}, as SandboxFusion; 0 picks a free one)")
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                        help="largest request body accepted, in MiB (default: %(default)g)")
    parser.add_argument("--token", default=None,
                        help=f"require 'Authorization: Bearer TOKEN' on every request but /v1/ping (default: "
                             f"${TOKEN_ENV}; prefer the variable, arguments show in `ps`)")
    parser.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT_S, metavar="SECONDS",
                        help="drop a connection whose request headers, or then body, take longer than this "
                             "to arrive (default: %(default)g)")
    parser.add_argument("--session-ttl", type=float, default=DEFAULT_SESSION_TTL_S, metavar="SECONDS",
                        help="close a session unused this long; 0 = never (default: %(default)g)")
    parser.add_argument("--max-pending-runs", type=int, default=None, metavar="N",
                        help="runs admitted at once, running or queued; more get 503 with Retry-After "
                             "(default: 2 x workers + max sessions)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without a token (anyone who can reach the port "
                             "runs code)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="run code WITHOUT isolation (SandboxConfig.isolation='none') when bubblewrap "
                             "cannot work here; only for trusted code or throwaway machines")
    limits = parser.add_argument_group("sandbox limits (SandboxConfig fields)")
    for field in dataclasses.fields(SandboxConfig):
        default = _field_default(field)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue  # isolation has its own flag; preload/warmup stay code-level settings
        limits.add_argument(f"--{field.name.replace('_', '-')}", dest=f"config_{field.name}",
                            type=type(default), default=None, metavar=type(default).__name__.upper(),
                            help=f"SandboxConfig.{field.name} (default: {default})")
    parser.set_defaults(func=_serve_command)


def _field_default(field: "dataclasses.Field") -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _serve_command(args: argparse.Namespace) -> int:
    from torl.errors import UserError
    from torl.sandbox.config import SandboxConfig

    overrides = {k.removeprefix("config_"): v for k, v in vars(args).items()
                 if k.startswith("config_") and v is not None}
    if args.allow_unisolated:
        overrides["isolation"] = "none"
    try:
        config = SandboxConfig(**overrides)
    except (ValueError, InvalidCode) as e:
        raise UserError(f"bad sandbox setting: {e}") from None
    if args.max_request_mb <= 0:
        raise UserError("--max-request-mb must be > 0")
    if not (math.isfinite(args.read_timeout) and args.read_timeout > 0):
        raise UserError("--read-timeout must be a number of seconds > 0")
    if not (math.isfinite(args.session_ttl) and args.session_ttl >= 0):
        raise UserError("--session-ttl must be a number of seconds >= 0 (0 = never)")
    token = os.environ.get(TOKEN_ENV) if args.token is None else args.token
    if args.token == "":
        raise UserError("--token must not be empty (leave it out for no authentication)")
    if args.max_pending_runs is not None and args.max_pending_runs < 1:
        raise UserError("--max-pending-runs must be >= 1")
    if not token and not _is_loopback(args.host) and not args.insecure:
        raise UserError(f"refusing to serve on {args.host} without a token: anyone who can reach it could run "
                        f"code; set --token (or ${TOKEN_ENV}), or pass --insecure if you mean it")
    _raise_fd_limit()
    try:
        sock = listen_socket(args.host, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; "
                        "pick another --port/--host") from None
    try:
        asyncio.run(_serve_local(config, sock, max_request_bytes=int(args.max_request_mb * 2**20),
                                 log_level=args.log_level, token=token or None,
                                 read_timeout_s=args.read_timeout, session_ttl_s=args.session_ttl or None,
                                 max_pending_runs=args.max_pending_runs))
    finally:
        sock.close()
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def _raise_fd_limit() -> None:
    """Use every file descriptor the hard limit allows: the connection bound is derived from it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve_local(config: Any, sock: socket.socket, *, max_request_bytes: int, log_level: str,
                       token: str | None = None, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                       session_ttl_s: float | None = DEFAULT_SESSION_TTL_S,
                       max_pending_runs: int | None = None) -> None:
    from torl.errors import UserError
    from torl.sandbox.local import LocalSandbox

    sandbox = LocalSandbox(config)
    try:
        try:
            await sandbox.health_check()  # starts the workers; fail before accepting requests
        except SandboxUnavailable as e:
            hint = "" if config.isolation == "none" else " (or pass --allow-unisolated on a throwaway machine)"
            raise UserError(f"{e}{hint}") from None
        host, port = sock.getsockname()[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        auth = "token required" if token else "no token"
        print(f"torl sandbox: serving on {url} ({config.workers} workers, isolation={config.isolation}, {auth}); "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        if not _is_loopback(host) and not token:
            print(f"torl sandbox: WARNING: --insecure: listening on {host} without --token: anyone who can "
                  f"reach port {port} can run code", file=sys.stderr, flush=True)
        await serve(sandbox, sock, max_request_bytes=max_request_bytes, log_level=log_level, token=token,
                    read_timeout_s=read_timeout_s, session_ttl_s=session_ttl_s, max_pending_runs=max_pending_runs)
    finally:
        await sandbox.aclose()
