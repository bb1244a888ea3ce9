"""Where the interpreter appears inside the sandbox (pure command construction, no worker)."""
from torl.sandbox.local import isolation


def test_paths_under_the_sandbox_tmpfs_are_mirrored(monkeypatch):
    # A CI checkout in /tmp has its venv there: the sandbox's own /tmp tmpfs would hide it.
    monkeypatch.setattr(isolation, "python_roots", lambda: ["/opt/py", "/tmp/ci/main/.venv"])
    monkeypatch.setattr(isolation.sys, "executable", "/tmp/ci/main/.venv/bin/python3")
    cmd = isolation.bwrap_command("/usr/bin/bwrap", scratch_mb=64)
    binds = [tuple(cmd[i + 1:i + 3]) for i, arg in enumerate(cmd) if arg == "--ro-bind"]
    assert ("/opt/py", "/opt/py") in binds
    assert ("/tmp/ci/main/.venv", "/opt/torl-host/tmp/ci/main/.venv") in binds
    assert cmd[cmd.index("--") + 1] == "/opt/torl-host/tmp/ci/main/.venv/bin/python3"


def test_ordinary_paths_stay_where_they_are():
    assert isolation.inside_path("/root/.pyenv/versions/3.11.7") == "/root/.pyenv/versions/3.11.7"
    assert isolation.inside_path("/tmpfoo/venv") == "/tmpfoo/venv"  # a prefix, not below /tmp
    assert isolation.inside_path("/dev/shm/venv") == "/opt/torl-host/dev/shm/venv"
