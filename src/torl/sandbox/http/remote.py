"""`RemoteSandbox`: run code on a sandbox server over HTTP (`torl sandbox serve` or SandboxFusion).

Both servers speak SandboxFusion's `POST /run_code`. Ours adds a `torl` object to each response
that carries the exact `ExecStatus` (SandboxFusion has no memory / output-limit states) and
session endpoints under `/torl/sessions`; against a plain SandboxFusion server the statuses are
mapped back from its own fields and sessions raise `SessionsNotSupported`.

Infrastructure failures (connection refused, HTTP 5xx, the HTTP call itself timing out) are
retried a bounded number of times and then reported as `ExecStatus.SANDBOX_ERROR`, never as an
error of the code: training must not learn from a dead server. A refused token (HTTP 401) raises
`SandboxUnavailable`: retrying cannot fix it.

`stdin`, `files` and `fetch_files` travel as SandboxFusion sends them (file contents in base64).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections.abc import Mapping, Sequence
from urllib.parse import quote

import httpx

from torl.errors import SessionsNotSupported
from torl.sandbox.base import InvalidCode, Sandbox, SandboxUnavailable, UnknownSession
from torl.sandbox.config import check_utf8, encode_io, finite_float
from torl.sandbox.http.server import TOKEN_ENV
from torl.sandbox.result import ExecResult, ExecStatus

HEALTH_SNIPPET = "print(6 * 7)"


class _Unreachable(Exception):
    """Every attempt of one HTTP call failed at the transport level (or with HTTP 5xx)."""


class RemoteSandbox(Sandbox):
    """A `Sandbox` whose code runs on an HTTP server speaking SandboxFusion's `/run_code` API.

    Args:
        url: base URL of the server, e.g. ``http://127.0.0.1:8080``.
        timeout: run timeout (seconds) sent when `run` gets none; SandboxFusion's default is 10.
        memory_mb: memory limit sent when `run` gets none; None = the server's default.
        timeout_margin_s: the HTTP call may take this much longer than the run timeout before
            it counts as a failure of the server (covers queueing and transfer on the server).
        connect_timeout_s: how long to wait for a TCP connection.
        max_connections: concurrent HTTP requests to the server; more requests wait their turn.
        retries: extra attempts after a transport failure or HTTP 5xx. Stateless runs are
            retried on any such failure; session runs only when the request never reached the
            server (a retried session block could otherwise run twice).
        retry_backoff_s: first pause between attempts; doubles each time.
        token: sent as `Authorization: Bearer <token>` (the server's `--token`); None = the
            TORL_SANDBOX_TOKEN environment variable, if set.
        transport: an `httpx` transport to use instead of the network (for tests).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        memory_mb: int | None = None,
        timeout_margin_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 256,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"sandbox URL {url!r} must start with http:// or https://")
        if retries < 0 or max_connections < 1:
            raise ValueError("retries must be >= 0 and max_connections >= 1")
        _check_limits(timeout, memory_mb)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.timeout_margin_s = timeout_margin_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._token = (os.environ.get(TOKEN_ENV) if token is None else token) or None
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- Sandbox API ---------------------------------------------------------------------------

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        memory_mb: int | None = None,
        session: str | None = None,
        stdin: str | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> ExecResult:
        timeout = self.timeout if timeout is None else timeout
        memory_mb = self.memory_mb if memory_mb is None else memory_mb
        _check_limits(timeout, memory_mb)
        _check_code(code)
        payload = {
            "code": code,
            "language": "python",
            "run_timeout": timeout,
            "memory_limit_MB": -1 if memory_mb is None else memory_mb,
        }
        # Only what is used goes on the wire: a plain request stays the plain SandboxFusion one.
        payload.update(encode_io(stdin, files, fetch_files))
        path = "/run_code" if session is None else f"/torl/sessions/{quote(session, safe='')}/run_code"
        started = time.monotonic()
        try:
            response = await self._request(
                "POST", path, json=payload, read_timeout=timeout + self.timeout_margin_s,
                idempotent=session is None,
            )
        except _Unreachable as e:
            return _sandbox_error(str(e), started)

        if response.status_code == 200:
            try:
                return result_from_response(response.json())
            except (ValueError, KeyError, TypeError) as e:
                return _sandbox_error(f"unreadable response from {self.url}{path}: {e}", started)
        detail = _error_detail(response)
        if response.status_code == 401:
            raise SandboxUnavailable(self._unauthorized_message())
        if response.status_code == 404:
            if _torl_error(response) == "unknown_session":
                raise UnknownSession(detail)
            if session is not None:
                raise SessionsNotSupported(self._no_sessions_message())
            return _sandbox_error(
                f"{self.url} has no /run_code endpoint (HTTP 404): is it a torl or SandboxFusion server?",
                started,
            )
        if response.status_code in (400, 413, 422):
            raise InvalidCode(f"sandbox server rejected the request: {detail}")
        return _sandbox_error(f"{self.url}{path} answered HTTP {response.status_code}: {detail}", started)

    async def open_session(self) -> str:
        response = await self._checked("POST", "/torl/sessions")
        if response.status_code in (404, 405):
            raise SessionsNotSupported(self._no_sessions_message())
        if response.status_code != 200:
            raise SandboxUnavailable(
                f"remote sandbox {self.url} could not open a session: HTTP {response.status_code}: "
                f"{_error_detail(response)}"
            )
        return str(response.json()["session_id"])

    async def close_session(self, session: str) -> None:
        response = await self._checked("DELETE", f"/torl/sessions/{quote(session, safe='')}")
        if response.status_code == 404:
            if _torl_error(response) == "unknown_session":
                raise UnknownSession(_error_detail(response))
            raise SessionsNotSupported(self._no_sessions_message())
        if response.status_code != 200:
            raise SandboxUnavailable(
                f"remote sandbox {self.url} could not close session {session!r}: "
                f"HTTP {response.status_code}: {_error_detail(response)}"
            )

    async def health_check(self) -> None:
        response = await self._checked("GET", "/health")
        if response.status_code == 200:
            return
        if response.status_code != 404:
            raise SandboxUnavailable(
                f"remote sandbox {self.url} is unhealthy: HTTP {response.status_code}: {_error_detail(response)}"
            )
        # A plain SandboxFusion server has no /health: run a known snippet instead.
        result = await self.run(HEALTH_SNIPPET)
        if not result.ok or result.stdout.strip() != "42":
            raise SandboxUnavailable(
                f"remote sandbox {self.url} failed its health check: {HEALTH_SNIPPET!r} gave "
                f"status={result.status.value} stdout={result.stdout[:200]!r} "
                f"stderr={result.stderr[-300:]!r} {result.sandbox_message}".rstrip()
            )

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.aclose()

    # -- HTTP plumbing -------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        # A client is tied to the event loop it was first used in; `run_batch` makes a fresh
        # loop per call, so make a fresh client whenever the loop changes.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                transport=self._transport,
                # keepalive_expiry below servers' usual 5 s idle timeout (uvicorn's default), so
                # we drop an idle connection before the server does, not while sending on it.
                limits=httpx.Limits(max_connections=self.max_connections,
                                    max_keepalive_connections=self.max_connections, keepalive_expiry=4.0),
                headers={"Authorization": f"Bearer {self._token}"} if self._token else None,
            )
            self._client_loop = loop
        return self._client

    async def _request(
        self, method: str, path: str, *, json: dict | None = None, read_timeout: float,
        idempotent: bool,
    ) -> httpx.Response:
        """One HTTP call with bounded retries; raises `_Unreachable` when every attempt failed.

        A final HTTP 5xx response is returned (the caller reports it), not raised.
        """
        # pool=None: waiting for a free connection is our own queueing, not a server failure.
        timeouts = httpx.Timeout(read_timeout, connect=self.connect_timeout_s, pool=None)
        failure = ""
        attempts = self.retries + 1
        # A busy server (503 + Retry-After) refused the request before running it: it is sent
        # again after the pause the server asks for, even a session block, for as long as the run
        # would otherwise have waited in the server's queue. That is the server's back-pressure,
        # not a failure: it does not use up the retries.
        busy_until = time.monotonic() + read_timeout
        attempt = 0
        while True:
            try:
                response = await self._http().request(method, path, json=json, timeout=timeouts)
            except httpx.TransportError as e:
                failure = f"{type(e).__name__}: {e}".rstrip(": ")
                never_sent = isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))
                if (idempotent or never_sent) and attempt + 1 < attempts:
                    attempt += 1
                    await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
                    continue
                attempts = attempt + 1
                break
            if response.status_code == 503 and "retry-after" in response.headers \
                    and time.monotonic() < busy_until:
                pause = _seconds(response.headers["retry-after"])
                await asyncio.sleep(pause * random.uniform(0.5, 1.5))  # spread the returning crowd
                continue
            if response.status_code >= 500 and idempotent and attempt + 1 < attempts:
                failure = f"HTTP {response.status_code}: {_error_detail(response)}"
                attempt += 1
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
                continue
            return response
        raise _Unreachable(
            f"remote sandbox {self.url}{path} failed after {attempts} attempt(s): {failure}"
        )

    async def _checked(self, method: str, path: str) -> httpx.Response:
        """Control-plane call (sessions, health): unreachable server -> SandboxUnavailable."""
        try:
            response = await self._request(
                method, path, read_timeout=self.timeout + self.timeout_margin_s,
                idempotent=method != "POST",
            )
        except _Unreachable as e:
            raise SandboxUnavailable(
                f"{e}. Is the server running? Start one with `torl sandbox serve` or fix the URL."
            ) from None
        if response.status_code == 401:
            raise SandboxUnavailable(self._unauthorized_message())
        return response

    def _unauthorized_message(self) -> str:
        sent = "refused our token" if self._token else "wants a token and we sent none"
        return (f"remote sandbox {self.url} {sent} (HTTP 401): pass token= or set {TOKEN_ENV} "
                "to the server's --token")

    def _no_sessions_message(self) -> str:
        return (
            f"{self.url} has no session endpoints (a plain SandboxFusion server?): sessions need a "
            "server started with `torl sandbox serve`, or run without session="
        )


