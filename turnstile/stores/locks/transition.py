"""Changing lock stores without a window: hold the previous store's lock, then one's own.

A conversation is safe only while every pod locks in the same place. During a rolling update
that changes where pods lock (adopting Turnstile from Rasa's ``concurrent_redis`` or ``redis``
store; another ``key_prefix``, ``db``, deployment mode or Redis), old and new pods run side by
side. A new pod configured with the store it replaces::

    lock_store:
      type: turnstile.rasa.TicketLockStore
      key_prefix: botv2
      transition_from:                 # the previous lock_store section, as it was
        type: concurrent_redis         # or redis, or turnstile.rasa.TicketLockStore
        host: old-redis
        key_prefix: bot
      transition_until: "2026-12-01T18:30:00Z"   # RFC 3339, or a Unix timestamp

holds a conversation, until ``transition_until``, only while it holds **both** locks: first
the previous store's, speaking that store's protocol exactly (Rasa's: ``rasa_protocols``; a
previous Turnstile store: a second :class:`RedisTicketLockStore`), so the old pods see it as a
peer; then its own. Every new pod takes them in that one order, so two never wait for each
other crosswise (no deadlock); it returns them in reverse order, each release cancellation-safe
as in ``locks.api``. Old pods exclude new pods through the previous lock; new pods exclude
each other through both.

After ``transition_until`` a new lock cycle takes only its own lock and sends nothing to the
previous store (a cycle that began before the deadline finishes normally, returning its
previous ticket). So choose ``transition_until`` later than the end of the rollout: once it is
past, no old pod may still be serving (``docs/adoption.md``).

Only ``lock()`` is transitional; Rasa's other methods (``issue_ticket``, ``get_lock``...) act on
the new store alone: Rasa's own server calls nothing but ``lock()``.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from turnstile.stores.config import (
    REDIS_KEYS,
    TRANSITION_KEYS,
    RedisSettings,
    SettingsReader,
    warn_unknown,
)
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks.api import (
    HeldTicket,
    LockContext,
    Released,
    Renewal,
    Ticket,
    TicketLock,
    TicketLockStore,
    check_lifetime,
)
from turnstile.stores.locks.api import Issued as _Issued
from turnstile.stores.locks.rasa_protocols import PROTOCOLS, RasaLockProtocol, release_safely
from turnstile.stores.locks.redis import RedisTicketLockStore

logger = logging.getLogger(__name__)

_SECTION: Final = "lock_store"
#: The ``type`` values a previous store may have: Rasa's two Redis stores, or Turnstile's.
TURNSTILE_TYPES: Final = ("turnstile.rasa.TicketLockStore", "turnstile.rasa.locks.TicketLockStore")
PREVIOUS_TYPES: Final = ("concurrent_redis", "redis", TURNSTILE_TYPES[0])
#: Rasa's default ``db`` per store type, when the previous section gives none: Rasa Pro 3.21's
#: ``RedisLockStoreConfig`` says 0 (Rasa Open Source 3.6 said 1: write ``db`` for it).
_DEFAULT_DB: Final = {"concurrent_redis": 1, "redis": 0}

Release = Callable[[], Awaitable[Any]]


# ---- the previous store -----------------------------------------------------------------------


class PreviousLockStore(abc.ABC):
    """The store a transition keeps exclusion with: it holds a conversation, or waits."""

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """What and where it is, for logs (never a credential)."""

    @abc.abstractmethod
    async def acquire(self, conversation_id: str, lifetime: float, deadline: float) -> Release:
        """Hold the conversation; the returned release is idempotent and cancellation-safe.

        If the wait ends without the lock (error, timeout at ``deadline`` in ``loop.time()``,
        cancellation), whatever was drawn has been returned already.
        """

    async def close(self) -> None:  # noqa: B027 - nothing by default
        """Release connections."""


class RasaPreviousStore(PreviousLockStore):
    """One of Rasa's stores (``concurrent_redis``, ``redis``), spoken by ``rasa_protocols``."""

    def __init__(self, protocol: RasaLockProtocol) -> None:
        self.protocol = protocol

    @property
    def where(self) -> str:
        return self.protocol.where

    async def acquire(self, conversation_id: str, lifetime: float, deadline: float) -> Release:
        ticket = await self.protocol.acquire(conversation_id, lifetime, deadline)
        return lambda: release_safely(self.protocol, ticket)

    async def close(self) -> None:
        await self.protocol.close()


class TurnstilePreviousStore(PreviousLockStore):
    """A Turnstile store with other settings (another key prefix, db, mode or Redis)."""

    def __init__(self, store: TicketLockStore, where: str) -> None:
        self.store = store
        self._where = where

    @property
    def where(self) -> str:
        return self._where

    async def acquire(self, conversation_id: str, lifetime: float, deadline: float) -> Release:
        remaining = deadline - asyncio.get_running_loop().time()
        context = self.store.lock(
            conversation_id, lifetime, None if math.isinf(remaining) else max(remaining, 0.0)
        )
        await context.__aenter__()  # its own cleanup on failure (``LockContext``)
        return lambda: context.__aexit__(None, None, None)

    async def close(self) -> None:
        await self.store.close()


