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

**Holder leases.** With ``lock_lease`` set (default ``DEFAULT_LOCK_LEASE``, 10 s; 0 turns it
off), a ticket held through :meth:`TicketLockStore.lock` lives on a lease too: at its turn it
expires one lease later, under a hard deadline of turn + ``lock_lifetime`` kept by the store,
and while the ``async with`` body runs a background renewal (:class:`_HolderLease`) extends it
every third of a lease, never past the deadline. So a holder whose process dies is overtaken
within about one lease, while a live holder keeps the lock for up to ``lock_lifetime``, Rasa's
meaning unchanged. A body shorter than a third of a lease costs no round trip: its holder only
waits in a list that one timer per store and loop walks (:class:`_LeaseKeeper`), and leaves it
on exit. A renewal that finds the ticket gone or no longer at
the head (the body ran past ``lock_lifetime``, the event loop was stalled for longer than the
lease, someone released the ticket by hand) marks the ticket lost: ``HeldTicket.lost`` and
``HeldTicket.lost_event``, plus one warning naming the conversation and the fencing token. A
Redis error during a renewal is retried until the lease would run out. Stores that cannot lose
a holder without losing its process (the in-memory store) accept the option and keep the whole
lifetime.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import itertools
import json
import logging
import math
import os
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Final

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
#: Seconds a held ticket lives without its holder renewing it (``lock_lease``; 0 = off).
DEFAULT_LOCK_LEASE: Final = 10.0
#: The shortest lease accepted: its renewals run three times as often.
MIN_LOCK_LEASE: Final = 0.5
#: After a Redis error, a holder's renewal tries again after this, doubling up to a cap.
_RENEW_RETRY_FIRST: Final = 0.05
_RENEW_RETRY_CAP: Final = 1.0
#: A holder whose lease reached its deadline asks once more this long after it expires.
_EXPIRY_MARGIN: Final = 0.05


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


#: What ``lock_lease`` accepts, as its errors say it.
LEASE_ACCEPTED: Final = f"0 (off) or a number of seconds >= {MIN_LOCK_LEASE:g}"


def check_lease(value: float | None, *, key: str = "lock_lease") -> float | None:
    """A holder lease: 0 or None (off), else a finite number of seconds >= ``MIN_LOCK_LEASE``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(key, value, LEASE_ACCEPTED)
    if not math.isfinite(value) or value < 0 or 0 < value < MIN_LOCK_LEASE:
        raise ConfigurationError(key, value, LEASE_ACCEPTED)
    return float(value) or None


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
    #: The background renewal of a ticket held on a lease (None: held for the whole lifetime).
    lease: _HolderLease | None = field(default=None, compare=False, repr=False)

    @property
    def fencing_token(self) -> int:
        """Grows with every ticket of the conversation; pass it to storage that can reject
        writes from a holder whose ticket expired and was overtaken."""
        return self.ticket.number

    @property
    def lost(self) -> bool:
        """True once a renewal of the lease found the ticket gone or overtaken (the next
        message may be running). A ticket held without a lease never learns it before release."""
        return self.lease is not None and self.lease.lost

    @property
    def lost_event(self) -> asyncio.Event:
        """Set when :attr:`lost` becomes true, for a body that wants to stop at once
        (never set for a ticket held without a lease)."""
        return asyncio.Event() if self.lease is None else self.lease.event

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


@dataclass(frozen=True)
class Renewal:
    """The reply to renewing a held ticket's lease."""

    #: 0: still the head; -1: gone (expired, released, deleted); > 0: no longer the head.
    position: int
    #: Seconds until the ticket expires (after the renewal).
    ttl: float
    #: Seconds until its hard deadline (its expiry when it has none): renewals stop there.
    deadline_ttl: float
    #: The ticket was gone (a failover lost it, or its lease ran out while Redis was
    #: unreachable) and was put back under its deadline, nobody having been let in meanwhile.
    restored: bool = False


class Released(enum.IntEnum):
    """What a release found. Truthy when the ticket is known to have been returned."""

    #: Not there, and it may have expired: the holder may have been overtaken.
    GONE = 0
    #: It was live and is now returned.
    RELEASED = 1
    #: Not there although it could not have expired yet (the store's clock is before its
    #: expiry): removed on purpose (``delete_lock``, ``turnstile locks release``) or lost in a
    #: failover; the next message may have run meanwhile, but not because of the lifetime.
    REMOVED = 2
    #: As REMOVED, but an earlier attempt of this release was sent and its reply lost (a routing
    #: refresh or a failover closed the connection): that attempt returned it.
    REPLY_LOST = 3

    def __bool__(self) -> bool:
        return self in (Released.RELEASED, Released.REPLY_LOST)


