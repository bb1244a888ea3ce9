"""Remote sandbox: the SandboxFusion-shaped server and the `RemoteSandbox` client, over real HTTP.

Servers run uvicorn in a background thread on a free loopback port and are shut down (and their
sandbox closed) by the fixtures that start them.
"""

import asyncio
import base64
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Self

import httpx
import pytest
import uvicorn

from torl.sandbox.base import InvalidCode, Sandbox, SandboxUnavailable, UnknownSession
from torl.sandbox.config import SandboxConfig
from torl.sandbox.http.remote import (
    RemoteSandbox,
    SessionsNotSupported,
    result_from_response,
)
from torl.sandbox.http.server import (
    TOKEN_ENV,
    BadRequest,
    create_app,
    listen_socket,
    parse_run_request,
    to_fusion_response,
    uvicorn_config,
)
from torl.sandbox.local import LocalSandbox
from torl.sandbox.result import ExecResult, ExecStatus

# One result per status, with every field set, to check that nothing is lost on the wire.
EVERY_STATUS = [
    ExecResult(ExecStatus.OK, "4\n", "", 0, 0.25, files={"out.txt": b"4\n", "blob.bin": bytes(range(256))}),
    ExecResult(ExecStatus.ERROR, "partial\n", "Traceback (most recent call last):\nZeroDivisionError: x", 1, 0.5),
    ExecResult(ExecStatus.TIMEOUT, "tick\n", "", -9, 3.0),
    ExecResult(ExecStatus.MEMORY, "", "MemoryError", 1, 0.75),
    ExecResult(ExecStatus.OUTPUT_LIMIT, "aaa…aaa", "", -9, 1.5, stdout_truncated=True, stderr_truncated=True),
    ExecResult(ExecStatus.SANDBOX_ERROR, "", "", None, 0.0, sandbox_message="worker died"),
]


class ScriptedSandbox(Sandbox):
    """Answers each `run` with the next scripted result (or raises it): tests the wire, not Python.

    A scripted float is a pause (seconds) before the next item. Sessions are "s1", "s2"...
    """

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.calls: list[dict] = []
        self.opened: list[str] = []
        self.closed: list[str] = []

    async def run(self, code, *, timeout=None, memory_mb=None, session=None, **io):
        # stdin/files/fetch_files are recorded only when the server passes them.
        self.calls.append({"code": code, "timeout": timeout, "memory_mb": memory_mb, "session": session, **io})
        if session is not None and session in self.closed:
            raise UnknownSession(f"unknown session {session!r}")
        item = self.script.pop(0)
        if isinstance(item, float):
            await asyncio.sleep(item)
            self.seen_closed = list(self.closed)  # what had been closed by the time the pause ended
            item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def open_session(self):
        self.opened.append(f"s{len(self.opened) + 1}")
        return self.opened[-1]

    async def close_session(self, session):
        known = session in self.opened and session not in self.closed
        self.closed.append(session)  # every attempt, to catch double closes
        if not known:
            raise UnknownSession(f"unknown session {session!r}")

    async def health_check(self):
        pass

    async def aclose(self):
        pass


class ServerThread:
    """uvicorn serving `make_sandbox()` on 127.0.0.1:<free port>, in its own thread and loop."""

    def __init__(self, make_sandbox, **app_kwargs) -> None:
        self.make_sandbox, self.app_kwargs = make_sandbox, app_kwargs
        self.port = 0
        self.sock = listen_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.sandbox: Sandbox | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(60)
        if self.error is not None or not (self.server and self.server.started):
            self.__exit__()
            raise RuntimeError(f"test server did not start: {self.error!r}")
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self._thread.join(60)
        self.sock.close()
        assert not self._thread.is_alive(), "test server thread did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - surfaced by __enter__
            self.error = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self.sandbox = self.make_sandbox()
        try:
            # The same protocol and settings as `torl sandbox serve`.
            config = uvicorn_config(create_app(self.sandbox, **self.app_kwargs), log_level="warning",
                                    read_timeout_s=self.app_kwargs.get("read_timeout_s", 30.0))
            self.server = uvicorn.Server(config)
            serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
            while not self.server.started and not serving.done():
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving
        finally:
            await self.sandbox.aclose()


def free_port_with_nothing_listening() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the wire format, without a network ---------------------------------------------------------


@pytest.mark.parametrize("result", EVERY_STATUS, ids=lambda r: r.status.value)
def test_every_status_round_trips_exactly_through_the_response(result):
    body = json.loads(json.dumps(to_fusion_response(result)))
    assert result_from_response(body) == result