# ---- the store --------------------------------------------------------------------------------


class TransitionTicketLockStore(TicketLockStore):
    """Turnstile's store, holding the previous store's lock too until ``until`` (module doc)."""

    def __init__(
        self,
        current: TicketLockStore,
        previous: PreviousLockStore | None,
        until: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(lock_lifetime=current.lock_lifetime, lock_lease=current.lock_lease)
        self.current = current
        self.previous = previous
        self.until = until
        self._clock = clock
        self._ended_logged = previous is None

    @property
    def in_transition(self) -> bool:
        """Whether a lock cycle starting now takes the previous store's lock too."""
        if self.previous is None:
            return False
        if self._clock() < self.until:
            return True
        if not self._ended_logged:
            self._ended_logged = True
            logger.info(
                "lock store transition from %s ended at %s: locking in the new store only",
                self.previous.where, _iso(self.until),
            )
        return False

    def lock(
        self,
        conversation_id: str,
        lock_lifetime: float | None = None,
        wait_time: float | None = None,
    ) -> LockContext:
        if not self.in_transition:
            return self.current.lock(conversation_id, lock_lifetime, wait_time)
        assert self.previous is not None
        lifetime = self.lock_lifetime if lock_lifetime is None else check_lifetime(lock_lifetime)
        budget = math.inf if wait_time is None else max(wait_time, 0.0)
        return TransitionLockContext(self, self.previous, conversation_id, lifetime, budget)

    # -- Rasa's other methods: the new store alone (module doc) --------------------------------

    async def _issue(
        self, conversation_id: str, ticket_id: str, lifetime: float, *, waiting: bool = True
    ) -> _Issued:
        return await self.current._issue(conversation_id, ticket_id, lifetime, waiting=waiting)

    async def _wait_turn(self, issued: _Issued, conversation_id: str, deadline: float) -> Ticket:
        return await self.current._wait_turn(issued, conversation_id, deadline)

    async def _renew(
        self,
        conversation_id: str,
        ticket_id: str,
        lease: float,
        *,
        number: int | None = None,
        deadline_in: float | None = None,
    ) -> Renewal:
        return await self.current._renew(conversation_id, ticket_id, lease, number=number,
                                         deadline_in=deadline_in)

    async def _release(
        self,
        conversation_id: str,
        *,
        ticket_id: str | None = None,
        number: int | None = None,
        expires: float | None = None,
    ) -> Released:
        return await self.current._release(conversation_id, ticket_id=ticket_id, number=number,
                                           expires=expires)

    async def get_lock(self, conversation_id: str) -> TicketLock | None:
        return await self.current.get_lock(conversation_id)

    async def save_lock(self, lock: TicketLock) -> None:
        await self.current.save_lock(lock)

    async def delete_lock(self, conversation_id: str) -> None:
        await self.current.delete_lock(conversation_id)

    async def close(self) -> None:
        try:
            await self.current.close()
        finally:
            if self.previous is not None:
                await self.previous.close()


class TransitionLockContext(LockContext):
    """Both locks, previous first, for the body of ``async with``; released in reverse."""

    __slots__ = ("_inner", "_previous", "_release_previous", "_transition")

    def __init__(
        self,
        store: TransitionTicketLockStore,
        previous: PreviousLockStore,
        conversation_id: str,
        lifetime: float,
        budget: float,
    ) -> None:
        super().__init__(store, conversation_id, lifetime, budget)
        self._transition = store
        self._previous = previous
        self._inner: LockContext | None = None
        self._release_previous: Release | None = None

    async def __aenter__(self) -> HeldTicket:
        if self._release_previous is not None:
            raise RuntimeError("a lock context cannot be entered twice; call lock() again")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget
        release_previous = await self._previous.acquire(
            self._conversation_id, self._lifetime, deadline
        )
        try:
            remaining = None if math.isinf(deadline) else max(deadline - loop.time(), 0.0)
            self._inner = self._transition.current.lock(
                self._conversation_id, self._lifetime, remaining
            )
            held = await self._inner.__aenter__()
        except BaseException:
            await release_previous()
            raise
        self._release_previous = release_previous
        return held

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._inner is not None and self._release_previous is not None
        try:
            await self._inner.__aexit__(*exc_info)
        finally:
            await self._release_previous()


# ---- from endpoints.yml -----------------------------------------------------------------------


def build_lock_store(
    kwargs: Mapping[str, Any] | None, *, url: str | None = None
) -> TicketLockStore:
    """The Redis lock store of a ``lock_store`` section, in transition if it says so."""
    values = dict(kwargs or {})
    if not TRANSITION_KEYS & values.keys():
        return RedisTicketLockStore.from_kwargs(values, url=url)
    raw_from = values.pop("transition_from", None)
    raw_until = values.pop("transition_until", None)
    current = RedisTicketLockStore.from_kwargs(values, url=url)
    previous = previous_store(raw_from, current, key=f"{_SECTION}.transition_from")
    until = parse_until(raw_until, key=f"{_SECTION}.transition_until")
    if time.time() >= until:
        logger.info(
            "%s.transition_until (%s) is past: locking in the new store only, nothing is sent "
            "to the previous one (%s); the transition keys can be removed",
            _SECTION, _iso(until), previous.where,
        )
        return TransitionTicketLockStore(current, None, until)
    logger.info("lock store in transition until %s: holding %s first, then %s",
                _iso(until), previous.where, current.settings.where)
    return TransitionTicketLockStore(current, previous, until)


def parse_until(value: Any, *, key: str) -> float:
    """``transition_until`` as seconds since the epoch: an RFC 3339 time with a zone, or a Unix
    timestamp (a number, or a string of one)."""
    accepted = (
        'an RFC 3339 time with a time zone ("2026-12-01T18:30:00Z") or a Unix timestamp'
    )
    if value is None or value == "":
        raise ConfigurationError(key, value, accepted + " (required with transition_from)")
    if isinstance(value, dt.datetime):
        # Rasa's YAML loader parses an unquoted timestamp itself; YAML reads one without a
        # zone as UTC (PyYAML drops the "Z").
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigurationError(key, value, accepted)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return _from_datetime(_rfc3339(text, key, value, accepted), key, accepted)
    else:
        number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(key, value, accepted)
    return number


def _rfc3339(text: str, key: str, value: Any, accepted: str) -> dt.datetime:
    if "T" not in text.upper() and " " not in text:  # a date alone is no instant
        raise ConfigurationError(key, value, accepted)
    try:
        return dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise ConfigurationError(key, value, accepted) from None


def _from_datetime(value: dt.datetime, key: str, accepted: str) -> float:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(key, str(value), accepted + " (this one has no time zone)")
    return value.timestamp()


def previous_store(
    value: Any, current: RedisTicketLockStore, *, key: str
) -> PreviousLockStore:
    """The previous store from its ``endpoints.yml`` section (``transition_from``)."""
    if value is None:
        raise ConfigurationError(
            key, value, "the previous lock_store section as a mapping (transition_until needs it)"
        )
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            key, type(value).__name__, "a mapping: the previous lock_store section, as it was"
        )
    section = dict(value)
    store_type = section.get("type")
    if store_type in TURNSTILE_TYPES:
        store_type = TURNSTILE_TYPES[0]
    if store_type not in PREVIOUS_TYPES:
        raise ConfigurationError(f"{key}.type", store_type, "one of " + ", ".join(PREVIOUS_TYPES))
    if store_type == TURNSTILE_TYPES[0]:
        return _turnstile_previous(section, current, key)
    reader = SettingsReader(section, section=key)
    if store_type == "redis" and section.get("db") in (None, ""):
        logger.info("%s: no db given; using Rasa Pro 3.21's default for type redis, 0 (Rasa "
                    "Open Source 3.x used 1: write db: 1 if the old pods ran it)", key)
    settings = RedisSettings.read(reader, default_db=_DEFAULT_DB[store_type])
    # Rasa's lock stores read no lock_lifetime (their lifetime comes from TICKET_LOCK_LIFETIME).
    reader.number("lock_lifetime", 0.0)
    warn_unknown(reader, REDIS_KEYS, what=key)
    return RasaPreviousStore(PROTOCOLS[store_type](settings))


