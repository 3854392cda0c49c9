"""asyncua is asyncio; an agent's hooks are plain calls. One event loop per agent runs
in a thread of its own, and the hooks wait for its coroutines with a bound.

The loop lives as long as the agent: a subscription's notifications and a server's
sessions are served between the agent's calls, not only during them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("graphrun.agent.opcua.loop")
# asyncua logs every request and publish at INFO: at a line's rate that drowns the agents'
# own log. Its warnings and errors still show.
logging.getLogger("asyncua").setLevel(logging.WARNING)


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` submits a coroutine and waits for it."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._unhandled)
        self._thread = threading.Thread(target=self._main, name=f"{name}-opcua", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        except BaseException:
            log.exception("the OPC UA event loop died")
            raise

    @staticmethod
    def _unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A task that fails with nobody awaiting it (asyncua's keepalive, say) says why."""
        exc = context.get("exception")
        log.warning("OPC UA background task: %s%s", context.get("message", ""), f": {exc!r}" if exc else "")

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """The coroutine's result; TimeoutError (and the coroutine cancelled) after ``timeout``."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout} s") from None

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()
