"""configs/accelerate/multinode.md's shared sandbox server: the documented command listens beyond
loopback, demands the token, and a training config with that token in its environment passes the
start-up check (without it: one line)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from torl.errors import UserError
from torl.train.config import TorlConfig, check_sandbox

GUIDE = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "multinode.md"


def documented_serve_command() -> list[str]:
    line = next(line for line in GUIDE.read_text().splitlines() if line.startswith("torl sandbox serve"))
    return shlex.split(line.split(" #")[0])


def test_the_guide_serves_beyond_loopback_with_a_token_and_training_reaches_it(monkeypatch):
    argv = documented_serve_command()
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    argv[argv.index("--port") + 1] = "0"  # any free port for the test
    argv[argv.index("--workers") + 1] = "2"
    env = {**os.environ, "TORL_SANDBOX_TOKEN": "s3cret-test-token"}
    server = subprocess.Popen([sys.executable, "-m", "torl.cli", *argv[1:]], env=env, stderr=subprocess.PIPE,
                              text=True)
    try:
        banner = ""
        while "serving on" not in banner:
            line = server.stderr.readline()
            assert line, f"the server exited: {banner}"
            banner += line
        assert "token required" in banner and "WARNING" not in banner
        port = re.search(r"serving on http://0\.0\.0\.0:(\d+)", banner).group(1)
        cfg = TorlConfig(sandbox="remote", sandbox_url=f"http://127.0.0.1:{port}")
        monkeypatch.delenv("TORL_SANDBOX_TOKEN", raising=False)
        with pytest.raises(UserError, match="HTTP 401"):
            check_sandbox(cfg)
        monkeypatch.setenv("TORL_SANDBOX_TOKEN", "s3cret-test-token")
        check_sandbox(cfg)
    finally:
        server.terminate()
        server.wait(timeout=30)
