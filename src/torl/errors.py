"""torl's one error tree, at the bottom of the import graph: this module imports nothing from torl.

Two kinds of failure, and the CLI handles each once (`torl.cli.main`):

- `UserError`: a mistake the user can fix (config, flag, file, model name, a request the sandbox
  refuses). One line naming the fix, exit status 2, no traceback.
- `InfraError`: torl's own infrastructure failed (the sandbox, the verifier, a server, the token
  contract). One line, exit status 1; a training run stops with its checkpoints kept. Never shown to
  the model as if it were the model's doing.

Each class keeps the builtin base its callers already catch (`ValueError`, `KeyError`, `RuntimeError`,
...). The classes live here, not in the CLI: run as `python -m torl.cli`, that module is `__main__`, a
second copy whose classes the library's raises would never match. The packages import them from here
(`torl.sandbox.base.SandboxUnavailable` is this module's class). The stdlib-only sandbox and verifier
worker programs keep private exceptions of their own: they never import torl.
"""

from __future__ import annotations


class TorlError(Exception):
    """Base of every error torl raises on purpose."""


# -- the user's mistakes: exit 2


class UserError(TorlError):
    """A mistake the user can fix (config, flag, file): printed as one line, exit status 2, no traceback."""


class DataError(UserError, ValueError):
    """Bad data or a bad data request the user can fix; the message is one line naming the fix."""


class ModelNotFound(UserError, ValueError):
    """The model name is neither a built-in name, a local directory, nor plausibly a hub id."""


class InvalidDevice(UserError, ValueError):
    """A `--device` torch cannot use here (cuda without a GPU, or not a device name)."""


class VLLMNotInstalled(UserError, ImportError):
    """vLLM cannot be imported in this environment."""


class InvalidCode(UserError, ValueError):
    """A sandbox request itself is bad (not UTF-8, NUL bytes, too large, absurd limits)."""


class UnknownSession(UserError, KeyError):
    """A sandbox session id that was never opened, or was already closed."""


class SessionsNotSupported(UserError, NotImplementedError):
    """The server has no session endpoints (a plain SandboxFusion server): use `torl sandbox serve`."""


# -- our infrastructure's failures: exit 1, checkpoints kept


class InfraError(TorlError):
    """torl's own machinery failed, not the model and not the user's input: one line, exit status 1."""


class SandboxFailure(InfraError, RuntimeError):
    """The sandbox failed on OUR side (`ExecStatus.SANDBOX_ERROR`): count it, stop or retry; never show it to the model."""


class SandboxUnavailable(InfraError, RuntimeError):
    """The sandbox cannot run code at all (isolation missing, server down...). Stops the run."""


class IsolationError(InfraError, RuntimeError):
    """Sandbox isolation cannot be set up on this host; the message says why and what to do."""


class CgroupError(InfraError, RuntimeError):
    """A cgroup could not be created or configured; the message says which file and why."""


class WorkerDied(InfraError, RuntimeError):
    """A sandbox worker process ended or stopped answering; the message carries its stderr tail."""


class VerifierUnavailable(InfraError, RuntimeError):
    """The verifier pool cannot serve checks (workers fail to start, or all stay busy too long)."""


class ServerUnreachable(InfraError, ConnectionError):
    """An OpenAI-compatible server could not be reached (after retries)."""


class ServerError(InfraError, RuntimeError):
    """An OpenAI-compatible server answered with an error (bad request, or server errors that outlived retries)."""

    def __init__(self, status: int, url: str, detail: str):
        super().__init__(f"{url} answered HTTP {status}: {detail}")
        self.status = status
        self.url = url
        self.detail = detail


class TokenContractViolation(InfraError, RuntimeError):
    """TRL's batch is not what the rollouts sampled: training on it would learn from the wrong tokens."""


class SandboxErrorsExceeded(InfraError, RuntimeError):
    """Too many responses in one step hit a sandbox failure on our side: the run stops."""


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line, for the one-line errors users see."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
