"""``turnstile.rasa.TicketLockStore``: the lock store Rasa loads from ``endpoints.yml``.

::

    lock_store:
      type: turnstile.rasa.TicketLockStore
      host: redis          # or deployment_mode: cluster|sentinel with endpoints: [...]
      key_prefix: bot1

Rasa builds it as ``TicketLockStore(endpoint_config=...)`` and uses it only as
``async with lock_store.lock(conversation_id)``. That method is the fast path: one round trip to
draw a ticket, a wake-up instead of Rasa's one-second polling, one round trip to return it
(``turnstile.stores.locks.redis``). Without an endpoint config the store keeps its locks in
memory, like Rasa's default. ``lock_lease`` (default 10 s, 0 = off) keeps a ticket held by
``lock()`` on a renewed lease, so a pod killed mid-message frees the conversation within one lease
while ``lock_lifetime`` stays the longest a message may hold it (``docs/locks.md``, "Holder
leases"); the synchronous ``issue_ticket`` has no holder to renew it and keeps the lifetime.

When Rasa is importable the class subclasses ``rasa.core.lock_store.LockStore``, yields Rasa's
``TicketLock`` and raises Rasa's ``LockError`` when the wait fails, so Rasa sees the contract it
knows. Rasa's other methods (``issue_ticket``, ``finish_serving``, ``get_lock``, ...) are
synchronous in Rasa; they are kept synchronous here and run the same atomic scripts on a
private event loop thread, so calling them from a coroutine blocks for one round trip, as
Rasa's own stores do.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from turnstile.stores.errors import LockError
from turnstile.stores.locks.api import HeldTicket, LockContext, Ticket, TicketLock
from turnstile.stores.locks.api import TicketLockStore as _Store
from turnstile.stores.locks.memory import InMemoryTicketLockStore
from turnstile.stores.locks.transition import build_lock_store

T = TypeVar("T")

try:  # Rasa Open Source 3.6 and Rasa Pro 3.x share these names.
    from rasa.core.lock import Ticket as _RasaTicket
    from rasa.core.lock import TicketLock as _RasaTicketLock
    from rasa.core.lock_store import LockError as _RasaLockError
    from rasa.core.lock_store import LockStore as _LockStoreBase

    HAS_RASA = True
except ImportError:  # a plain base: the module imports and works without Rasa
    _LockStoreBase = object
    _RasaTicket = Ticket
    _RasaTicketLock = TicketLock
    _RasaLockError = LockError
    HAS_RASA = False

#: The ``TicketLock`` type this adapter hands out: Rasa's when Rasa is installed.
RasaTicketLock: Any = _RasaTicketLock


class TicketLockStore(_LockStoreBase):  # type: ignore[misc]
    """Rasa's lock store contract on Turnstile's ticket lock store (see the module doc)."""

    def __init__(self, endpoint_config: Any = None, *, store: _Store | None = None) -> None:
        if store is not None:
            self.store = store
        elif endpoint_config is None:
            self.store = InMemoryTicketLockStore()
        else:
            # With transition_from/transition_until: Turnstile's store holding the previous
            # store's lock too until then (``turnstile.stores.locks.transition``).
            self.store = build_lock_store(
                getattr(endpoint_config, "kwargs", None) or {},
                url=getattr(endpoint_config, "url", None),
            )
        self._bridge = _LoopThread()
        if HAS_RASA:
            super().__init__()

    @property
    def lock_lifetime(self) -> float:
        return self.store.lock_lifetime

    def lock(
        self,
        conversation_id: str,
        lock_lifetime: float | None = None,
        wait_time_in_seconds: float = 1,
    ) -> _RasaLockContext:
        """Hold the conversation for the ``async with`` body, yielding Rasa's ``TicketLock``.

        ``wait_time_in_seconds`` is Rasa's polling interval; nothing polls here, so it is
        accepted and ignored. A waiter waits while its ticket lives, as in Rasa, and gets
        Rasa's ``LockError`` if the lock is deleted first (a ticket lost in a Redis failover, or
        whose waiting lease ran out while Redis was unreachable, re-enters the line instead).
        """
        return _RasaLockContext(self.store.lock(conversation_id, lock_lifetime), conversation_id)

    # -- Rasa's synchronous methods, one atomic script each ------------------------------------

    def issue_ticket(self, conversation_id: str, lock_lifetime: float | None = None) -> int:
        return self._bridge.run(lambda: self.store.issue_ticket(conversation_id, lock_lifetime))

    def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        self._bridge.run(lambda: self.store.finish_serving(conversation_id, ticket_number))

    def cleanup(self, conversation_id: str, ticket_number: int) -> None:
        # Returning the last ticket removes the conversation's key in the same script, so
        # Rasa's racy "finish, ask, delete" sequence is one step here.
        self.finish_serving(conversation_id, ticket_number)

    def is_someone_waiting(self, conversation_id: str) -> bool:
        return self._bridge.run(lambda: self.store.is_someone_waiting(conversation_id))

    def get_lock(self, conversation_id: str) -> Any:
        lock = self._bridge.run(lambda: self.store.get_lock(conversation_id))
        return None if lock is None else _lock_to_rasa(lock)

    def save_lock(self, lock: Any) -> None:
        tickets = deque(Ticket(int(t.number), float(t.expires)) for t in lock.tickets)
        self._bridge.run(lambda: self.store.save_lock(TicketLock(lock.conversation_id, tickets)))

    def delete_lock(self, conversation_id: str) -> None:
        self._bridge.run(lambda: self.store.delete_lock(conversation_id))

    def update_lock(self, conversation_id: str) -> None:
        # Every script drops expired tickets; reading the lock is enough.
        self.get_lock(conversation_id)

    async def close(self) -> None:
        """Close the store's connections (Rasa does not call this; tests and tools do)."""
        await self.store.close()  # also closes the private loop's connection, from here
        self._bridge.stop()


class _RasaLockContext:
    """The store's lock context with Rasa's values and errors (a class: it is the hot path)."""

    __slots__ = ("_context", "_conversation_id")

    def __init__(self, context: LockContext, conversation_id: str) -> None:
        self._context = context
        self._conversation_id = conversation_id

    async def __aenter__(self) -> Any:
        try:
            held = await self._context.__aenter__()
        except LockError as exc:
            raise _RasaLockError(
                f"Could not acquire lock for conversation_id '{self._conversation_id}': {exc}"
            ) from exc
        return _held_to_rasa(held)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._context.__aexit__(*exc_info)


def _held_to_rasa(held: HeldTicket) -> Any:
    lock = _RasaTicketLock(held.conversation_id, deque([_RasaTicket(*_ticket_args(held.ticket))]))
    # Rasa's TicketLock has no fencing token; hand it on as an attribute for callers that want it.
    lock.fencing_token = held.fencing_token
    return lock


def _lock_to_rasa(lock: TicketLock) -> Any:
    tickets = deque(_RasaTicket(*_ticket_args(t)) for t in lock.tickets)
    return _RasaTicketLock(lock.conversation_id, tickets)


def _ticket_args(ticket: Ticket) -> tuple[int, float]:
    return ticket.number, ticket.expires


class _LoopThread:
    """A private event loop in a daemon thread, for running async store calls synchronously."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    @property
    def started(self) -> bool:
        return self._loop is not None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._mutex:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="turnstile-lock-store", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        loop = self._ensure()

        async def call() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), loop).result()

    def stop(self) -> None:
        with self._mutex:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