def release_outcome(found: int, *, reply_lost: bool) -> Released:
    """A release script's answer (1 live, 2 gone before its expiry, 0 gone) as a
    :class:`Released`, knowing whether an earlier attempt may have run with its reply lost."""
    if found == 1:
        return Released.RELEASED
    if found == 2:
        return Released.REPLY_LOST if reply_lost else Released.REMOVED
    return Released.GONE


# ---- the API --------------------------------------------------------------------------------


class TicketLockStore(abc.ABC):
    """An async ticket lock store (see the module doc). Subclasses provide the primitives."""

    #: Whether a holder of this store can die while the store lives on (another process).
    #: The in-memory store's holders die with it, so it keeps the whole lifetime instead.
    renews_holders: ClassVar[bool] = True

    def __init__(
        self, *, lock_lifetime: float | None = None, lock_lease: float | None = DEFAULT_LOCK_LEASE
    ) -> None:
        self.lock_lifetime = check_lifetime(
            default_lock_lifetime() if lock_lifetime is None else lock_lifetime
        )
        self.lock_lease = check_lease(lock_lease)
        metrics.decide()
        self._keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LeaseKeeper] = (
            weakref.WeakKeyDictionary()
        )
        #: The last loop's keeper, looked up without a weak dictionary (the hot path).
        self._last_keeper: tuple[weakref.ref[asyncio.AbstractEventLoop], _LeaseKeeper] | None = (
            None
        )

    def hold_lease(self, lifetime: float) -> float | None:
        """The lease a ticket held through ``lock()`` with this lifetime lives on, or None
        when it gets the whole lifetime (leases off, or not shorter than the lifetime)."""
        lease = self.lock_lease
        if lease is None or lease >= lifetime or not self.renews_holders:
            return None
        return lease

    def _lease_keeper(self, loop: asyncio.AbstractEventLoop, lease: float) -> _LeaseKeeper:
        """The keeper of this store's holders on ``loop`` (one lease per store)."""
        cached = self._last_keeper
        if cached is not None and cached[0]() is loop:
            return cached[1]
        keeper = self._keepers.get(loop)
        if keeper is None:
            keeper = self._keepers[loop] = _LeaseKeeper(lease / _RENEWALS_PER_LEASE)
        self._last_keeper = (weakref.ref(loop), keeper)
        return keeper

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
        return it (its number may be new: see ``locks.redis``, a ticket lost in a failover
        re-enters the line); raise LockError if it was removed meanwhile (deleted; in the
        in-memory store also its lease running out because this waiter stalled),
        LockTimeoutError at ``deadline`` (``loop.time()``)."""

    @abc.abstractmethod
    async def _renew(
        self,
        conversation_id: str,
        ticket_id: str,
        lease: float,
        *,
        number: int | None = None,
        deadline_in: float | None = None,
    ) -> Renewal:
        """Extend a held ticket's expiry to ``now + lease``, never past its deadline. Given its
        ``number`` and the seconds left to its deadline, a store that can lose a ticket in a
        failover puts it back where that is provably safe (``Renewal.restored``)."""

    @abc.abstractmethod
    async def _release(
        self,
        conversation_id: str,
        *,
        ticket_id: str | None = None,
        number: int | None = None,
        expires: float | None = None,
    ) -> Released:
        """Remove a ticket (by id if given, else by number) and wake the next head. A caller
        that knows both passes both, and ``expires`` (seconds since the epoch, the store's
        clock; a lower bound) lets the store tell a ticket removed early from one that
        expired."""

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

    __slots__ = (
        "_budget", "_conversation_id", "_expires", "_lease", "_lifetime", "_number", "_since",
        "_store", "_ticket_id",
    )

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
        self._lease: _HolderLease | None = None
        self._since = 0.0
        #: The held ticket's expiry as the store said it (a lower bound: leases extend it).
        self._expires: float | None = None

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
                self._number = ticket.number  # new if it re-entered at the back after a failover
            self._since = store.metrics.acquired(since)
            self._expires = ticket.expires
        except BaseException:
            # Never held: a ticket found gone here is the waiter's error to report, not a
            # holder that overran its lifetime.
            await _finally_release(store, conversation_id, ticket_id, self._number, held=False)
            raise
        lease = store.hold_lease(self._lifetime)
        if lease is None:
            return HeldTicket(conversation_id, ticket, ticket_id)
        self._lease = _HolderLease(store, conversation_id, ticket_id, ticket.number, lease,
                                   self._lifetime)
        return HeldTicket(conversation_id, ticket, ticket_id, self._lease)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._ticket_id is not None
        self._store.metrics.released(self._since)
        lease = self._lease
        if lease is not None:
            lease.stop()  # before the release, so no renewal can report the released ticket
        await _finally_release(
            self._store, self._conversation_id, self._ticket_id, self._number,
            held=lease is None or not lease.lost, lifetime=self._lifetime, expires=self._expires,
        )


class _LeaseKeeper:
    """Starts the renewals of one store's holders on one loop, with one timer for all of them.

    A holder is added at its turn and removed at its exit; the timer fires a third of a lease
    after the turn of the oldest holder still in, starts the renewal of every holder that is
    due, and is set again for the next one. Holders share the store's lease and come in turn
    order, so the oldest is the first in the dict. A cycle therefore costs a dict insert and
    delete, not a timer of its own; a timer is made at most once per third of a lease while
    holders keep coming, and one left pending after the last holder left just finds nobody.
    """

    __slots__ = ("_interval", "_timer", "_waiting")

    def __init__(self, interval: float) -> None:
        # No reference to the loop (a store may cache its keeper): the timer runs on it.
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: dict[_HolderLease, None] = {}

    def add(self, lease: _HolderLease, loop: asyncio.AbstractEventLoop) -> None:
        self._waiting[lease] = None
        if self._timer is None:
            self._timer = loop.call_at(lease.turn + self._interval, self._fire, loop)

    def discard(self, lease: _HolderLease) -> None:
        self._waiting.pop(lease, None)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._waiting:
            lease = next(iter(self._waiting))
            due = lease.turn + self._interval
            if due > now:
                self._timer = loop.call_at(due, self._fire, loop)
                return
            del self._waiting[lease]
            lease.start()


class _HolderLease:
    """Renews a held ticket's lease in the background while the ``async with`` body runs.

    Nothing runs for a body shorter than a third of a lease: the holder waits in its store's
    :class:`_LeaseKeeper` and leaves it on exit. The renewals then run in one task, every third
    of a lease, until the store's reply says the deadline is reached; after that, one last
    renewal just past the ticket's expiry finds it gone (the holder ran past
    ``lock_lifetime``). The task checks ``_stopped`` after every await, so even a cancellation
    swallowed somewhere (``wait_for`` on Python 3.10) cannot report a ticket its holder has
    already released.
    """

    __slots__ = (
        "_deadline_reached", "_event", "_keeper", "_lease", "_lifetime", "_loop", "_stopped",
        "_task", "conversation_id", "expires_at", "lost", "number", "store", "ticket_id", "turn",
    )

    def __init__(  # noqa: PLR0917 - one private call site, in LockContext
        self,
        store: TicketLockStore,
        conversation_id: str,
        ticket_id: str,
        number: int,
        lease: float,
        lifetime: float,
    ) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.ticket_id = ticket_id
        self.number = number
        self._lease = lease
        self._lifetime = lifetime
        self._loop = loop = asyncio.get_running_loop()
        self.turn = loop.time()
        #: ``loop.time()`` by which the ticket expires unless renewed (a lower bound: the
        #: store set it when it answered, before this line ran).
        self.expires_at = self.turn + lease
        self.lost = False
        self._event: asyncio.Event | None = None
        self._stopped = False
        self._deadline_reached = False
        self._task: asyncio.Task[None] | None = None
        self._keeper = store._lease_keeper(loop, lease)
        self._keeper.add(self, loop)

    @property
    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            if self.lost:
                self._event.set()
        return self._event

    def start(self) -> None:
        """Start renewing (the keeper found the holder still in a third of a lease on)."""
        if not self._stopped:
            self._task = self._loop.create_task(self._keep())
            _BACKGROUND.add(self._task)
            self._task.add_done_callback(_renewal_done)

    def stop(self) -> None:
        """Stop renewing (the holder is leaving); leaves no running task."""
        self._stopped = True
        if self._task is None:
            self._keeper.discard(self)
        else:
            self._task.cancel()

    async def _keep(self) -> None:
        loop = self._loop
        next_at = loop.time()
        retry = _RENEW_RETRY_FIRST
        while not self._stopped and not self.lost:
            await asyncio.sleep(max(next_at - loop.time(), 0.0))
            if self._stopped:
                return
            sent = loop.time()
            # The seconds left to the deadline, should the ticket have to be put back (it was
            # lost in a failover): ``turn`` is taken after the store's, so leave a margin.
            deadline_in = self.turn + self._lifetime - sent - _EXPIRY_MARGIN
            try:
                renewal = await asyncio.wait_for(
                    self.store._renew(self.conversation_id, self.ticket_id, self._lease,
                                      number=self.number, deadline_in=deadline_in),
                    timeout=max(self.expires_at - sent, _RENEW_RETRY_FIRST),
                )
            except Exception as exc:  # Redis errors, and the timeout of this attempt
                if self._stopped:
                    return
                if loop.time() >= self.expires_at:
                    self._lose(f"its lease ({self._lease:g}s) could not be renewed in time "
                               f"({type(exc).__name__}: {exc})")
                    return
                logger.debug("renewing the lease of conversation %r failed (%s); retrying",
                             self.conversation_id, type(exc).__name__)
                next_at = min(loop.time() + retry, self.expires_at)
                retry = min(retry * 2, _RENEW_RETRY_CAP)
                continue
            if self._stopped:
                return
            retry = _RENEW_RETRY_FIRST
            if renewal.position != 0:
                self._lose(self._why_gone(renewal))
                return
            if renewal.restored:
                self.store.metrics.restored()
                logger.info("conversation %r: the held ticket %d was gone at a lease renewal (a "
                            "Redis failover, or its lease ran out while Redis was unreachable) "
                            "and nobody had been let in; it was put back",
                            self.conversation_id, self.number)
            self.expires_at = sent + renewal.ttl
            if renewal.ttl >= renewal.deadline_ttl:
                # At the deadline: no renewal can help; ask once more after the expiry.
                self._deadline_reached = True
                next_at = loop.time() + renewal.ttl + _EXPIRY_MARGIN
            else:
                next_at = sent + self._lease / _RENEWALS_PER_LEASE

    def _why_gone(self, renewal: Renewal) -> str:
        if renewal.position > 0:
            return "its ticket is no longer at the head of the queue (saved over by save_lock?)"
        if self._deadline_reached or self._loop.time() >= self.turn + self._lifetime:
            # Past turn + lock_lifetime (``turn`` is taken after Redis's), the hard deadline has
            # expired the ticket whatever a late renewal would have found.
            return f"it ran past its lock_lifetime ({self._lifetime:g}s) and its ticket expired"
        return ("its ticket was gone at a lease renewal (released by hand, deleted, or expired "
                f"after the event loop or Redis stalled for longer than the {self._lease:g}s "
                "lease)")

    def _lose(self, reason: str) -> None:
        if self.lost:
            return
        self.lost = True
        self.store.metrics.overtaken()  # its release then finds nothing and says nothing
        if self._event is not None:
            self._event.set()
        logger.warning(
            "conversation %r lost its lock (ticket %d, the fencing token): %s; the next message "
            "may be handled while this one still runs",
            self.conversation_id, self.number, reason,
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
    expires: float | None = None,
) -> None:
    """Release even if the holder is being cancelled: the next waiter must not wait for expiry.

    Only a ``held`` ticket found gone is news, and the store says which news
    (:class:`Released`): it expired (the holder ran past its lifetime), or it was removed before
    it could expire (deleted, released by hand, lost in a failover); either way the next message
    may have been let in meanwhile. A release whose earlier attempt ran with its reply lost is
    no news at all. A waiter's ticket may be gone for reasons its caller already sees (deleted,
    or never drawn because the issue was cancelled).
    """
    try:
        released = await store._release(
            conversation_id, ticket_id=ticket_id, number=number, expires=expires
        )
    except asyncio.CancelledError:
        # Cancelled mid-release: the release may or may not have run. It is idempotent, so
        # run it again in the background; the cancellation is the caller's to see.
        task = asyncio.ensure_future(
            store._release(conversation_id, ticket_id=ticket_id, number=number)
        )
        _BACKGROUND.add(task)
        task.add_done_callback(_release_done)
        raise
    if released is Released.REPLY_LOST:
        store.metrics.reply_lost()
        logger.info("conversation %r: the reply to releasing ticket %s was lost (the connection "
                    "closed after Redis ran it); its retry found the ticket already returned",
                    conversation_id, number)
    elif not released and held:
        store.metrics.overtaken()
        if released is Released.REMOVED:
            logger.warning(
                "conversation %r: its ticket was gone at the release before it could expire "
                "(deleted, released by hand, or lost in a Redis failover), so the next message "
                "may have been handled while this one still ran", conversation_id,
            )
            return
        logger.warning(
            "conversation %r was held longer than its lock_lifetime (%gs): its ticket was "
            "gone at the release (expired), so the next message may have been handled while "
            "this one still ran (raise lock_lifetime above the slowest message)",
            conversation_id, lifetime,
        )


#: Background releases, kept referenced until done (the loop holds tasks only weakly).
_BACKGROUND: set[asyncio.Future[Any]] = set()


def _release_done(task: asyncio.Future[Released]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("releasing a ticket failed", exc_info=task.exception())


def _renewal_done(task: asyncio.Future[None]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("renewing a lock lease failed", exc_info=task.exception())
