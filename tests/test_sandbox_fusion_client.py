"""The official SandboxFusion client (`sandbox-fusion` on PyPI) against a real `torl sandbox serve`.

One server subprocess on a free loopback port, with the real LocalSandbox and a token taken from
TORL_SANDBOX_TOKEN; the client reaches it as SandboxFusion users do, through an endpoint URL
(`http://torl:<token>@127.0.0.1:<port>`, sent by `requests` as Basic auth). The client retries
even 4xx answers by default, so calls that expect an error pass `max_attempts=1`.
"""

import base64
import os
import queue
import re
import subprocess
import sys
import threading

import pytest
import sandbox_fusion  # a dev dependency: a missing client fails this module, never skips it
from sandbox_fusion import (
    RunCodeRequest,
    RunCodeResponse,
    RunStatus,
    SummaryMapping,
    run_code,
)

from torl.sandbox.http.server import TOKEN_ENV

TOKEN = "fusion-test-token"
TORL = [sys.executable, "-c", "import sys; from torl.cli import main; sys.exit(main())"]

pytestmark = pytest.mark.slow


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def server_url():
    """`http://127.0.0.1:<port>` of a `torl sandbox serve` subprocess (2 workers, token from the env)."""
    proc = subprocess.Popen(
        [*TORL, "sandbox", "serve", "--port", "0", "--workers", "2", "--log-level", "warning"],
        env={**os.environ, TOKEN_ENV: TOKEN}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
        banner = ""
        while "serving on" not in banner:
            try:
                banner = lines.get(timeout=120)
            except queue.Empty:
                pytest.fail(f"`torl sandbox serve` did not start (exit status {proc.poll()})")
        assert "token required" in banner, banner
        yield re.search(r"serving on (http://\S+)", banner).group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def endpoint(server_url):
    """The client's global endpoint set to our server, with the token, as `set_endpoint` does."""
    saved = sandbox_fusion.config.SANDBOX_ENDPOINT, sandbox_fusion.config.DATASET_ENDPOINT
    url = server_url.replace("http://", f"http://torl:{TOKEN}@")
    sandbox_fusion.set_endpoint(url)
    yield url
    sandbox_fusion.config.SANDBOX_ENDPOINT, sandbox_fusion.config.DATASET_ENDPOINT = saved


def fusion_run(language: str = "python", **request) -> RunCodeResponse:
    return run_code(RunCodeRequest(language=language, **request), max_attempts=1, client_timeout=120)


def test_plain_code(endpoint):
    response = fusion_run(code="print(6 * 7)")
    assert response.status is RunStatus.Success and response.message == ""
    run = response.run_result
    assert (run.status.value, run.return_code, run.stdout, run.stderr) == ("Finished", 0, "42\n", "")
    assert run.execution_time > 0
    assert response.compile_result is None and response.files == {}


def test_endpoint_from_the_environment_variable(server_url):
    # SandboxFusion reads SANDBOX_FUSION_ENDPOINT when the client is imported: a fresh interpreter.
    script = ("from sandbox_fusion import run_code, RunCodeRequest\n"
              "r = run_code(RunCodeRequest(code='print(2 ** 10)', language='python'), max_attempts=1)\n"
              "print(r.status.value, r.run_result.stdout.strip())")
    env = {**os.environ, "SANDBOX_FUSION_ENDPOINT": server_url.replace("http://", f"http://torl:{TOKEN}@")}
    done = subprocess.run([sys.executable, "-c", script], env=env, check=False, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["Success", "1024"]


def test_stdin(endpoint):
    response = fusion_run(code="a, b = map(int, input().split())\nprint(a + b)\nprint(input())",
                          stdin="3 4\nsecond line\n")
    assert response.status is RunStatus.Success, response
    assert response.run_result.stdout == "7\nsecond line\n"


def test_files_in(endpoint):
    response = fusion_run(code="print(open('data/numbers.txt').read().split())\n"
                               "print(open('blob.bin', 'rb').read() == bytes(range(256)))",
                          files={"data/numbers.txt": b64(b"1 2 3\n"), "blob.bin": b64(bytes(range(256))),
                                 "skipped.txt": None})
    assert response.status is RunStatus.Success, response
    assert response.run_result.stdout == "['1', '2', '3']\nTrue\n"


def test_fetch_files_out(endpoint):
    code = ("import os\nos.makedirs('out', exist_ok=True)\n"
            "open('out/result.txt', 'w').write('answer: 42\\n')\nopen('raw.bin', 'wb').write(b'\\x00\\xff')")
    response = fusion_run(code=code, fetch_files=["out/result.txt", "raw.bin", "never-written.txt"])
    assert response.status is RunStatus.Success, response
    # As SandboxFusion: fetched files in base64, absent ones left out.
    assert response.files == {"out/result.txt": b64(b"answer: 42\n"), "raw.bin": b64(b"\x00\xff")}


def test_an_error_comes_back_with_its_stderr(endpoint):
    response = fusion_run(code="print('before')\n1 / 0")
    assert response.status is RunStatus.Failed
    run = response.run_result
    assert (run.status.value, run.return_code, run.stdout) == ("Finished", 1, "before\n")
    assert run.stderr.startswith("Traceback (most recent call last):")
    assert run.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert sandbox_fusion.summary_run_code_result(response, SummaryMapping(RunFailed="failed")) == "failed"


def test_a_timeout(endpoint):
    response = fusion_run(code="import time\nprint('tick', flush=True)\nwhile True: time.sleep(0.01)",
                          run_timeout=1)
    assert response.status is RunStatus.Failed
    assert response.run_result.status.value == "TimeLimitExceeded"
    assert response.run_result.stdout == "tick\n"
    assert sandbox_fusion.summary_run_code_result(response, SummaryMapping(RunTimeout="timeout")) == "timeout"


def test_a_memory_error_returns_what_python_returns(endpoint):
    response = fusion_run(code="x = bytearray(1 << 40)")  # far beyond the server's default limit
    assert response.status is RunStatus.Failed
    run = response.run_result
    assert run.status.value == "Finished"
    assert run.return_code == 1  # Python's exit status for an uncaught MemoryError
    assert run.stderr.rstrip().endswith("MemoryError")


@pytest.mark.parametrize("credentials", ["torl:wrong-token@", "", f"torl:{TOKEN}x@"],
                         ids=["wrong", "none", "longer"])
def test_a_wrong_token_is_refused_with_401(server_url, credentials):
    url = server_url.replace("http://", f"http://{credentials}")
    with pytest.raises(Exception, match=r"responded with code 401: .*missing or wrong sandbox token"):
        run_code(RunCodeRequest(code="print(1)", language="python"), endpoint=url, max_attempts=1)


def test_an_unsupported_language_is_a_clear_400(endpoint):
    with pytest.raises(Exception, match=r"code 400: .*language 'cpp' is not supported: torl's sandbox runs only "
                                        r"python"):
        fusion_run(code="int main() { return 0; }", language="cpp")


async def test_the_async_client_works_too(endpoint):
    response = await sandbox_fusion.run_code_async(
        RunCodeRequest(code="print(input()[::-1])", language="python", stdin="olleh"), max_attempts=1)
    assert response.status is RunStatus.Success and response.run_result.stdout == "hello\n"