@pytest.mark.parametrize(
    ("status", "fusion", "run_status", "return_code"),
    [
        (ExecStatus.OK, "Success", "Finished", 0),
        (ExecStatus.ERROR, "Failed", "Finished", 1),
        (ExecStatus.MEMORY, "Failed", "Finished", 1),
        (ExecStatus.OUTPUT_LIMIT, "Failed", "Finished", -9),
        (ExecStatus.TIMEOUT, "Failed", "TimeLimitExceeded", None),
        (ExecStatus.SANDBOX_ERROR, "SandboxError", "Error", None),
    ],
)
def test_response_speaks_sandboxfusion_statuses(status, fusion, run_status, return_code):
    (result,) = [r for r in EVERY_STATUS if r.status is status]
    body = to_fusion_response(result)
    assert body["status"] == fusion
    assert body["run_result"]["status"] == run_status
    assert body["run_result"]["return_code"] == return_code
    assert body["run_result"]["stdout"] == result.stdout
    assert body["run_result"]["execution_time"] == result.duration_s
    assert body["compile_result"] is None
    assert body["files"] == {path: base64.b64encode(data).decode() for path, data in result.files.items()}
    assert body["message"] == result.sandbox_message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "Success", "message": "", "run_result": {"status": "Finished", "execution_time": 0.1,
          "return_code": 0, "stdout": "hi\n", "stderr": ""}}, ExecResult(ExecStatus.OK, "hi\n", "", 0, 0.1)),
        ({"status": "Failed", "message": "", "run_result": {"status": "Finished", "execution_time": 0.2,
          "return_code": 1, "stdout": "", "stderr": "Traceback...\nNameError: x"}},
         ExecResult(ExecStatus.ERROR, "", "Traceback...\nNameError: x", 1, 0.2)),
        ({"status": "Failed", "message": "", "run_result": {"status": "TimeLimitExceeded", "execution_time": 10.0,
          "return_code": None, "stdout": "a", "stderr": None}}, ExecResult(ExecStatus.TIMEOUT, "a", "", None, 10.0)),
        ({"status": "Failed", "message": "", "run_result": {"status": "Finished", "execution_time": 0.3,
          "return_code": 1, "stdout": "", "stderr": "Traceback...\nMemoryError\n"}},
         ExecResult(ExecStatus.MEMORY, "", "Traceback...\nMemoryError\n", 1, 0.3)),
    ],
    ids=["success", "failed", "time-limit", "memory-error"],
)
def test_plain_sandboxfusion_responses_map_back(body, expected):
    assert result_from_response(body) == expected


def test_sandboxfusion_sandbox_error_is_never_an_ordinary_error():
    body = {"status": "SandboxError", "message": "exception on running code: boom", "run_result": None}
    result = result_from_response(body)
    assert result.status is ExecStatus.SANDBOX_ERROR
    assert "boom" in result.sandbox_message
    body = {"status": "Failed", "message": "", "run_result": {"status": "Error", "stderr": "cgroup gone"}}
    assert result_from_response(body).status is ExecStatus.SANDBOX_ERROR


