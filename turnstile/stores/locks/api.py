"""Ticket locks: one conversation is handled by one holder at a time, in arrival order.

Rasa serialises the messages of a conversation with a *ticket lock*: every message draws a
numbered ticket, waits until its ticket is the lowest live one (the head of the queue), is
handled, and returns its ticket. A ticket carries an expiry so that a holder that dies cannot
block its conversation for longer than ``lock_lifetime``. This module holds what every
implementation shares:

* the values: :class:`Ticket` and :class:`TicketLock` (shaped like Rasa's), and
  :class:`HeldTicket`, what :meth:`TicketLockStore.lock` yields to the holder; its
  ``fencing_token`` (the ticket number) grows with every ticket of a conversation;
* :class:`TicketLockStore`, the async API, whose :meth:`~TicketLockStore.lock` is written once
  over three primitives (issue, wait for the turn, release) that each store implements
  (``memory``: :class:`~turnstile.stores.locks.memory.InMemoryTicketLockStore`, the default for
  a single process; ``redis``: the Redis store).

The one idea: **nobody polls**. A waiter sleeps until the release that makes it the head wakes
it (an asyncio future here, a blocking pop in Redis, see ``locks.redis``), with the expiry of
the current head as the safety net for a holder that dies without releasing.

**Lifetimes.** ``lock_lifetime`` keeps Rasa's meaning, the longest a message may *hold* the
lock, and counts from when the ticket reaches the head. While a ticket waits it lives on a short
*waiting lease* (``WAITING_LEASE``, at most the lifetime) that its live waiter renews, so:

* a message queued behind a holder that died is served as soon as the dead ticket expires, however
  long it has waited itself (it is never dropped with the dead holder);
* a waiter that dies (its pod killed) leaves the queue within one lease, not one lifetime.

Tickets drawn without a waiter (``issue_ticket``, Rasa's own API) have no one to renew them and
live for the whole lifetime from issue, as in Rasa.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import json
import logging
import math
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

from turnstile.stores import metrics
from turnstile.stores._redis.cancellation import cancel_safe
from turnstile.stores.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Rasa's ``DEFAULT_LOCK_LIFETIME``: seconds after which a ticket that was not returned expires.
DEFAULT_LOCK_LIFETIME: Final = 60.0
#: Rasa reads the default lifetime from this variable; so do we.
LOCK_LIFETIME_ENV: Final = "TICKET_LOCK_LIFETIME"
#: Seconds a waiting ticket lives without its waiter renewing it (see the module doc); a waiter
#: renews three times per lease, so a slow event loop loses nothing.
WAITING_LEASE: Final = 10.0
_RENEWALS_PER_LEASE: Final = 3


def waiting_lease(lifetime: float) -> float:
    """The lease of a waiting ticket with this lifetime."""
    return min(WAITING_LEASE, lifetime)


def renew_interval(lifetime: float) -> float:
    """How often a waiter renews its ticket's lease at most."""
    return waiting_lease(lifetime) / _RENEWALS_PER_LEASE


def default_lock_lifetime(environ: dict[str, str] | None = None) -> float:
    """``TICKET_LOCK_LIFETIME`` (seconds, as Rasa reads it) or 60."""
    raw = (os.environ if environ is None else environ).get(LOCK_LIFETIME_ENV, "")
    if not raw.strip():
        return DEFAULT_LOCK_LIFETIME
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(LOCK_LIFETIME_ENV, raw, "a number of seconds >= 0")
    return value or DEFAULT_LOCK_LIFETIME


