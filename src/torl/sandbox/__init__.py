"""Running untrusted, model-written Python: the interface that RL and eval code imports.

    from torl.sandbox import make_sandbox, format_observation
    async with make_sandbox() as sandbox:
        result = await sandbox.run("print(2**10)")
        print(format_observation(result))

This level is the whole contract: `Sandbox` (base.py), `ExecResult` (result.py), what the model sees
(observation.py), limits (config.py), and `make_sandbox`. Behind it are two wings that code outside
`torl.sandbox` never imports: `local/` (isolated warm workers on this machine: bwrap, seccomp,
cgroups) and `http/` (the SandboxFusion-compatible server and its client).
"""

from __future__ import annotations

from torl.sandbox.base import InvalidCode, Sandbox, SandboxUnavailable, UnknownSession
from torl.sandbox.config import SandboxConfig
from torl.sandbox.local import LocalSandbox
from torl.sandbox.observation import SandboxFailure, format_observation
from torl.sandbox.result import ExecResult, ExecStatus

__all__ = ["ExecResult", "ExecStatus", "InvalidCode", "LocalSandbox", "Sandbox", "SandboxConfig",
           "SandboxFailure", "SandboxUnavailable", "UnknownSession", "format_observation", "make_sandbox"]


def make_sandbox(config: SandboxConfig | None = None, *, url: str | None = None, **remote_options) -> Sandbox:
    """A local sandbox from `config`, or, given `url`, the remote backend talking to that server."""
    if url is not None:
        from torl.sandbox.http.remote import (
            RemoteSandbox,  # lazy: the HTTP client is only needed here
        )

        return RemoteSandbox(url, **remote_options)
    if remote_options:
        raise TypeError(f"options {sorted(remote_options)} only apply to a remote sandbox (pass url=...)")
    return LocalSandbox(config)
