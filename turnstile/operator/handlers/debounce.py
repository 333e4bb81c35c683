"""A per-key debounce: one action once a key (a namespace) has been quiet for a while."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["Debouncer"]

logger = logging.getLogger(__name__)

DEFAULT_SETTLE: Final = 1.5
DEFAULT_MAX_DELAY: Final = 10.0
#: After a failed sync, retry after this long, doubling up to the cap (level-triggered, so a
#: retry is always safe).
RETRY_INITIAL: Final = 2.0
RETRY_CAP: Final = 60.0



class Debouncer:
    """Runs ``action(key)`` once a key has been quiet for ``settle`` seconds.

    A poke during the wait restarts the settle window, but never beyond ``max_delay`` after
    the first poke of the burst, so a namespace that never goes quiet still syncs. A poke that
    arrives while the action runs schedules exactly one more run. A failing action is retried
    with a doubling delay.
    """

    def __init__(
        self,
        action: Callable[[str], Awaitable[None]],
        *,
        settle: float = DEFAULT_SETTLE,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self._action = action
        self.settle = settle
        self.max_delay = max(max_delay, settle)
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def poke(self, key: str) -> None:
        """Note a change under ``key``; the action runs after the settle window."""
        now = asyncio.get_running_loop().time()
        self._first.setdefault(key, now)
        self._last[key] = now
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"rollout-sync:{key}")

    async def _run(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        retry = RETRY_INITIAL
        while key in self._first:
            due = min(self._last[key] + self.settle, self._first[key] + self.max_delay)
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
                continue
            del self._first[key], self._last[key]
            try:
                await self._action(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("rollout sync of %r failed; retrying in %.0fs", key, retry)
                later = loop.time() + retry - self.settle
                self._first.setdefault(key, later)
                self._last[key] = max(self._last.get(key, later), later)
                retry = min(retry * 2, RETRY_CAP)
            else:
                retry = RETRY_INITIAL

    async def idle(self) -> None:
        """Wait until no key has a pending or running action (for tests and shutdown)."""
        while tasks := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        """Cancel everything pending."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._first.clear()
        self._last.clear()
