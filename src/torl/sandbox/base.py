"""The one interface every sandbox backend (local, remote) implements."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence

from torl.background_loop import BackgroundLoop
from torl.errors import InvalidCode, SandboxUnavailable, UnknownSession  # noqa: F401 - the interface's errors
from torl.sandbox.result import ExecResult


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
        stdin: str | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> ExecResult:
        """Run `code`. stdin: the text its standard input reads; files: written (paths relative to
        its working directory) before it starts; fetch_files: read back after it ends, into
        `ExecResult.files` (absent ones left out). Stateless runs only for the last three."""

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
        """Run several codes concurrently (same options for all); results in input order."""
        return list(await asyncio.gather(*(self.run(c, **kw) for c in codes)))

    # -- blocking forms, for scripts and notebooks without an event loop. They drive the async
    # API on a private event-loop thread owned by this object, so they can be called repeatedly
    # (backends bind pipes and clients to one loop). Do not mix them with `await` on another loop.

    def run_batch(self, codes: Sequence[str], **kw) -> list[ExecResult]:
        """Blocking `run_many`."""
        return self._call_blocking(self.run_many(codes, **kw))

    def run_sync(self, code: str, **kw) -> ExecResult:
        """Blocking `run`."""
        return self._call_blocking(self.run(code, **kw))

    def open_session_sync(self) -> str:
        return self._call_blocking(self.open_session())

    def close_session_sync(self, session: str) -> None:
        self._call_blocking(self.close_session(session))

    def health_check_sync(self) -> None:
        self._call_blocking(self.health_check())

    def close(self) -> None:
        """Blocking `aclose`; also stops the private loop thread. Safe to call twice."""
        loop_thread = self.__dict__.pop("_loop_thread", None)
        if loop_thread is not None:
            try:
                loop_thread.run(self.aclose())
            finally:
                loop_thread.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call_blocking(self, coro):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError("blocking sandbox call made from inside a running event loop: "
                               "use the async form (await sandbox.run(...) / run_many(...)) instead")
        loop_thread = self.__dict__.get("_loop_thread")
        if loop_thread is None:
            loop_thread = self.__dict__["_loop_thread"] = BackgroundLoop("torl-sandbox-loop")
        return loop_thread.run(coro)


class SandboxWrapper(Sandbox):
    """A sandbox that forwards every call to `inner`; subclasses override what they add (timing, a fault)."""

    def __init__(self, inner: Sandbox) -> None:
        self.inner = inner

    async def run(self, code: str, **kw) -> ExecResult:
        return await self.inner.run(code, **kw)

    async def open_session(self) -> str:
        return await self.inner.open_session()

    async def close_session(self, session: str) -> None:
        await self.inner.close_session(session)

    async def health_check(self) -> None:
        await self.inner.health_check()

    async def aclose(self) -> None:
        await self.inner.aclose()
