"""A poll loop that fires due timers, for services that use the timer store without Rasa.

Rasa wraps a custom timer store in its own manager; everyone else runs :class:`TimerManager`
on each replica against one shared store. Every ``poll_interval`` a manager lists due timers,
*claims* them (a delete that succeeds only while the timer is unchanged, so of all replicas
exactly one wins each timer) and fires the ones it won. Before firing, it asks
``current_session(sender_id)`` and drops a timer whose ``session_id`` no longer matches: the
conversation moved on to a new session after the timer was set.

Delivery is at most once: a timer is deleted by its claim *before* the callback runs, so a pod
that dies between the two loses that timer rather than letting two pods fire it.

Everything is bounded: at most ``max_batch`` timers per poll, at most ``concurrency`` callbacks
at a time, and :meth:`TimerManager.stop` waits at most ``stop_timeout`` for a poll in progress.
The manager reads time only through ``clock`` and sleeps only through asyncio, so tests drive
it on a fake clock (looptime).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from turnstile.stores.errors import TurnstileError
from turnstile.stores.timers import (
    DEFAULT_POLL_INTERVAL,
    BaseTimerStore,
    Clock,
    SessionTimer,
)

logger = logging.getLogger(__name__)

#: Fires one timer.
ExpiredCallback = Callable[[SessionTimer], Awaitable[None]]
#: The conversation's current session id (``None`` if it has none).
SessionLookup = Callable[[str], Awaitable[str | None]]


class TimerManager:
    """Polls ``store``, claims due timers and calls ``on_expired`` once per timer."""

    def __init__(
        self,
        store: BaseTimerStore,
        on_expired: ExpiredCallback,
        *,
        current_session: SessionLookup | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_batch: int = 1000,
        concurrency: int = 32,
        stop_timeout: float = 10.0,
        clock: Clock = time.time,
    ) -> None:
        if poll_interval <= 0 or max_batch < 1 or concurrency < 1 or stop_timeout < 0:
            raise ValueError(
                "poll_interval must be > 0, max_batch and concurrency >= 1, stop_timeout >= 0"
            )
        self._store = store
        self._on_expired = on_expired
        self._current_session = current_session
        self._poll_interval = poll_interval
        self._max_batch = max_batch
        self._semaphore = asyncio.Semaphore(concurrency)
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        #: Timers fired / dropped as superseded / whose callback raised, since start.
        self.fired = 0
        self.dropped = 0
        self.failed = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Fire what expired while no manager ran (start-up recovery), then poll in the
        background."""
        if self.running:
            return
        self._stopping.clear()
        await self._poll_guarded()
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name="turnstile-timer-manager"
        )

    async def stop(self) -> None:
        """Let a poll in progress finish (up to ``stop_timeout``), then end the loop."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self._stop_timeout)
        except asyncio.TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> TimerManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def poll_once(self) -> bool:
        """One poll: claim up to about ``max_batch`` due timers and fire them; returns whether
        more were due (a backlog)."""
        claimed, more = await self._store.claim_due(self._clock(), self._max_batch)
        if claimed:
            await asyncio.gather(*(self._fire(timer) for timer in claimed))
        return more

    async def _poll_guarded(self) -> bool:
        try:
            more = await self.poll_once()
        except TurnstileError as exc:
            if not self._failing:
                logger.warning("Timer manager: polling failed (%s); will keep trying", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("Timer manager: polling works again")
        self._failing = False
        return more

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            if await self._poll_guarded():
                await asyncio.sleep(0)  # a backlog: poll again at once, but let others run
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_interval)

    async def _fire(self, timer: SessionTimer) -> None:
        async with self._semaphore:
            try:
                if self._current_session is not None and timer.session_id is not None:
                    current = await self._current_session(timer.sender_id)
                    if current != timer.session_id:
                        self.dropped += 1
                        logger.debug(
                            "Timer of %r dropped: it was set in session %r, now %r",
                            timer.sender_id, timer.session_id, current,
                        )
                        return
                await self._on_expired(timer)
                self.fired += 1
            except Exception:
                self.failed += 1
                logger.exception("Timer callback for %r failed", timer.sender_id)
