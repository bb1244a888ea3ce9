"""`torl sandbox serve`: any `Sandbox` over HTTP, in SandboxFusion's `/run_code` shape.

SandboxFusion clients work unchanged; torl's `RemoteSandbox` reads the extra fields and gets
the exact `ExecResult` back.

Endpoints
    POST   /run_code                      SandboxFusion request -> SandboxFusion response (+ `torl`)
    POST   /torl/sessions                 open a stateful session -> {"session_id": "..."}
    POST   /torl/sessions/{id}/run_code   like /run_code, inside that session (state persists)
    DELETE /torl/sessions/{id}            close it
    GET    /health                        runs the sandbox's health check: 200 or 503
    GET    /v1/ping                       liveness, as SandboxFusion: "pong"

Request (`/run_code`): `code` (str, required), `language` ("python" only), `run_timeout`
(seconds; absent = the sandbox's default), `memory_limit_MB` (-1 or absent = the sandbox's
default). SandboxFusion's `compile_timeout` is ignored (Python is not compiled); `stdin`,
`files`, `fetch_files` and `args` must be empty: torl's sandbox runs a code string only.

Response: SandboxFusion's `{status, message, compile_result, run_result{status, execution_time,
return_code, stdout, stderr}, executor_pod_name, files}` with `status` Success / Failed /
SandboxError and `run_result.status` Finished / TimeLimitExceeded / Error, plus
`torl: {status, exit_code, duration_s, stdout_truncated, stderr_truncated, sandbox_message}`
holding the exact `ExecStatus` (SandboxFusion has no memory or output-limit states).

Bad requests get HTTP 400 (413 when too large, 404 for an unknown session) with
`{"detail": "<one line>", "torl_error": "<kind>"}`.
"""

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from torl.sandbox.base import InvalidCode, Sandbox, SandboxUnavailable, UnknownSession
from torl.sandbox.result import ExecResult, ExecStatus

if TYPE_CHECKING:  # fastapi costs ~1 s to import: only `create_app` pulls it in
    from fastapi import FastAPI

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080  # SandboxFusion's port, so its clients need no change
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20
SUPPORTED_LANGUAGES = ("python",)

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


class RunRequest:
    """The parts of a SandboxFusion `/run_code` request that torl's sandbox uses."""

    def __init__(self, code: str, timeout: float | None, memory_mb: int | None) -> None:
        self.code, self.timeout, self.memory_mb = code, timeout, memory_mb


def parse_run_request(body: bytes) -> RunRequest:
    """Validate a `/run_code` body; raise `BadRequest` naming the first problem."""
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest(400, "invalid_request", "request body is not UTF-8: send UTF-8 JSON") from None
    except ValueError as e:
        raise BadRequest(400, "invalid_request", f"request body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, "invalid_request", "request body must be a JSON object")

    code = payload.get("code")
    if not isinstance(code, str):
        raise BadRequest(400, "invalid_request", "field `code` (a string of Python) is required")
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRequest(400, "invalid_request",
                         f"code is not valid UTF-8 ({e.reason} at index {e.start}); fix the text") from None
    language = payload.get("language")
    if language not in SUPPORTED_LANGUAGES:
        raise BadRequest(400, "unsupported_language",
                         f"language {language!r} is not supported: torl's sandbox runs only "
                         f"{', '.join(SUPPORTED_LANGUAGES)}")

    timeout = payload.get("run_timeout")
    if timeout is not None and not (_is_number(timeout) and math.isfinite(timeout) and timeout > 0):
        raise BadRequest(400, "invalid_request",
                         f"run_timeout must be a finite number of seconds > 0, got {timeout!r}")
    memory = payload.get("memory_limit_MB")
    if memory == -1:  # SandboxFusion's "no limit given"
        memory = None
    if memory is not None and not (isinstance(memory, int) and not isinstance(memory, bool) and memory > 0):
        raise BadRequest(400, "invalid_request",
                         f"memory_limit_MB must be a positive integer or -1 (default), got {memory!r}")

    for field in ("stdin", "files", "fetch_files", "args"):
        if payload.get(field):
            raise BadRequest(400, "unsupported_field",
                             f"field `{field}` is not supported: torl's sandbox runs a code string only; "
                             "leave it empty")
    return RunRequest(code, None if timeout is None else float(timeout), memory)


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
        "files": {},
        "torl": {
            "status": result.status.value,
            "exit_code": result.exit_code,
            "duration_s": result.duration_s,
            "stdout_truncated": result.stdout_truncated,
            "stderr_truncated": result.stderr_truncated,
            "sandbox_message": result.sandbox_message,
        },
    }