# -- response mapping (also used by tests of the SandboxFusion shape) -----------------------------


def result_from_response(body: dict) -> ExecResult:
    """Turn a `/run_code` response into an `ExecResult`.

    Uses the exact torl fields when the server is ours; otherwise maps SandboxFusion's statuses:
    `SandboxError` -> SANDBOX_ERROR, `TimeLimitExceeded` -> TIMEOUT, a non-zero exit ending in
    `MemoryError` -> MEMORY, any other non-zero exit -> ERROR.
    """
    result = _result_without_files(body)
    result.files = _decode_files(body.get("files"))
    return result


def _result_without_files(body: dict) -> ExecResult:
    run = body.get("run_result") or {}
    stdout, stderr = run.get("stdout") or "", run.get("stderr") or ""
    extra = body.get("torl")
    if extra is not None:
        return ExecResult(
            status=ExecStatus(extra["status"]), stdout=stdout, stderr=stderr,
            exit_code=extra["exit_code"], duration_s=float(extra["duration_s"]),
            stdout_truncated=bool(extra["stdout_truncated"]),
            stderr_truncated=bool(extra["stderr_truncated"]),
            sandbox_message=extra["sandbox_message"],
        )

    status = body["status"]
    duration = float(run.get("execution_time") or 0.0)
    exit_code = run.get("return_code")
    if status == "SandboxError" or run.get("status") == "Error":
        message = body.get("message") or stderr or "SandboxFusion reported SandboxError"
        return ExecResult(ExecStatus.SANDBOX_ERROR, stdout, stderr, exit_code, duration,
                          sandbox_message=f"SandboxFusion: {message}")
    if not run:
        return ExecResult(ExecStatus.SANDBOX_ERROR, sandbox_message=(
            f"SandboxFusion answered status={status!r} without a run_result: {body.get('message', '')}"))
    if status == "Success":
        return ExecResult(ExecStatus.OK, stdout, stderr, exit_code, duration)
    if status != "Failed":
        raise ValueError(f"unknown SandboxFusion status {status!r}")
    if run.get("status") == "TimeLimitExceeded":
        result_status = ExecStatus.TIMEOUT
    elif _last_line(stderr).startswith("MemoryError"):
        result_status = ExecStatus.MEMORY
    else:
        result_status = ExecStatus.ERROR
    return ExecResult(result_status, stdout, stderr, exit_code, duration)


