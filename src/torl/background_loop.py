"""An asyncio loop on a daemon thread, for blocking code that drives async components.

Engines, sandboxes and their clients bind pipes and connections to the loop they first run on,
so a blocking caller (a sync sandbox call, TRL's synchronous rollout hook) keeps one loop alive
for their whole lifetime instead of `asyncio.run` making a new one per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any


class BackgroundLoop:
    def __init__(self, name: str = "torl-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine) -> Any:
        """Run `coro` on the loop and block until it is done (its exception is re-raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