def check_lifetime(value: float, *, key: str = "lock_lifetime") -> float:
    """A lifetime must be a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(key, value, "a number of seconds > 0")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(key, value, "a number of seconds > 0")
    return float(value)


def new_ticket_id() -> str:
    """A caller-made ticket id; scripts are idempotent per id, so a retried issue is harmless.

    128 random bits drawn once per process, plus a counter: unique across pods and calls
    without a system call per ticket (``uuid4`` reads the OS's random source every time).
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


_ID_PREFIX: Final = uuid.uuid4().hex
_ID_COUNTER: Final = itertools.count(1)


# ---- values ---------------------------------------------------------------------------------


@dataclass
class Ticket:
    """One place in a conversation's queue: Rasa's ``rasa.core.lock.Ticket``."""

    number: int
    expires: float  # seconds since the epoch

    def has_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expires

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "expires": self.expires}

    def dumps(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ticket:
        return cls(number=int(data["number"]), expires=float(data["expires"]))


@dataclass
class TicketLock:
    """A conversation's queue of live tickets, lowest number first: Rasa's ``TicketLock``."""

    conversation_id: str
    tickets: deque[Ticket] = field(default_factory=deque)

    @property
    def now_serving(self) -> int:
        """The number of the head ticket, 0 when the queue is empty (as in Rasa)."""
        return self.tickets[0].number if self.tickets else 0

    @property
    def last_issued(self) -> int:
        """The highest number in the queue, -1 when empty (Rasa's ``NO_TICKET_ISSUED``)."""
        return self.tickets[-1].number if self.tickets else -1

    def is_locked(self, ticket_number: int) -> bool:
        return self.now_serving != ticket_number

    def is_someone_waiting(self) -> bool:
        return len(self.tickets) > 0

    def dumps(self) -> str:
        tickets = [t.dumps() for t in self.tickets]
        return json.dumps({"conversation_id": self.conversation_id, "tickets": tickets})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TicketLock:
        tickets = [Ticket.from_dict(json.loads(t)) for t in data.get("tickets", [])]
        return cls(str(data.get("conversation_id")), deque(tickets))


@dataclass(frozen=True)
class HeldTicket:
    """What the holder of a conversation's lock gets: its ticket and a fencing token."""

    conversation_id: str
    ticket: Ticket
    ticket_id: str

    @property
    def fencing_token(self) -> int:
        """Grows with every ticket of the conversation; pass it to storage that can reject
        writes from a holder whose ticket expired and was overtaken."""
        return self.ticket.number

    def as_ticket_lock(self) -> TicketLock:
        """A ``TicketLock`` with this ticket at the head, for callers that expect Rasa's value."""
        return TicketLock(self.conversation_id, deque([self.ticket]))


@dataclass(frozen=True)
class Issued:
    """The reply to issuing a ticket: the ticket, and whether it is already at the head."""

    ticket: Ticket
    ticket_id: str
    at_head: bool
    #: Seconds until the current head expires: how long a waiter sleeps at most (safety net).
    head_ttl: float
    #: The lifetime the ticket was drawn with; a waiter gets it in full once at the head.
    lifetime: float
    #: The number of the ticket directly ahead (0 at the head): the Redis store's waiter
    #: blocks on its release, and ``head_ttl`` is then also bounded by its expiry.
    ahead: int = 0


# ---- the API --------------------------------------------------------------------------------


class TicketLockStore(abc.ABC):
    """An async ticket lock store (see the module doc). Subclasses provide the primitives."""

    def __init__(self, *, lock_lifetime: float | None = None) -> None:
        self.lock_lifetime = check_lifetime(
            default_lock_lifetime() if lock_lifetime is None else lock_lifetime
        )
        metrics.decide()

    # -- primitives -----------------------------------------------------------------------

    @abc.abstractmethod
    async def _issue(
        self, conversation_id: str, ticket_id: str, lifetime: float, *, waiting: bool = True
    ) -> Issued:
        """Append a ticket (idempotent per ``ticket_id``). At the head it lives ``lifetime``;
        behind others it lives one waiting lease if ``waiting`` (its waiter renews it), else
        ``lifetime``."""

    @abc.abstractmethod
    async def _wait_turn(self, issued: Issued, conversation_id: str, deadline: float) -> Ticket:
        """Renew the waiting ticket until it is at the head, then give it its lifetime and
        return it; raise LockError if it vanished meanwhile (deleted, or its lease ran out
        because this waiter stalled), LockTimeoutError at ``deadline`` (``loop.time()``)."""

    @abc.abstractmethod
    async def _release(
        self, conversation_id: str, *, ticket_id: str | None = None, number: int | None = None
    ) -> bool:
        """Remove a ticket (by id if given, else by number) and wake the next head; False if it
        was no longer there. A caller that knows both passes both."""

    @abc.abstractmethod
    async def get_lock(self, conversation_id: str) -> TicketLock | None:
        """The conversation's live tickets, or None when there are none."""

    @abc.abstractmethod
    async def save_lock(self, lock: TicketLock) -> None:
        """Replace the conversation's tickets with ``lock.tickets`` (expired ones are dropped)."""

    @abc.abstractmethod
    async def delete_lock(self, conversation_id: str) -> None:
        """Drop every ticket of the conversation; waiters fail with LockError."""

    async def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections; the store is not used afterwards."""

    @cached_property
    def metrics(self) -> metrics.LockRecorder:
        """Where this store's lock events are counted (``turnstile.stores.metrics``)."""
        return metrics.lock_recorder(self)

    # -- composed ---------------------------------------------------------------------------

    def lock(
        self,
        conversation_id: str,
        lock_lifetime: float | None = None,
        wait_time: float | None = None,
    ) -> LockContext:
        """Hold the conversation's lock for the body of ``async with store.lock(...) as held``.

        Waits in FIFO order, woken by the release of the holder before. ``wait_time`` bounds the
        wait (LockTimeoutError); without it a message waits as long as the messages ahead of
        it hold the lock, each for at most its lifetime (a dead holder's ticket expires and the
        wait goes on), and fails with LockError only if its ticket is deleted.
        """
        lifetime = self.lock_lifetime if lock_lifetime is None else check_lifetime(lock_lifetime)
        budget = math.inf if wait_time is None else max(wait_time, 0.0)
        return LockContext(self, conversation_id, lifetime, budget)

    async def issue_ticket(self, conversation_id: str, lock_lifetime: float | None = None) -> int:
        """Append a ticket to the conversation's queue and return its number (Rasa's method)."""
        lifetime = self.lock_lifetime if lock_lifetime is None else check_lifetime(lock_lifetime)
        issued = await self._issue(conversation_id, new_ticket_id(), lifetime, waiting=False)
        return issued.ticket.number

    async def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        """Return ticket ``ticket_number``, waking the next in line (Rasa's method)."""
        await self._release(conversation_id, number=int(ticket_number))

    async def is_someone_waiting(self, conversation_id: str) -> bool:
        """Whether the conversation has any live ticket, the holder's included (as in Rasa)."""
        lock = await self.get_lock(conversation_id)
        return lock is not None and lock.is_someone_waiting()


class LockContext:
    """What :meth:`TicketLockStore.lock` returns: draw, wait and hold on entry, release on exit.

    A plain class rather than ``@asynccontextmanager``: a lock cycle is the hot path, and a
    generator-based context manager costs a generator and two extra frames per cycle.
    """

    __slots__ = ("_budget", "_conversation_id", "_lifetime", "_number", "_since", "_store",
                 "_ticket_id")

    def __init__(
        self, store: TicketLockStore, conversation_id: str, lifetime: float, budget: float
    ) -> None:
        self._store = store
        self._conversation_id = conversation_id
        self._lifetime = lifetime
        self._budget = budget
        self._ticket_id: str | None = None
        #: Known once the ticket is drawn; the release names it (the Redis store wakes the
        #: ticket behind through a list named after it).
        self._number: int | None = None
        self._since = 0.0

    async def __aenter__(self) -> HeldTicket:
        if self._ticket_id is not None:
            raise RuntimeError("a lock context cannot be entered twice; call lock() again")
        store, conversation_id = self._store, self._conversation_id
        deadline = asyncio.get_running_loop().time() + self._budget
        # The id is made here, before the ticket exists, so that a message cancelled while its
        # ticket is being drawn can still return it (issue and release are idempotent per id).
        ticket_id = self._ticket_id = new_ticket_id()
        since = store.metrics.now()
        try:
            issued = await _draw(store, conversation_id, ticket_id, self._lifetime)
            ticket = issued.ticket
            self._number = ticket.number
            if not issued.at_head:
                ticket = await store._wait_turn(issued, conversation_id, deadline)
            self._since = store.metrics.acquired(since)
        except BaseException:
            # Never held: a ticket found gone here is the waiter's error to report, not a
            # holder that overran its lifetime.
            await _finally_release(store, conversation_id, ticket_id, self._number, held=False)
            raise
        return HeldTicket(conversation_id, ticket, ticket_id)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._ticket_id is not None
        self._store.metrics.released(self._since)
        await _finally_release(
            self._store, self._conversation_id, self._ticket_id, self._number, held=True,
            lifetime=self._lifetime,
        )


async def _draw(
    store: TicketLockStore, conversation_id: str, ticket_id: str, lifetime: float
) -> Issued:
    """Issue the ticket so that a cancellation arriving meanwhile reaches the caller (see
    ``cancellation``); the issue is settled first, so the release that follows finds it."""
    return await cancel_safe(store._issue(conversation_id, ticket_id, lifetime), settle=True)


async def _finally_release(
    store: TicketLockStore,
    conversation_id: str,
    ticket_id: str,
    number: int | None,
    *,
    held: bool,
    lifetime: float = 0.0,
) -> None:
    """Release even if the holder is being cancelled: the next waiter must not wait for expiry.

    Only a ``held`` ticket found gone is news: its holder ran past its lifetime, and the next
    message may have been let in meanwhile. A waiter's ticket may be gone for reasons its
    caller already sees (deleted, or never drawn because the issue was cancelled).
    """
    try:
        released = await store._release(conversation_id, ticket_id=ticket_id, number=number)
    except asyncio.CancelledError:
        # Cancelled mid-release: the release may or may not have run. It is idempotent, so
        # run it again in the background; the cancellation is the caller's to see.
        task = asyncio.ensure_future(
            store._release(conversation_id, ticket_id=ticket_id, number=number)
        )
        _BACKGROUND.add(task)
        task.add_done_callback(_release_done)
        raise
    if not released and held:
        store.metrics.overtaken()
        logger.warning(
            "conversation %r was held longer than its lock_lifetime (%gs): its ticket was "
            "gone at the release (expired, or deleted), so the next message may have been "
            "handled while this one still ran (raise lock_lifetime above the slowest message)",
            conversation_id, lifetime,
        )


#: Background releases, kept referenced until done (the loop holds tasks only weakly).
_BACKGROUND: set[asyncio.Future[bool]] = set()


def _release_done(task: asyncio.Future[bool]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("releasing a ticket failed", exc_info=task.exception())
