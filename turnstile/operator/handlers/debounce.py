"""A per-key debounce: one action once a key (a namespace) has been quiet for a while.

A failed action is retried with a doubling delay, but that delay is only an upper bound: a
new poke (a change) wakes the waiting retry at once, and so does the API server's return
(``reachable``, asked every :data:`REACHABLE_EVERY` seconds while a retry waits on an outage).
The action is level-triggered, so an early retry is always safe; a change made after an outage
must reach the bots in seconds, not after the backoff a failed sync happened to be in.
"""

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
#: Seconds between looks at whether the API server answers again, while a retry waits on an
#: outage (one cheap GET; a retry after the API's return then waits at most this long).
REACHABLE_EVERY: Final = 1.0


class Debouncer:
    """Runs ``action(key)`` once a key has been quiet for ``settle`` seconds.

    A poke during the wait restarts the settle window, but never beyond ``max_delay`` after
    the first poke of the burst, so a namespace that never goes quiet still syncs. A poke that
    arrives while the action runs schedules exactly one more run. A failing action is retried
    with a doubling delay, cut short by a poke, or (when ``outage(exc)`` says the failure was
    the API server not answering) by ``reachable()`` answering True.
    """

    def __init__(
        self,
        action: Callable[[str], Awaitable[None]],
        *,
        settle: float = DEFAULT_SETTLE,
        max_delay: float = DEFAULT_MAX_DELAY,
        outage: Callable[[BaseException], bool] | None = None,
        reachable: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._action = action
        self.settle = settle
        self.max_delay = max(max_delay, settle)
        self._outage = outage
        self._reachable = reachable
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    def poke(self, key: str, *, change: bool = True) -> None:
        """Note a change under ``key``; the action runs after the settle window.

        ``change=False`` (a periodic re-sync, not an event) leaves a waiting retry's backoff
        alone: during an outage it would only fail again.
        """
        now = asyncio.get_running_loop().time()
        retrying = self._first.get(key, now) > now  # a failed sync's retry is waiting
        if retrying and not change:
            return
        if retrying:  # a change: the settle window from now, not the backoff
            self._first[key] = now
        self._first.setdefault(key, now)
        self._last[key] = now
        self._wake.setdefault(key, asyncio.Event()).set()
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"rollout-sync:{key}")

    async def _run(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        retry = RETRY_INITIAL
        wake = self._wake.setdefault(key, asyncio.Event())
        outage = False
        while key in self._first:
            due = min(self._last[key] + self.settle, self._first[key] + self.max_delay)
            if (wait := due - loop.time()) > 0:
                wake.clear()
                look = outage and self._reachable is not None
                with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                    await asyncio.wait_for(
                        wake.wait(), timeout=min(wait, REACHABLE_EVERY) if look else wait
                    )
                if look and not wake.is_set() and await self._answers():
                    logger.info("the API server answers again: retrying the sync of %r now", key)
                    outage = False
                    self._first[key] = self._last[key] = loop.time() - self.settle
                continue
            del self._first[key], self._last[key]
            try:
                await self._action(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outage = self._outage is not None and self._outage(exc)
                # One line with the cause; the traceback only for whoever debugs.
                logger.warning(
                    "rollout sync of %r failed (%s); retrying in at most %.0f s%s",
                    key, _cause(exc), retry,
                    ", or as soon as the API server answers or something changes" if outage
                    else ", or as soon as something changes",
                )  # fmt: skip
                logger.debug("rollout sync of %r failed", key, exc_info=True)
                later = loop.time() + retry - self.settle
                self._first.setdefault(key, later)
                self._last[key] = max(self._last.get(key, later), later)
                retry = min(retry * 2, RETRY_CAP)
            else:
                retry = RETRY_INITIAL
                outage = False

    async def _answers(self) -> bool:
        assert self._reachable is not None
        try:
            return await self._reachable()
        except Exception:  # a probe that fails says "not yet"
            logger.debug("the API reachability check failed", exc_info=True)
            return False

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
        self._wake.clear()


def _cause(exc: BaseException) -> str:
    """``Type: message``, with the first chained cause's if the message is empty."""
    text = str(exc) or str(exc.__cause__ or "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