def test_request_with_sandboxfusion_defaults_is_accepted():
    raw = {"code": "print(1)", "language": "python", "compile_timeout": 10, "run_timeout": 3,
           "memory_limit_MB": -1, "stdin": "", "files": {}, "fetch_files": [], "args": []}
    parsed = parse_run_request(json.dumps(raw).encode())
    assert (parsed.code, parsed.timeout, parsed.memory_mb) == ("print(1)", 3.0, None)
    assert parse_run_request(json.dumps({**raw, "stdin": None}).encode()).stdin is None
    parsed = parse_run_request(b'{"code": "x", "language": "python", "memory_limit_MB": 256}')
    assert (parsed.timeout, parsed.memory_mb) == (None, 256)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not valid JSON"),
        (b'{"code": "\xff\xfe"}', "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'{"language": "python"}', "`code`"),
        (b'{"code": "1", "language": "cpp"}', "only python"),
        (b'{"code": "1"}', "language None"),
        (b'{"code": "\\ud800", "language": "python"}', "not valid UTF-8"),
        (b'{"code": "1", "language": "python", "run_timeout": 0}', "run_timeout"),
        (b'{"code": "1", "language": "python", "run_timeout": -2}', "run_timeout"),
        (b'{"code": "1", "language": "python", "run_timeout": NaN}', "run_timeout"),
        (b'{"code": "1", "language": "python", "run_timeout": "5"}', "run_timeout"),
        (b'{"code": "1", "language": "python", "memory_limit_MB": 0}', "memory_limit_MB"),
        (b'{"code": "1", "language": "python", "memory_limit_MB": 1.5}', "memory_limit_MB"),
        (b'{"code": "1", "language": "python", "stdin": 42}', "stdin must be a string"),
        (b'{"code": "1", "language": "python", "stdin": "\\udc80"}', "stdin is not valid UTF-8"),
        (b'{"code": "1", "language": "python", "files": ["a.txt"]}', "files must be an object"),
        (b'{"code": "1", "language": "python", "files": {"a.txt": "not base64!"}}', "files['a.txt'] is not valid base64"),
        (b'{"code": "1", "language": "python", "files": {"a.txt": 7}}', "files['a.txt'] must be a base64 string"),
        (b'{"code": "1", "language": "python", "fetch_files": "a.txt"}', "fetch_files must be a list"),
        (b'{"code": "1", "language": "python", "fetch_files": [1]}', "fetch_files must be a list"),
        (b'{"code": "1", "language": "python", "args": ["-v"]}', "`args`"),
        # Numbers beyond float range, written as an exponent or as 400 digits.
        (b'{"code": "1", "language": "python", "run_timeout": 1e400}', "run_timeout must be a finite"),
        (b'{"code": "1", "language": "python", "run_timeout": 1' + b"0" * 400 + b"}", "integer of 401 digits"),
        (b'{"code": "1", "language": "python", "run_timeout": -1' + b"0" * 400 + b"}", "run_timeout"),
        (b'{"code": "1", "language": "python", "memory_limit_MB": 1e400}', "memory_limit_MB"),
        (b'{"code": "1", "language": "python", "memory_limit_MB": -1' + b"0" * 400 + b"}", "integer of 401 digits"),
        (b'{"code": "1", "language": "python", "run_timeout": 1' + b"0" * 5000 + b"}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"code": "1", "language": "python", "files": ' + b'{"a": ' * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_bad_requests_name_the_problem(body, words):
    with pytest.raises(BadRequest) as info:
        parse_run_request(body)
    assert info.value.status_code == 400
    assert words in info.value.detail
    assert "\n" not in info.value.detail and len(info.value.detail) < 300


def test_stdin_files_and_fetch_files_are_parsed_as_sandboxfusion_sends_them():
    raw = {"code": "print(input())", "language": "python", "stdin": "42\n",
           "files": {"data/in.bin": base64.b64encode(b"\x00\xffraw").decode(), "skipped.txt": None},
           "fetch_files": ["out.txt", "data/in.bin", "out.txt"]}
    parsed = parse_run_request(json.dumps(raw).encode())
    assert parsed.stdin == "42\n"
    assert parsed.files == {"data/in.bin": b"\x00\xffraw"}  # null content: skipped, as SandboxFusion does
    assert parsed.fetch_files == ["out.txt", "data/in.bin"]
    assert parsed.run_options() == {"timeout": None, "memory_mb": None, "stdin": "42\n",
                                    "files": {"data/in.bin": b"\x00\xffraw"},
                                    "fetch_files": ["out.txt", "data/in.bin"]}
    # A plain request passes no I/O options, so a Sandbox without them still serves it.
    plain = parse_run_request(b'{"code": "1", "language": "python", "stdin": "", "files": {}, "fetch_files": []}')
    assert plain.run_options() == {"timeout": None, "memory_mb": None}


def test_fetched_files_go_back_in_base64():
    result = ExecResult(ExecStatus.OK, "", "", 0, 0.1, files={"out.txt": b"hello\n", "blob.bin": bytes(range(256))})
    body = json.loads(json.dumps(to_fusion_response(result)))
    assert body["files"] == {"out.txt": "aGVsbG8K", "blob.bin": base64.b64encode(bytes(range(256))).decode()}
    assert result_from_response(body).files == result.files


# -- the client's retry and failure handling, with a scripted transport -----------------------------


def ok_body(stdout="ok\n") -> dict:
    return to_fusion_response(ExecResult(ExecStatus.OK, stdout, "", 0, 0.1))


def transport_answering(*answers):
    """An httpx transport replying with each answer in turn: a status code, a dict, or an exception."""
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(answer, json={"detail": "upstream exploded"})
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handle), calls


async def test_client_retries_5xx_then_succeeds():
    transport, calls = transport_answering(503, 500, ok_body())
    async with RemoteSandbox("http://sandbox.test", transport=transport, retries=2, retry_backoff_s=0) as box:
        result = await box.run("print('ok')")
    assert result == ExecResult(ExecStatus.OK, "ok\n", "", 0, 0.1)
    assert len(calls) == 3
    sent = json.loads(calls[0].content)
    assert sent == {"code": "print('ok')", "language": "python", "run_timeout": 10.0, "memory_limit_MB": -1}


async def test_client_gives_up_with_sandbox_error_after_bounded_retries():
    transport, calls = transport_answering(500)
    async with RemoteSandbox("http://sandbox.test", transport=transport, retries=2, retry_backoff_s=0) as box:
        result = await box.run("print(1)")
    assert result.status is ExecStatus.SANDBOX_ERROR
    assert "http://sandbox.test/run_code" in result.sandbox_message and "500" in result.sandbox_message
    assert len(calls) == 3


async def test_client_retries_a_dropped_stateless_run_but_never_a_session_run():
    transport, calls = transport_answering(httpx.ReadError("connection reset"), ok_body())
    async with RemoteSandbox("http://sandbox.test", transport=transport, retry_backoff_s=0) as box:
        assert (await box.run("1")).ok
        assert len(calls) == 2

    # A session block may already have run on the server: re-sending it could run it twice.
    transport, calls = transport_answering(httpx.ReadError("connection reset"), ok_body())
    async with RemoteSandbox("http://sandbox.test", transport=transport, retry_backoff_s=0) as box:
        result = await box.run("x += 1", session="abc")
    assert result.status is ExecStatus.SANDBOX_ERROR and "ReadError" in result.sandbox_message
    assert len(calls) == 1
    assert calls[0].url.path == "/torl/sessions/abc/run_code"

    # ...unless the connection was never made: then the block cannot have run.
    transport, calls = transport_answering(httpx.ConnectError("refused"), ok_body())
    async with RemoteSandbox("http://sandbox.test", transport=transport, retry_backoff_s=0) as box:
        assert (await box.run("x += 1", session="abc")).ok
    assert len(calls) == 2


async def test_client_against_plain_sandboxfusion_has_no_sessions_but_a_health_check():
    def sandboxfusion(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/run_code":
            code = json.loads(request.content)["code"]
            stdout = "42\n" if code == "print(6 * 7)" else ""
            return httpx.Response(200, json={"status": "Success", "message": "", "run_result": {
                "status": "Finished", "execution_time": 0.01, "return_code": 0, "stdout": stdout, "stderr": ""}})
        return httpx.Response(404, json={"detail": "Not Found"})

    async with RemoteSandbox("http://fusion.test", transport=httpx.MockTransport(sandboxfusion)) as box:
        await box.health_check()
        with pytest.raises(SessionsNotSupported, match="torl sandbox serve"):
            await box.open_session()
        with pytest.raises(SessionsNotSupported):
            await box.run("1", session="made-up")


async def test_client_refuses_what_json_cannot_carry():
    transport, calls = transport_answering(ok_body())
    async with RemoteSandbox("http://sandbox.test", transport=transport) as box:
        with pytest.raises(InvalidCode, match="UTF-8"):
            await box.run("x = '\ud800'")
        with pytest.raises(InvalidCode, match="timeout"):
            await box.run("1", timeout=float("nan"))
        with pytest.raises(InvalidCode, match="timeout"):
            await box.run("1", timeout=10**400)  # beyond float range: not an OverflowError
        with pytest.raises(InvalidCode, match="stdin is not valid UTF-8"):
            await box.run("1", stdin="\udc80")
        with pytest.raises(InvalidCode, match="map str paths to bytes.*encode text first"):
            await box.run("1", files={"a.txt": "text"})
        with pytest.raises(InvalidCode, match="wrap it in a list"):
            await box.run("1", fetch_files="out.txt")
    assert calls == []
    with pytest.raises(ValueError, match="http://"):
        RemoteSandbox("localhost:8080")


async def test_client_sends_stdin_and_files_as_sandboxfusion_does_and_decodes_fetched_files():
    answer = {**ok_body(), "files": {"out/result.txt": base64.b64encode(b"7\n").decode()}}
    transport, calls = transport_answering(answer, {**ok_body(), "files": {"out.txt": "not base64!"}})
    async with RemoteSandbox("http://sandbox.test", transport=transport) as box:
        result = await box.run("x", stdin="3 4\n", files={"in/data.bin": b"\x00\xff"},
                               fetch_files=("out/result.txt", "absent.txt"))
        garbled = await box.run("x", fetch_files=["out.txt"])
    assert json.loads(calls[0].content) == {
        "code": "x", "language": "python", "run_timeout": 10.0, "memory_limit_MB": -1,
        "stdin": "3 4\n", "files": {"in/data.bin": "AP8="}, "fetch_files": ["out/result.txt", "absent.txt"]}
    assert result.ok and result.files == {"out/result.txt": b"7\n"}
    assert garbled.status is ExecStatus.SANDBOX_ERROR and "unreadable response" in garbled.sandbox_message


async def test_client_sends_the_token_from_its_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    transport, calls = transport_answering(ok_body())
    async with RemoteSandbox("http://sandbox.test", transport=transport) as box:
        await box.run("1")
    async with RemoteSandbox("http://sandbox.test", transport=transport, token="from-arg") as box:
        await box.run("1")
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    async with RemoteSandbox("http://sandbox.test", transport=transport) as box:
        await box.run("1")
    async with RemoteSandbox("http://sandbox.test", transport=transport, token="from-arg") as box:
        await box.run("1")
    assert [c.headers.get("authorization") for c in calls] == \
        [None, "Bearer from-arg", "Bearer from-env", "Bearer from-arg"]


async def test_a_refused_token_raises_sandbox_unavailable_without_retrying(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    transport, calls = transport_answering(401)
    async with RemoteSandbox("http://sandbox.test", transport=transport, token="wrong", retry_backoff_s=0) as box:
        with pytest.raises(SandboxUnavailable, match=f"refused our token \\(HTTP 401\\).*{TOKEN_ENV}"):
            await box.run("1")
        with pytest.raises(SandboxUnavailable, match="HTTP 401"):
            await box.open_session()
        with pytest.raises(SandboxUnavailable, match="HTTP 401"):
            await box.health_check()
    assert len(calls) == 3
    async with RemoteSandbox("http://sandbox.test", transport=transport) as box:
        with pytest.raises(SandboxUnavailable, match="we sent none"):
            await box.run("1")


# -- loopback: real uvicorn server, real HTTP ---------------------------------------------------


async def test_every_status_round_trips_over_http():
    crash = RuntimeError("pool exploded")
    with ServerThread(lambda: ScriptedSandbox([*EVERY_STATUS, crash])) as server:
        async with RemoteSandbox(server.url) as box:
            for expected in EVERY_STATUS:
                assert await box.run("anything", timeout=2.5, memory_mb=128) == expected
            crashed = await box.run("anything")
        calls = server.sandbox.calls
    assert crashed.status is ExecStatus.SANDBOX_ERROR
    assert "pool exploded" in crashed.sandbox_message
    assert calls[0] == {"code": "anything", "timeout": 2.5, "memory_mb": 128, "session": None}


async def test_output_that_utf8_cannot_encode_still_comes_back_exactly():
    odd = ExecResult(ExecStatus.OK, "lone \ud800 surrogate", "", 0, 0.1)
    with ServerThread(lambda: ScriptedSandbox([odd])) as server:
        async with RemoteSandbox(server.url) as box:
            assert await box.run("anything") == odd


async def test_server_down_is_a_sandbox_error_not_a_code_error():
    url = f"http://127.0.0.1:{free_port_with_nothing_listening()}"
    async with RemoteSandbox(url, retries=1, retry_backoff_s=0) as box:
        result = await box.run("print(1)")
        assert result.status is ExecStatus.SANDBOX_ERROR
        assert url in result.sandbox_message and "2 attempt(s)" in result.sandbox_message
        with pytest.raises(SandboxUnavailable, match=url):
            await box.health_check()
        with pytest.raises(SandboxUnavailable, match=url):
            await box.open_session()


async def test_oversized_request_is_refused_with_413():
    with ServerThread(lambda: ScriptedSandbox([]), max_request_bytes=10_000) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post("/run_code", json={"code": "x" * 20_000, "language": "python"})
        assert response.status_code == 413
        assert response.json()["torl_error"] == "too_large"
        async with RemoteSandbox(server.url) as box:
            with pytest.raises(InvalidCode, match="larger than 10000 bytes"):
                await box.run("x" * 20_000)
        assert server.sandbox.calls == []


PLAIN_REQUEST = {"code": "print(1)", "language": "python"}


def basic_auth(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_overflowing_numbers_and_absurd_nesting_get_400_not_500():
    bodies = [
        b'{"code": "1", "language": "python", "run_timeout": 1' + b"0" * 400 + b"}",
        b'{"code": "1", "language": "python", "run_timeout": 1e400}',
        b'{"code": "1", "language": "python", "memory_limit_MB": 1e400}',
        b"[" * 100_000,
        b'{"code": "1", "language": "python", "files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ]
    with ServerThread(lambda: ScriptedSandbox([])) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for body in bodies:
                response = await http.post("/run_code", content=body, headers={"content-type": "application/json"})
                assert response.status_code == 400, response.text[:300]
                assert response.json()["torl_error"] == "invalid_request"
                assert len(response.json()["detail"]) < 300
        assert server.sandbox.calls == []


async def test_stdin_and_files_reach_the_sandbox_and_fetched_files_come_back():
    fetched = ExecResult(ExecStatus.OK, "done\n", "", 0, 0.2, files={"out.txt": b"result\n"})
    with ServerThread(lambda: ScriptedSandbox([fetched, fetched])) as server:
        async with RemoteSandbox(server.url) as box:
            result = await box.run("x", stdin="7\n", files={"in.bin": b"\x00\x01"},
                                   fetch_files=["out.txt", "missing.txt"])
        async with httpx.AsyncClient(base_url=server.url) as http:
            raw = (await http.post("/run_code", json={
                "code": "y", "language": "python", "stdin": None, "files": {"a.txt": "aGk=", "b.txt": None},
                "fetch_files": ["out.txt"]})).json()
        calls = server.sandbox.calls
    assert result == fetched and result.files == {"out.txt": b"result\n"}
    assert calls[0] == {"code": "x", "timeout": 10.0, "memory_mb": None, "session": None, "stdin": "7\n",
                        "files": {"in.bin": b"\x00\x01"}, "fetch_files": ["out.txt", "missing.txt"]}
    assert calls[1] == {"code": "y", "timeout": None, "memory_mb": None, "session": None,
                        "files": {"a.txt": b"hi"}, "fetch_files": ["out.txt"]}
    assert raw["files"] == {"out.txt": base64.b64encode(b"result\n").decode()}


# -- authentication ----------------------------------------------------------------------------------


async def test_with_a_token_every_endpoint_but_ping_answers_401_without_it(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    ok = ExecResult(ExecStatus.OK, "1\n", "", 0, 0.1)
    with ServerThread(lambda: ScriptedSandbox([ok, ok, ok]), token="s3cret") as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            refused = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cre"},
                       {"Authorization": "Bearer s3cret-and-more"}, {"Authorization": "s3cret"},
                       {"Authorization": "Token s3cret"}, {"Authorization": "Basic !!!"},
                       basic_auth("torl", "wrong"), basic_auth("s3cret", "")]
            endpoints = [("POST", "/run_code"), ("POST", "/torl/sessions"), ("DELETE", "/torl/sessions/s1"),
                         ("POST", "/torl/sessions/s1/run_code"), ("GET", "/health"), ("GET", "/docs"),
                         ("GET", "/no/such/path")]
            for method, path in endpoints:
                for headers in refused:
                    response = await http.request(method, path, json=PLAIN_REQUEST, headers=headers)
                    assert response.status_code == 401, (method, path, headers)
                    assert response.json()["torl_error"] == "unauthorized"
                    assert "Bearer <token>" in response.json()["detail"]
                    assert response.headers["www-authenticate"].startswith("Bearer")
            assert (await http.get("/v1/ping")).json() == "pong"  # liveness probes carry no token
            bearer = await http.post("/run_code", json=PLAIN_REQUEST, headers={"Authorization": "Bearer s3cret"})
            basic = await http.post("/run_code", json=PLAIN_REQUEST, headers=basic_auth("anyone", "s3cret"))
            assert (bearer.status_code, basic.status_code) == (200, 200)
        async with RemoteSandbox(server.url, token="s3cret") as box:
            assert (await box.run("print(1)")).stdout == "1\n"
            await box.health_check()
        async with RemoteSandbox(server.url, token="wrong") as box:
            with pytest.raises(SandboxUnavailable, match="refused our token"):
                await box.run("print(1)")
        assert len(server.sandbox.calls) == 3  # only the authorized runs reached the sandbox


def test_an_empty_token_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        create_app(ScriptedSandbox([]), token="")


# -- stalled clients: a raw socket against the real server --------------------------------------------


READ_TIMEOUT_S = 0.5
GIVE_UP_S = 20.0  # far beyond the server's 0.5 s: only a server that never drops the client fails


@pytest.fixture(scope="module")
def timed_server():
    with ServerThread(lambda: ScriptedSandbox([]), read_timeout_s=READ_TIMEOUT_S) as server:
        yield server


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails after GIVE_UP_S."""
    sock.settimeout(GIVE_UP_S)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_connection_that_sends_nothing_is_dropped(timed_server):
    with socket.create_connection(("127.0.0.1", timed_server.port)) as sock:
        assert read_until_closed(sock) == b""


def test_half_sent_headers_are_dropped(timed_server):
    with socket.create_connection(("127.0.0.1", timed_server.port)) as sock:
        sock.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Le")
        assert read_until_closed(sock) == b""


def test_headers_trickled_a_byte_at_a_time_are_dropped(timed_server):
    # Each byte would restart an idle timer: the deadline must count from the first byte.
    header = b"POST /run_code HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
    with socket.create_connection(("127.0.0.1", timed_server.port)) as sock:
        sock.settimeout(0.05)
        deadline = time.monotonic() + GIVE_UP_S
        for byte in header:
            assert time.monotonic() < deadline, "the server kept a trickling client for good"
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    return  # closed by the server
            except TimeoutError:
                continue
            except OSError:  # reset by the server
                return
        pytest.fail("the whole trickled header was accepted")


def test_a_half_sent_body_gets_408_and_the_connection_is_dropped(timed_server):
    with socket.create_connection(("127.0.0.1", timed_server.port)) as sock:
        sock.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"code\": \"1\"")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["torl_error"] == "read_timeout" and "--read-timeout" in body["detail"]
    assert timed_server.sandbox.calls == []


def test_a_body_the_app_does_not_read_must_still_arrive_in_time(timed_server):
    with socket.create_connection(("127.0.0.1", timed_server.port)) as sock:
        sock.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'"pong"')


def test_an_idle_keep_alive_connection_outlives_the_read_timeout(timed_server):
    request = b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", timed_server.port)) as sock:
        sock.settimeout(GIVE_UP_S)
        for _ in range(2):
            sock.sendall(request)
            assert read_response(sock) == b'"pong"'
            time.sleep(3 * READ_TIMEOUT_S)  # idle between requests: keep-alive's business, not ours


def read_response(sock: socket.socket) -> bytes:
    """The body of one HTTP/1.1 200 response with a Content-Length, read off `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"connection closed mid-response: {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail(f"connection closed mid-body: {body!r}")
    return body


# -- idle sessions ---------------------------------------------------------------------------------


async def eventually(condition, what: str, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.05)


async def test_an_unused_session_is_closed_after_its_ttl():
    with ServerThread(lambda: ScriptedSandbox([]), session_ttl_s=0.3) as server:
        async with RemoteSandbox(server.url) as box:
            session = await box.open_session()
            await eventually(lambda: server.sandbox.closed == [session], "the idle session closed")
            with pytest.raises(UnknownSession, match=r"closed after 0.3 s unused .*--session-ttl"):
                await box.run("1", session=session)
            with pytest.raises(UnknownSession, match="--session-ttl"):
                await box.close_session(session)
        assert server.sandbox.calls == []


async def test_a_session_is_not_closed_while_a_block_runs_in_it():
    ok = ExecResult(ExecStatus.OK, "", "", 0, 3.0)
    with ServerThread(lambda: ScriptedSandbox([3.0, ok]), session_ttl_s=1.0) as server:
        async with RemoteSandbox(server.url) as box:
            session = await box.open_session()
            assert (await box.run("slow", session=session)).ok  # 3 s, three TTLs
            assert server.sandbox.seen_closed == []
            await eventually(lambda: server.sandbox.closed == [session], "the session closed once unused")


async def test_sessions_closed_by_the_client_are_not_closed_again():
    with ServerThread(lambda: ScriptedSandbox([]), session_ttl_s=0.2) as server:
        async with RemoteSandbox(server.url) as box:
            session = await box.open_session()
            await box.close_session(session)
            await asyncio.sleep(1.0)
            with pytest.raises(UnknownSession, match="unknown session"):  # the sandbox's own word
                await box.run("1", session=session)
        assert server.sandbox.closed == [session]


# -- loopback with the real LocalSandbox ------------------------------------------------------------


@pytest.fixture(scope="module")
def local_server():
    config = SandboxConfig(workers=2, max_sessions=2, max_output_bytes=10_000, max_code_bytes=50_000)
    with ServerThread(lambda: LocalSandbox(config)) as server:
        yield server


@pytest.fixture
async def remote(local_server):
    async with RemoteSandbox(local_server.url) as box:
        yield box


@pytest.mark.slow
async def test_remote_statuses_match_the_local_sandbox(remote):
    ok = await remote.run("print(2 ** 10)")
    assert (ok.status, ok.stdout, ok.exit_code) == (ExecStatus.OK, "1024\n", 0)

    error = await remote.run("print('before')\n1 / 0")
    assert (error.status, error.stdout, error.exit_code) == (ExecStatus.ERROR, "before\n", 1)
    assert error.stderr.startswith("Traceback (most recent call last):")
    assert "1 / 0" in error.stderr and error.stderr.rstrip().endswith("ZeroDivisionError: division by zero")

    timeout = await remote.run("import time\nprint('tick', flush=True)\nwhile True: time.sleep(0.01)", timeout=1)
    assert (timeout.status, timeout.stdout) == (ExecStatus.TIMEOUT, "tick\n")
    assert timeout.exit_code == -9 and "1 s" in timeout.sandbox_message

    memory = await remote.run("x = bytearray(2 * 1024 ** 3)", memory_mb=64)
    assert memory.status is ExecStatus.MEMORY and "MemoryError" in memory.stderr

    flood = await remote.run("print('a' * 100_000)")
    assert flood.status is ExecStatus.OUTPUT_LIMIT and flood.stdout_truncated


@pytest.mark.slow
async def test_session_state_persists_across_remote_calls(remote):
    session = await remote.open_session()
    try:
        assert (await remote.run("x = 41\ndef inc(v):\n    return v + 1", session=session)).ok
        follow_up = await remote.run("print(inc(x))", session=session)
        assert (follow_up.status, follow_up.stdout) == (ExecStatus.OK, "42\n")
        fresh = await remote.run("print(x)")  # stateless runs never see session state
        assert fresh.status is ExecStatus.ERROR and "NameError" in fresh.stderr
    finally:
        await remote.close_session(session)
    with pytest.raises(UnknownSession, match=session):
        await remote.run("print(x)", session=session)
    with pytest.raises(UnknownSession):
        await remote.close_session(session)
    with pytest.raises(UnknownSession, match="made-up"):
        await remote.run("1", session="made-up")


@pytest.mark.slow
async def test_bad_input_is_refused_with_the_sandbox_reason(remote):
    with pytest.raises(InvalidCode, match="NUL"):
        await remote.run("print(1)\x00")
    with pytest.raises(InvalidCode, match="max_code_bytes"):
        await remote.run("#" * 60_000)
    with pytest.raises(InvalidCode, match="timeout"):
        await remote.run("1", timeout=10_000)
    with pytest.raises(InvalidCode, match="memory_mb"):
        await remote.run("1", memory_mb=8)
    with pytest.raises(InvalidCode, match="memory_mb"):
        await remote.run("1", memory_mb=10**400)  # passes the server's parser; the sandbox refuses it


@pytest.mark.slow
async def test_stdin_and_files_round_trip_through_the_real_sandbox(remote):
    code = "n = int(input())\ndata = open('in/data.bin', 'rb').read()\nopen('out.txt', 'w').write(str(n * len(data)))"
    result = await remote.run(code, stdin="3\n", files={"in/data.bin": b"\x00\xff" * 5},
                              fetch_files=["out.txt", "never-written.txt"])
    assert result.ok, result
    assert result.files == {"out.txt": b"30"}
    with pytest.raises(InvalidCode, match=r"\.\."):
        await remote.run("1", files={"../escape.txt": b"x"})
    with pytest.raises(InvalidCode, match="/etc/passwd"):
        await remote.run("1", fetch_files=["/etc/passwd"])


@pytest.mark.slow
async def test_an_abandoned_session_frees_its_slot_after_the_ttl():
    config = SandboxConfig(workers=1, max_sessions=1)
    with ServerThread(lambda: LocalSandbox(config), session_ttl_s=1.0) as server:
        async with RemoteSandbox(server.url) as box:
            abandoned = await box.open_session()
            with pytest.raises(SandboxUnavailable, match="too many open sessions"):
                await box.open_session()
            deadline = time.monotonic() + 30
            while True:  # the only slot comes back once the abandoned session has been closed
                try:
                    fresh = await box.open_session()
                    break
                except SandboxUnavailable:
                    assert time.monotonic() < deadline, "the abandoned session still holds the only slot"
                    await asyncio.sleep(0.2)
            assert (await box.run("print(6 * 7)", session=fresh)).stdout == "42\n"
            with pytest.raises(UnknownSession, match="--session-ttl"):
                await box.run("1", session=abandoned)


@pytest.mark.slow
async def test_hundreds_of_concurrent_remote_runs_each_get_their_own_answer(remote):
    codes = [f"print({i} * {i})" if i % 10 else f"raise ValueError('bad {i}')" for i in range(150)]
    results = await remote.run_many(codes)
    for i, result in enumerate(results):
        if i % 10:
            assert (result.status, result.stdout) == (ExecStatus.OK, f"{i * i}\n")
        else:
            assert result.status is ExecStatus.ERROR and f"ValueError: bad {i}" in result.stderr


@pytest.mark.slow
async def test_sandboxfusion_client_sees_sandboxfusion_fields(local_server):
    request = {"code": "print('hello')\nimport sys; print('oops', file=sys.stderr)", "language": "python",
               "compile_timeout": 10, "run_timeout": 5, "memory_limit_MB": -1, "stdin": None,
               "files": {}, "fetch_files": []}
    async with httpx.AsyncClient(base_url=local_server.url, timeout=60) as http:
        body = (await http.post("/run_code", json=request)).json()
        assert body["status"] == "Success" and body["message"] == ""
        assert body["compile_result"] is None and body["files"] == {}
        run = body["run_result"]
        assert (run["status"], run["return_code"], run["stdout"], run["stderr"]) == \
            ("Finished", 0, "hello\n", "oops\n")
        assert run["execution_time"] > 0

        failed = (await http.post("/run_code", json={**request, "code": "exit(3)"})).json()
        assert (failed["status"], failed["run_result"]["status"], failed["run_result"]["return_code"]) == \
            ("Failed", "Finished", 3)
        slow = (await http.post("/run_code", json={**request, "code": "while True: pass", "run_timeout": 1})).json()
        assert (slow["status"], slow["run_result"]["status"]) == ("Failed", "TimeLimitExceeded")
        assert slow["torl"]["status"] == "timeout"

        cpp = await http.post("/run_code", json={**request, "language": "cpp"})
        assert cpp.status_code == 400 and "only python" in cpp.json()["detail"]
        assert (await http.get("/v1/ping")).json() == "pong"
        health = await http.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})


# -- the `torl sandbox serve` command ------------------------------------------------------------


# `python -m torl.cli` would run the CLI as __main__, a second copy of its UserError class.
TORL = [sys.executable, "-c", "import sys; from torl.cli import main; sys.exit(main())"]


def descendants(pid: int) -> set[int]:
    """Pids of every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
async def test_serve_command_serves_then_stops_cleanly_on_sigterm():
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once; the test then waits on HTTP
        [*TORL, "sandbox", "serve", "--port", "0", "--workers", "1",
         "--max-sessions", "1", "--log-level", "warning", "--token", "s3cret"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    workers: set[int] = set()
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
        banner = ""
        while "serving on" not in banner:
            banner = lines.get(timeout=120)
        url = re.search(r"serving on (http://\S+)", banner).group(1)
        assert "token required" in banner
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).status_code == 401
        async with RemoteSandbox(url, token="s3cret") as box:
            await box.health_check()
            session = await box.open_session()
            await box.run("total = 40", session=session)
            assert (await box.run("print(total + 2)", session=session)).stdout == "42\n"
        workers = descendants(proc.pid)
        assert workers, "the server should have started sandbox workers"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    leftovers = [pid for pid in workers if alive(pid)]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], "sandbox workers outlived the server"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--token", ""], "--token must not be empty"),
        (["--read-timeout", "0"], "--read-timeout must be a number of seconds > 0"),
        (["--read-timeout", "inf"], "--read-timeout must be a number of seconds > 0"),
        (["--session-ttl", "-1"], "--session-ttl must be a number of seconds >= 0"),
    ],
)
def test_serve_command_refuses_bad_server_settings(flags, words):
    done = subprocess.run([*TORL, "sandbox", "serve", "--port", "0", *flags],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert words in done.stderr


def test_serve_command_names_a_busy_port():
    with listen_socket("127.0.0.1", 0) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run([*TORL, "sandbox", "serve", "--port", str(port)],
                              check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