def _decode_files(files: object) -> dict[str, bytes]:
    if not files:
        return {}
    if not isinstance(files, dict):
        raise TypeError(f"`files` must be an object {{path: base64}}, got {type(files).__name__}")
    return {str(path): base64.b64decode(content, validate=True) for path, content in files.items()}


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _sandbox_error(message: str, started: float) -> ExecResult:
    return ExecResult(ExecStatus.SANDBOX_ERROR, duration_s=time.monotonic() - started,
                      sandbox_message=message)


def _check_code(code: str) -> None:
    # JSON cannot carry these faithfully, so refuse them here with the same words the server uses.
    if not isinstance(code, str):
        raise InvalidCode(f"code must be a str, got {type(code).__name__}")
    check_utf8("code", code)


def _check_limits(timeout: float, memory_mb: int | None) -> None:
    number = finite_float(timeout)
    if number is None or number <= 0:
        raise InvalidCode(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    if memory_mb is not None and not (isinstance(memory_mb, int) and memory_mb > 0):
        raise InvalidCode(f"memory_mb must be a positive integer (or None), got {memory_mb!r}")


def _error_body(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _torl_error(response: httpx.Response) -> str | None:
    return _error_body(response).get("torl_error")


def _error_detail(response: httpx.Response) -> str:
    """One line: our `detail` string, FastAPI's validation list, or the start of the body."""
    detail = _error_body(response).get("detail")
    if isinstance(detail, list):  # FastAPI / pydantic validation errors
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}" for d in detail
            if isinstance(d, dict)
        )
    if not detail:
        detail = response.text[:300]
    return " ".join(str(detail).split())


def _seconds(value: str | None, cap: float = 30.0) -> float:
    """A Retry-After value in seconds (the delta form), bounded; 0 when absent or a date."""
    try:
        return min(max(float(value), 0.0), cap) if value is not None else 0.0
    except ValueError:
        return 0.0
