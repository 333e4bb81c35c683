"""The multi-pod poll loop that fires due timers (inside Rasa via :mod:`turnstile.rasa`).

Each replica runs one :class:`TimerManager` against one shared store. Every ``poll_interval``
a manager *claims* due timers (``claim_due``: of all replicas exactly one gets each timer) and
fires them. Before firing, it asks ``current_session(sender_id)`` and drops a timer whose
``session_id`` no longer matches: the conversation moved on to a new session after the timer
was set.

Delivery survives a pod dying between claim and callback: on the Redis store a claim is a
*lease*. The manager acknowledges each timer after its callback (``ack``, which deletes it) and
renews the leases of callbacks still running every third of the lease; a timer whose pod died
before acknowledging becomes due again when its lease runs out, and another pod fires it. So a
timer is fired at least once; it is fired twice only when a pod dies (or loses Redis for longer
than the lease) after the callback ran and before the acknowledgement reached Redis.

Polls do not wait for callbacks: each claims at most as many timers as the manager has free
callback slots and runs their callbacks in the background, so a slow callback delays no other
timer, and a pod whose slots are all busy leaves due timers to the other pods.

Everything is bounded: at most ``max_batch`` timers per poll, at most ``concurrency`` callbacks
at a time, and :meth:`TimerManager.stop` waits at most ``stop_timeout`` for the callbacks
running.
The manager reads time only through ``clock`` and sleeps only through asyncio, so tests drive
it on a fake clock (looptime).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from turnstile.stores import metrics
from turnstile.stores.errors import TurnstileError
from turnstile.stores.timers.api import DEFAULT_POLL_INTERVAL, BaseTimerStore, Clock, SessionTimer

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
        self._concurrency = concurrency
        self._semaphore = asyncio.Semaphore(concurrency)
        #: Callbacks the poll loop started and that have not finished.
        self._callbacks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        #: Claimed timers whose acknowledgement has not been sent yet (their leases are renewed).
        self._in_flight: dict[str, SessionTimer] = {}
        self._renewal: asyncio.Task[None] | None = None
        self._ack_queue: list[SessionTimer] = []
        self._ack_flush: asyncio.Task[None] | None = None
        #: Timers fired / dropped as superseded / whose callback raised, since start.
        self.fired = 0
        self.dropped = 0
        self.failed = 0
        self._metrics = metrics.timer_recorder(store)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Fire what expired while no manager ran (start-up recovery), then poll in the
        background."""
        if self.running:
            return
        self._stopping.clear()
        loop = asyncio.get_running_loop()
        if self._store.lease is not None and self._renewal is None:
            self._renewal = loop.create_task(
                self._renew(self._store.lease / 3), name="turnstile-timer-lease-renewal"
            )
        backlog = await self._poll_guarded()
        self._task = loop.create_task(self._loop(backlog), name="turnstile-timer-manager")

    async def stop(self) -> None:
        """End the loop, and let the callbacks running finish (all within ``stop_timeout``).

        Never deletes pending timers: they stay in the store for the other pods (and for this
        one when it starts again). Timers whose callbacks were cut short stay leased and become
        due again when their leases run out.
        """
        self._stopping.set()
        self._slot_freed.set()  # a loop waiting for a free slot looks at _stopping at once
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_timeout
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self._stop_timeout)
            except asyncio.TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._finish_callbacks(max(deadline - loop.time(), 0))
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

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
        more were due (a backlog). Each timer is acknowledged as soon as its callback returns
        (callbacks that finish together share one round trip), not when the whole batch is
        done, so a pod that dies mid-batch leaves only its running callbacks to fire again."""
        claimed, more = await self._store.claim_due(self._clock(), self._max_batch)
        if not claimed:
            return more
        self._metrics.claimed(len(claimed))
        for timer in claimed:
            self._in_flight[timer.sender_id] = timer
        try:
            await asyncio.gather(*(self._fire_and_ack(timer) for timer in claimed))
            if self._ack_flush is not None:
                await asyncio.shield(self._ack_flush)
        finally:
            for timer in claimed:
                if self._in_flight.get(timer.sender_id) is timer:
                    del self._in_flight[timer.sender_id]
        return more

    async def _finish_callbacks(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the loop's callbacks, cancel the rest, send the acks."""
        running = set(self._callbacks)
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        flush = self._ack_flush
        if flush is not None and not flush.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(flush), max(timeout, 1.0))

    async def _claim_and_start(self) -> bool:
        """The loop's poll: claim up to the free callback slots' worth of due timers and start
        their callbacks without waiting for them; whether more may be due."""
        free = self._concurrency - len(self._callbacks)
        if free <= 0:
            return True  # every slot busy: look again when one frees
        claimed, more = await self._store.claim_due(self._clock(), min(self._max_batch, free))
        if claimed:
            self._metrics.claimed(len(claimed))
            loop = asyncio.get_running_loop()
            for timer in claimed:
                self._in_flight[timer.sender_id] = timer
                task = loop.create_task(self._callback(timer), name="turnstile-timer-callback")
                self._callbacks.add(task)
                task.add_done_callback(self._callback_done)
        return more and bool(claimed)

    async def _callback(self, timer: SessionTimer) -> None:
        try:
            await self._fire_and_ack(timer)
        except asyncio.CancelledError:  # stopped: no ack, its lease runs out, another pod fires
            if self._in_flight.get(timer.sender_id) is timer:
                del self._in_flight[timer.sender_id]
            raise

    def _callback_done(self, task: asyncio.Task[None]) -> None:
        self._callbacks.discard(task)
        self._slot_freed.set()

    async def _fire_and_ack(self, timer: SessionTimer) -> None:
        await self._fire(timer)
        self._ack_queue.append(timer)
        if self._ack_flush is None or self._ack_flush.done():
            self._ack_flush = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        while self._ack_queue:
            await asyncio.sleep(0)  # callbacks finishing in this step join the round trip
            batch, self._ack_queue = self._ack_queue, []
            try:
                await self._store.ack(batch)
            except TurnstileError as exc:  # the leases run out; the timers fire again
                logger.warning("Timer manager: acknowledging %d timer(s) failed (%s)",
                               len(batch), exc)
            for timer in batch:
                if self._in_flight.get(timer.sender_id) is timer:
                    del self._in_flight[timer.sender_id]

    async def _renew(self, every: float) -> None:
        """Renew the leases of running callbacks, so a slow callback is not fired twice."""
        while True:
            await asyncio.sleep(every)
            if not self._in_flight:
                continue
            try:
                await self._store.extend(list(self._in_flight.values()))
            except TurnstileError as exc:
                logger.warning("Timer manager: renewing %d lease(s) failed (%s)",
                               len(self._in_flight), exc)

    async def _poll_guarded(self, *, wait: bool = True) -> bool:
        try:
            more = await (self.poll_once() if wait else self._claim_and_start())
        except TurnstileError as exc:
            if not self._failing:
                logger.warning("Timer manager: polling failed (%s); will keep trying", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("Timer manager: polling works again")
        self._failing = False
        return more

    async def _loop(self, backlog: bool) -> None:
        """Polls start at a fixed rate, one ``poll_interval`` apart whatever the callbacks take,
        so a due timer waits at most one interval plus one claim (plus, when every callback
        slot of every pod is busy, until a slot frees). The first poll after start-up recovery
        comes at a random point of the first interval: pods that started together do not poll
        in step, and N pods together poll about N times per interval."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + (0 if backlog else random.random() * self._poll_interval)
        while not self._stopping.is_set():
            delay = next_poll - loop.time()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
            started = loop.time()
            self._slot_freed.clear()
            if await self._poll_guarded(wait=False):
                # A backlog: poll again at once if a slot is free, else when one frees (or at
                # the next interval), but let others run.
                if len(self._callbacks) >= self._concurrency:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), self._poll_interval)
                await asyncio.sleep(0)
                next_poll = loop.time()
                continue
            next_poll = started + self._poll_interval

    async def _fire(self, timer: SessionTimer) -> None:
        async with self._semaphore:
            try:
                if self._current_session is not None and timer.session_id is not None:
                    current = await self._current_session(timer.sender_id)
                    if current != timer.session_id:
                        self.dropped += 1
                        self._metrics.dropped()
                        logger.debug(
                            "Timer of %r dropped: it was set in session %r, now %r",
                            timer.sender_id, timer.session_id, current,
                        )
                        return
                self._metrics.fired(self._clock() - timer.scheduled_time)
                await self._on_expired(timer)
                self.fired += 1
            except Exception:  # acknowledged all the same: a failing callback is not retried
                self.failed += 1
                self._metrics.failed()
                logger.exception("Timer callback for %r failed", timer.sender_id)
