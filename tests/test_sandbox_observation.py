"""format_observation: what the model reads for each kind of result."""

import pytest

from torl.sandbox import ExecResult, ExecStatus, format_observation
from torl.sandbox.observation import SandboxFailure, summarize_error, truncate_middle

LIB_TRACEBACK = """Traceback (most recent call last):
  File "<code>", line 3, in <module>
    solve(eq)
  File "<code>", line 2, in solve
    return sympy.solve(eq, y)
           ^^^^^^^^^^^^^^^^^^
  File "/venv/site-packages/sympy/solvers/solvers.py", line 1000, in solve
    f, symbols = _preprocess(f, symbols)
  File "/venv/site-packages/sympy/solvers/solvers.py", line 900, in _preprocess
    raise NotImplementedError("cannot solve")
NotImplementedError: cannot solve
"""


def test_ok_shows_stdout():
    assert format_observation(ExecResult(ExecStatus.OK, stdout="42\n", stderr="warning")) == "42\n"


def test_error_keeps_user_frames_and_where_it_raised():
    obs = format_observation(ExecResult(ExecStatus.ERROR, stdout="partial\n", stderr=LIB_TRACEBACK, exit_code=1))
    assert obs.startswith("partial\nTraceback (most recent call last):")
    assert 'File "<code>", line 3' in obs and 'File "<code>", line 2, in solve' in obs
    assert "1 frame in library code omitted" in obs
    assert "line 900, in _preprocess" in obs and obs.endswith("NotImplementedError: cannot solve")
    assert "line 1000" not in obs


def test_error_without_traceback_and_signal():
    assert summarize_error("", exit_code=3) == "Process exited with status 3"
    assert summarize_error("\nProcess terminated by SIGSEGV (Segmentation fault)\n", -11).startswith("Process terminated")


def test_limits_have_short_texts():
    timeout = ExecResult(ExecStatus.TIMEOUT, sandbox_message="TimeoutError: execution exceeded 10 s")
    assert format_observation(timeout) == "TimeoutError: execution exceeded 10 s"
    assert format_observation(ExecResult(ExecStatus.MEMORY)).startswith("MemoryError")
    out = format_observation(ExecResult(ExecStatus.OUTPUT_LIMIT, stdout="a" * 5000), max_chars=300)
    assert "characters cut" in out and out.endswith("execution stopped") and len(out) < 450


def test_sandbox_error_is_refused():
    with pytest.raises(SandboxFailure, match="worker died"):
        format_observation(ExecResult(ExecStatus.SANDBOX_ERROR, sandbox_message="worker died"))


def test_truncate_middle_says_how_much_was_cut():
    text = "".join(str(i % 10) for i in range(1000))
    cut = truncate_middle(text, 200)
    assert len(cut) <= 200 and cut.startswith(text[:50]) and cut.endswith(text[-40:])
    n = int(cut.split("[")[1].split()[0])
    assert n == 1000 - len(cut.split("\n... [")[0]) - len(cut.split("cut] ...\n")[1])
    assert truncate_middle("short", 200) == "short"