def _turnstile_previous(
    section: dict[str, Any], current: RedisTicketLockStore, key: str
) -> PreviousLockStore:
    previous = RedisTicketLockStore.from_kwargs(section, section=key)
    settings = previous.settings
    if _same_place(settings, current.settings):
        raise ConfigurationError(
            key,
            f"{settings.where} key_prefix={settings.key_prefix!r}",
            "settings that lock elsewhere than the new lock_store (another key_prefix, db, "
            "deployment_mode or Redis); with the same ones no transition is needed",
        )
    where = f"turnstile.rasa.TicketLockStore on {settings.where}"
    if settings.key_prefix:
        where += f" (key_prefix {settings.key_prefix})"
    return TurnstilePreviousStore(previous, where)


def _same_place(a: RedisSettings, b: RedisSettings) -> bool:
    """Whether two settings lock on the same keys of the same Redis."""
    def place(s: RedisSettings) -> tuple[Any, ...]:
        if s.deployment_mode == "standard":
            nodes: Any = (s.host, s.port)
        else:
            nodes = frozenset(s.endpoints)
        db = 0 if s.deployment_mode == "cluster" else s.db
        return (s.deployment_mode, nodes, db, s.key_prefix or "", s.sentinel_service)

    return place(a) == place(b)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat().replace("+00:00", "Z")
