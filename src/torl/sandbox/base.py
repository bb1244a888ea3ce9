"""The one interface every sandbox backend (local, remote) implements."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence

from torl.sandbox.result import ExecResult


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run code at all (isolation missing, server down...). Stops the run."""


class InvalidCode(ValueError):
    """The request itself is bad (not UTF-8, NUL bytes, too large, absurd limits)."""


class UnknownSession(KeyError):
    """A session id that was never opened, or was already closed."""


class Sandbox(abc.ABC):
    """Runs untrusted Python. Async first; `run_sync`/`run_batch` are conveniences.

    Stateless by default: each `run` starts from a fresh interpreter state. With `session=`
    (from `open_session()`), later blocks see earlier definitions, Jupyter-like.
    """

    @abc.abstractmethod
    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        memory_mb: int | None = None,
        session: str | None = None,
    ) -> ExecResult: ...

    @abc.abstractmethod
    async def open_session(self) -> str: ...

    @abc.abstractmethod
    async def close_session(self, session: str) -> None: ...

    @abc.abstractmethod
    async def health_check(self) -> None:
        """Run a known snippet; raise SandboxUnavailable with a clear message if it fails."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def run_many(self, codes: Sequence[str], **kw) -> list[ExecResult]:
        return list(await asyncio.gather(*(self.run(c, **kw) for c in codes)))

    def run_batch(self, codes: Sequence[str], **kw) -> list[ExecResult]:
        """Blocking batch form, for scripts and notebooks without an event loop."""
        return asyncio.run(_then_close(self, self.run_many(codes, **kw)))

    def run_sync(self, code: str, **kw) -> ExecResult:
        return self.run_batch([code], **kw)[0]


async def _then_close(sandbox: Sandbox, coro):
    # asyncio.run makes a fresh loop; backends bind pipes/clients to the loop, so the
    # blocking forms own the whole lifetime: run, then close.
    try:
        return await coro
    finally:
        await sandbox.aclose()