def create_app(sandbox: Sandbox, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> "FastAPI":
    """A FastAPI app serving `sandbox`. The caller owns the sandbox's lifetime (and `aclose`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="torl sandbox", summary="SandboxFusion-compatible Python sandbox",
                  description=__doc__)

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "torl_error": exc.torl_error}, exc.status_code)

    async def run(request: Request, session: str | None) -> Response:
        parsed = parse_run_request(await _read_body(request, max_request_bytes))
        try:
            result = await sandbox.run(parsed.code, timeout=parsed.timeout,
                                       memory_mb=parsed.memory_mb, session=session)
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
            return JSONResponse({"session_id": await sandbox.open_session()})
        except Exception as e:
            return _unavailable("could not open a session", e)

    @app.delete("/torl/sessions/{session_id}")
    async def close_session(session_id: str) -> JSONResponse:
        try:
            await sandbox.close_session(session_id)
        except UnknownSession as e:
            raise BadRequest(404, "unknown_session", _one_line(e)) from None
        except Exception as e:
            return _unavailable("could not close the session", e)
        return JSONResponse({"closed": session_id})

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            await sandbox.health_check()
        except Exception as e:
            return _unavailable("health check failed", e)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/ping")
    async def ping() -> str:
        return "pong"

    return app


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body, refusing (413) past `limit` bytes without reading the rest."""
    too_large = BadRequest(413, "too_large",
                           f"request body is larger than {limit} bytes: send less code "
                           "(or raise --max-request-mb on the server)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _unavailable(what: str, e: Exception) -> Any:
    from fastapi.responses import JSONResponse

    log.warning("%s: %s: %s", what, type(e).__name__, e)
    return JSONResponse({"detail": f"{what}: {type(e).__name__}: {_one_line(e)}",
                         "torl_error": "sandbox_unavailable"}, 503)


def _one_line(e: BaseException) -> str:
    # str(KeyError("x")) is "'x'": use the message itself.
    text = str(e.args[0]) if len(e.args) == 1 else str(e)
    return " ".join(text.split()) or type(e).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- `torl sandbox serve` -------------------------------------------------------------------------


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one. Raises OSError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


async def serve(sandbox: Sandbox, sock: socket.socket, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                log_level: str = "info") -> None:
    """Serve `sandbox` on `sock` until the server is told to exit (Ctrl-C / SIGTERM)."""
    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises the stopping signal once it has shut down, which for SIGTERM kills
        # the process before the caller can close the sandbox's workers: just stop instead.
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C skips waiting for open requests
            self.should_exit = True

    # Keep idle connections longer than clients do (RemoteSandbox: 4 s), so a client never
    # sends a request on a connection the server is closing at that moment.
    config = uvicorn.Config(create_app(sandbox, max_request_bytes=max_request_bytes),
                            log_level=log_level, timeout_keep_alive=75, timeout_graceful_shutdown=5)
    await Server(config).serve(sockets=[sock])


def register_serve(sandbox_subparsers: Any) -> None:
    """Add `serve` to the `torl sandbox` sub-commands (`sandbox_subparsers` from add_subparsers)."""
    from torl.sandbox.config import SandboxConfig  # dataclass only: keeps `torl --help` fast

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
    from torl.cli import UserError
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
    try:
        sock = listen_socket(args.host, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; "
                        "pick another --port/--host") from None
    try:
        asyncio.run(_serve_local(config, sock, max_request_bytes=int(args.max_request_mb * 2**20),
                                 log_level=args.log_level))
    finally:
        sock.close()
    return 0


async def _serve_local(config: Any, sock: socket.socket, *, max_request_bytes: int, log_level: str) -> None:
    from torl.cli import UserError
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
        print(f"torl sandbox: serving on {url} ({config.workers} workers, isolation={config.isolation}); "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        if host not in ("127.0.0.1", "::1", "localhost"):
            print(f"torl sandbox: WARNING: listening on {host}: anyone who can reach port {port} can run code",
                  file=sys.stderr, flush=True)
        await serve(sandbox, sock, max_request_bytes=max_request_bytes, log_level=log_level)
    finally:
        await sandbox.aclose()
