"""Remote sandbox: the SandboxFusion-shaped server and the `RemoteSandbox` client, over real HTTP.

Servers run uvicorn in a background thread on a free loopback port and are shut down (and their
sandbox closed) by the fixtures that start them.
"""

import asyncio
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
import uvicorn

from torl.sandbox.base import InvalidCode, Sandbox, SandboxUnavailable, UnknownSession
from torl.sandbox.config import SandboxConfig
from torl.sandbox.local import LocalSandbox
from torl.sandbox.remote import RemoteSandbox, SessionsNotSupported, result_from_response
from torl.sandbox.result import ExecResult, ExecStatus
from torl.sandbox.server import (
    BadRequest,
    create_app,
    listen_socket,
    parse_run_request,
    to_fusion_response,
)

# One result per status, with every field set, to check that nothing is lost on the wire.
EVERY_STATUS = [
    ExecResult(ExecStatus.OK, "4\n", "", 0, 0.25),
    ExecResult(ExecStatus.ERROR, "partial\n", "Traceback (most recent call last):\nZeroDivisionError: x", 1, 0.5),
    ExecResult(ExecStatus.TIMEOUT, "tick\n", "", -9, 3.0),
    ExecResult(ExecStatus.MEMORY, "", "MemoryError", 1, 0.75),
    ExecResult(ExecStatus.OUTPUT_LIMIT, "aaa…aaa", "", -9, 1.5, stdout_truncated=True, stderr_truncated=True),
    ExecResult(ExecStatus.SANDBOX_ERROR, "", "", None, 0.0, sandbox_message="worker died"),
]


class ScriptedSandbox(Sandbox):
    """Answers each `run` with the next scripted result (or raises it): tests the wire, not Python."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.calls: list[dict] = []

    async def run(self, code, *, timeout=None, memory_mb=None, session=None):
        self.calls.append(dict(code=code, timeout=timeout, memory_mb=memory_mb, session=session))
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def open_session(self):
        return "s1"

    async def close_session(self, session):
        if session != "s1":
            raise UnknownSession(f"unknown session {session!r}")

    async def health_check(self):
        pass

    async def aclose(self):
        pass


class ServerThread:
    """uvicorn serving `make_sandbox()` on 127.0.0.1:<free port>, in its own thread and loop."""

    def __init__(self, make_sandbox, **app_kwargs) -> None:
        self.make_sandbox, self.app_kwargs = make_sandbox, app_kwargs
        self.sock = listen_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.sandbox: Sandbox | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ServerThread":
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
        except BaseException as e:  # surfaced by __enter__
            self.error = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self.sandbox = self.make_sandbox()
        try:
            config = uvicorn.Config(create_app(self.sandbox, **self.app_kwargs), log_level="warning")
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
    assert body["compile_result"] is None and body["files"] == {}
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
        (b'{"code": "1", "language": "python", "stdin": "42"}', "`stdin`"),
        (b'{"code": "1", "language": "python", "files": {"a.txt": "eA=="}}', "`files`"),
    ],
)
def test_bad_requests_name_the_problem(body, words):
    with pytest.raises(BadRequest) as info:
        parse_run_request(body)
    assert info.value.status_code == 400
    assert words in info.value.detail


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
    assert calls == []
    with pytest.raises(ValueError, match="http://"):
        RemoteSandbox("localhost:8080")


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
    assert calls[0] == dict(code="anything", timeout=2.5, memory_mb=128, session=None)


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
    proc = subprocess.Popen(
        [*TORL, "sandbox", "serve", "--port", "0", "--workers", "1",
         "--max-sessions", "1", "--log-level", "warning"],
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
        async with RemoteSandbox(url) as box:
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


def test_serve_command_names_a_busy_port():
    with listen_socket("127.0.0.1", 0) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run([*TORL, "sandbox", "serve", "--port", str(port)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
