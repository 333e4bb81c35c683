"""The in-memory ticket lock store: Rasa's default for a single process, same semantics as Redis.

No polling here either: a waiter sleeps on an asyncio future of its own loop until the release
that makes it the head resolves it (see ``locks.api`` for the ticket and lifetime rules).

``lock_lease`` is accepted and checked like the Redis store's, but a holder keeps its ticket for
the whole lifetime: a holder here cannot die without the process, and the store, dying with it,
so a lease would only add the risk of a stalled event loop losing a live holder's lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from turnstile.stores._redis.cancellation import cancel_safe
from turnstile.stores.errors import LockError, LockTimeoutError
from turnstile.stores.locks.api import (
    DEFAULT_LOCK_LEASE,
    Issued,
    Released,
    Renewal,
    Ticket,
    TicketLock,
    TicketLockStore,
    renew_interval,
    waiting_lease,
)


@dataclass
class _Entry:
    ticket: Ticket
    ticket_id: str
    waker: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None


@dataclass
class _Queue:
    entries: dict[str, _Entry] = field(default_factory=dict)
    last_number: int = 0

    def head(self) -> _Entry | None:
        return min(self.entries.values(), key=lambda e: e.ticket.number, default=None)


class InMemoryTicketLockStore(TicketLockStore):
    """Ticket locks inside one process: same semantics as the Redis store, no polling.

    Safe across event loops and threads (Rasa runs some jobs under ``asyncio.run`` in a
    thread): state sits behind a thread lock and waiters are woken on their own loop.
    """

    #: Holders die with the process (see the module doc): no holder leases.
    renews_holders = False

    def __init__(
        self,
        *,
        lock_lifetime: float | None = None,
        lock_lease: float | None = DEFAULT_LOCK_LEASE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(lock_lifetime=lock_lifetime, lock_lease=lock_lease)
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self._mutex = threading.Lock()
        self._highest = 0

    def _purge(self, conversation_id: str, now: float) -> _Queue | None:
        """Drop expired tickets, wake a new head, forget an empty queue. Holds ``_mutex``."""
        queue = self._queues.get(conversation_id)
        if queue is None:
            return None
        before = queue.head()
        for ticket_id in [i for i, e in queue.entries.items() if e.ticket.has_expired(now)]:
            del queue.entries[ticket_id]
        self._wake_new_head(queue, before)
        return queue

    @staticmethod
    def _wake_new_head(queue: _Queue, before: _Entry | None) -> None:
        head = queue.head()
        if head is not None and head is not before and head.waker is not None:
            loop, future = head.waker
            loop.call_soon_threadsafe(_resolve, future)

    def _forget_if_empty(self, conversation_id: str, queue: _Queue) -> None:
        # The numbering restarts above the last number only while the queue exists; a fresh
        # queue starts from the clock in microseconds, which is above any earlier number.
        if not queue.entries:
            del self._queues[conversation_id]

    def _next_number(self, queue: _Queue) -> int:
        # As in Redis: the clock in microseconds, or one more than the last number if higher;
        # and, in one process, never below a number already handed out.
        floor = int(self._clock() * 1_000_000)
        queue.last_number = max(queue.last_number + 1, floor, self._highest + 1)
        self._highest = queue.last_number
        return queue.last_number

    async def _issue(
        self, conversation_id: str, ticket_id: str, lifetime: float, *, waiting: bool = True
    ) -> Issued:
        with self._mutex:
            now = self._clock()
            queue = self._purge(conversation_id, now) or self._queues.setdefault(
                conversation_id, _Queue()
            )
            entry = queue.entries.get(ticket_id)
            if entry is None:
                at_head = not queue.entries
                life = lifetime if at_head or not waiting else waiting_lease(lifetime)
                ticket = Ticket(self._next_number(queue), now + life)
                entry = queue.entries[ticket_id] = _Entry(ticket, ticket_id)
            head = queue.head()
            assert head is not None
            self.metrics.drawn(len(queue.entries) - 1)
            return Issued(
                entry.ticket, ticket_id, head is entry, max(head.ticket.expires - now, 0.0),
                lifetime,
            )

    async def _wait_turn(self, issued: Issued, conversation_id: str, deadline: float) -> Ticket:
        loop = asyncio.get_running_loop()
        lease = waiting_lease(issued.lifetime)
        while True:
            with self._mutex:
                now = self._clock()
                queue = self._purge(conversation_id, now)
                entry = queue.entries.get(issued.ticket_id) if queue else None
                if queue is None or entry is None:
                    raise LockError(
                        f"the ticket for conversation {conversation_id!r} was deleted (or its "
                        "waiting lease ran out) before its turn"
                    )
                head = queue.head()
                if head is entry:
                    # Held from now: the lifetime counts from the turn, not from the draw.
                    entry.ticket.expires = now + issued.lifetime
                    return Ticket(entry.ticket.number, entry.ticket.expires)
                assert head is not None
                entry.ticket.expires = max(entry.ticket.expires, now + lease)  # renew
                future: asyncio.Future[None] = loop.create_future()
                entry.waker = (loop, future)
                head_ttl = max(head.ticket.expires - now, 0.0)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeoutError(
                    f"conversation {conversation_id!r} was not free within the wait time"
                )
            try:
                # The head's expiry is the safety net for a holder that never releases; the
                # renewal interval keeps this waiter's own lease alive.
                timeout = min(remaining, head_ttl + 0.001, renew_interval(issued.lifetime))
                await cancel_safe(asyncio.wait_for(future, timeout=timeout), settle=False)
            except asyncio.TimeoutError:
                pass
            finally:
                with self._mutex:
                    if entry.waker is not None and entry.waker[1] is future:
                        entry.waker = None

    async def _renew(
        self,
        conversation_id: str,
        ticket_id: str,
        lease: float,
        *,
        number: int | None = None,
        deadline_in: float | None = None,
    ) -> Renewal:
        # Tickets here have no deadline (no holder leases) and are never lost in a failover:
        # the head is left as it is.
        with self._mutex:
            now = self._clock()
            queue = self._purge(conversation_id, now)
            entry = queue.entries.get(ticket_id) if queue else None
            if queue is None or entry is None:
                return Renewal(-1, 0.0, 0.0)
            ttl = entry.ticket.expires - now
            position = sorted(e.ticket.number for e in queue.entries.values()).index(
                entry.ticket.number
            )
            return Renewal(position, ttl, ttl)

    async def _release(
        self,
        conversation_id: str,
        *,
        ticket_id: str | None = None,
        number: int | None = None,
        expires: float | None = None,
    ) -> Released:
        with self._mutex:
            queue = self._purge(conversation_id, self._clock())
            if queue is None:
                return Released.GONE
            found = _find(queue.entries.values(), ticket_id, number)
            if found is not None:
                before = queue.head()
                del queue.entries[found.ticket_id]
                self._wake_new_head(queue, before)
            self._forget_if_empty(conversation_id, queue)
            return Released.GONE if found is None else Released.RELEASED

    async def get_lock(self, conversation_id: str) -> TicketLock | None:
        with self._mutex:
            queue = self._purge(conversation_id, self._clock())
            if queue is None or not queue.entries:
                return None
            tickets = sorted((e.ticket for e in queue.entries.values()), key=lambda t: t.number)
            return TicketLock(conversation_id, deque(Ticket(t.number, t.expires) for t in tickets))

    async def save_lock(self, lock: TicketLock) -> None:
        with self._mutex:
            now = self._clock()
            queue = self._purge(lock.conversation_id, now) or _Queue()
            before = queue.head()
            by_number = {e.ticket.number: e for e in queue.entries.values()}
            entries: dict[str, _Entry] = {}
            for ticket in lock.tickets:
                if ticket.has_expired(now):
                    continue
                old = by_number.get(ticket.number)
                entry = _Entry(Ticket(ticket.number, ticket.expires), f"n{ticket.number}")
                if old is not None:
                    entry = _Entry(entry.ticket, old.ticket_id, old.waker)
                entries[entry.ticket_id] = entry
            queue.entries = entries
            queue.last_number = max([queue.last_number, *(t.number for t in lock.tickets)])
            self._highest = max(self._highest, queue.last_number)
            self._queues[lock.conversation_id] = queue
            self._wake_new_head(queue, before)
            self._forget_if_empty(lock.conversation_id, queue)

    async def delete_lock(self, conversation_id: str) -> None:
        with self._mutex:
            queue = self._queues.pop(conversation_id, None)
            for entry in queue.entries.values() if queue else ():
                if entry.waker is not None:
                    loop, future = entry.waker
                    loop.call_soon_threadsafe(_resolve, future)


def _find(entries: Iterable[_Entry], ticket_id: str | None, number: int | None) -> _Entry | None:
    for entry in entries:
        if entry.ticket_id == ticket_id or (number is not None and entry.ticket.number == number):
            return entry
    return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
