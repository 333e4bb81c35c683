"""Session timers: the value, the store contract and the settings.

Rasa keeps one inactivity timer per conversation. A timer store persists them so that they
survive restarts and so that, with several replicas, exactly one pod fires each timer. The
contract is Rasa's ``SessionTimerStore`` (see ``docs/timers.md``), restated by
:class:`BaseTimerStore`:

* ``store_timer`` replaces the conversation's timer;
* ``delete_timer(only_if_scheduled_time=t)`` deletes it only if it is still the timer scheduled
  for ``t``: pods *claim* a due timer this way, and only the one whose delete returned ``True``
  fires it;
* ``get_expired_timers`` lists due timers and never deletes them.

:class:`~turnstile.stores.timers.memory.InMemoryTimerStore` is the single-process store (and
the fallback the Redis store keeps while Redis is unreachable);
:class:`~turnstile.stores.timers.redis.RedisTimerStore` is the shared one. :class:`TimerSettings`
reads both from Rasa's ``endpoints.yml`` keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from turnstile.stores.config import REDIS_KEYS, RedisSettings, SettingsReader, warn_unknown
from turnstile.stores.timers.buckets import DEFAULT_BUCKETS, MAX_BUCKETS

logger = logging.getLogger(__name__)

#: A wall clock in Unix seconds; tests pass a fake one.
Clock = Callable[[], float]

#: Rasa's timer store uses Redis database 2 unless told otherwise.
DEFAULT_TIMER_DB: Final = 2
DEFAULT_POLL_INTERVAL: Final = 1.0
#: How long a Redis operation of the timer store may retry before the store falls back to memory.
DEFAULT_FALLBACK_AFTER: Final = 2.0
#: How long a timer claimed by a poll stays hidden from other pods before it is due again.
DEFAULT_LEASE: Final = 30.0
#: The keys a timer store section may carry besides the Redis ones.
TIMER_KEYS: Final = frozenset({"poll_interval", "buckets", "fallback_after", "lease"})


@dataclass(frozen=True)
class SessionTimer:
    """One conversation's timer, shaped like Rasa's ``SessionTimer``."""

    sender_id: str
    session_id: str | None
    scheduled_time: float
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create_timer(
        cls,
        sender_id: str,
        session_id: str | None,
        scheduled_time: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionTimer:
        """Build a timer from ``store_timer``'s arguments (Rasa's name for it)."""
        return cls(sender_id, session_id, float(scheduled_time), dict(metadata or {}))

    def as_dict(self) -> dict[str, Any]:
        return {
            "sender_id": self.sender_id,
            "session_id": self.session_id,
            "scheduled_time": self.scheduled_time,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class TimerRecord:
    """A timer plus ``written_at``: the writer's wall clock when ``store_timer`` was called.

    ``written_at`` decides which of two versions of a conversation's timer is newer when the
    timers a pod kept in memory during an outage are written back to Redis.
    """

    timer: SessionTimer
    written_at: float

    def encode(self) -> str:
        """The JSON kept in Redis; Lua reads ``written_at`` from it."""
        data = self.timer.as_dict()
        data["written_at"] = self.written_at
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> TimerRecord:
        data = json.loads(raw)
        return cls(timer_from_dict(data), float(data.get("written_at", 0.0)))


def timer_from_dict(data: Mapping[str, Any]) -> SessionTimer:
    """A timer from its JSON record (``written_at`` ignored)."""
    return SessionTimer(
        str(data["sender_id"]),
        data.get("session_id"),
        float(data["scheduled_time"]),
        data.get("metadata") or {},
    )


class Claimed(NamedTuple):
    """Timers a poll claimed (the caller must fire them), and whether more were due."""

    timers: list[SessionTimer]
    more: bool


class BaseTimerStore(ABC):
    """Rasa's timer store contract (``rasa.core.timer_stores.timer_store.SessionTimerStore``)."""

    @abstractmethod
    async def store_timer(
        self,
        sender_id: str,
        session_id: str | None,
        scheduled_time: float,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Store (replace) the timer of ``sender_id``."""

    @abstractmethod
    async def delete_timer(
        self, sender_id: str, only_if_scheduled_time: float | None = None
    ) -> bool:
        """Delete the timer, only if its ``scheduled_time`` equals the given one when set.

        Returns whether a timer was found and deleted. Of several callers passing the same
        ``only_if_scheduled_time``, at most one gets ``True``: that is the claim.
        """

    @abstractmethod
    async def get_timer(self, sender_id: str) -> SessionTimer | None:
        """The timer of ``sender_id``, or ``None``."""

    @abstractmethod
    async def get_expired_timers(self, cutoff_time: float | None = None) -> list[SessionTimer]:
        """Timers with ``scheduled_time <= cutoff_time`` (default: now); never deletes them."""

    @property
    def lease(self) -> float | None:
        """Seconds a timer claimed by :meth:`claim_due` stays leased, or ``None`` when a claim
        deletes at once (a single-process store: nobody else could take it over)."""
        return None

    async def claim_due(self, cutoff_time: float, limit: int) -> Claimed:
        """Claim up to about ``limit`` due timers, oldest first: what one poll should fire.

        The caller fires them and then calls :meth:`ack`. The default lists due timers and
        claims (deletes) the oldest ``limit``; the Redis store *leases* them straight from
        each bucket in one script (no second round trip, no contention between pods: each due
        timer goes to exactly one caller, and comes back if that caller never acknowledges).
        """
        due = sorted(await self.get_expired_timers(cutoff_time), key=lambda t: t.scheduled_time)
        return Claimed(await self.claim_timers(due[:limit]), more=len(due) > limit)

    async def ack(self, timers: Sequence[SessionTimer]) -> int:
        """Acknowledge timers from :meth:`claim_due` whose callbacks ran: delete their leases.

        Returns how many were deleted; the default has no leases (its claims deleted).
        """
        return 0

    async def extend(self, timers: Sequence[SessionTimer]) -> int:
        """Renew the leases of claimed timers whose callbacks still run; see :attr:`lease`."""
        return 0

    async def claim_timers(self, timers: Sequence[SessionTimer]) -> list[SessionTimer]:
        """Claim due timers: the ones returned were deleted by this call and must be fired.

        The default claims one by one; stores that can batch (Redis) override it.
        """
        claimed = await asyncio.gather(
            *(self.delete_timer(t.sender_id, only_if_scheduled_time=t.scheduled_time)
              for t in timers)
        )
        return [t for t, won in zip(timers, claimed, strict=True) if won]

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and background tasks."""

    def close(self) -> None:
        """Rasa's synchronous ``close``: schedules :meth:`aclose` on the running loop.

        Without a running loop there is nothing to await on; connections are dropped.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._close_without_loop()
            return
        task = loop.create_task(self.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    def _close_without_loop(self) -> None:
        """Hook for stores holding loop-bound resources."""
        logger.debug("%s closed without a running loop", type(self).__name__)


#: Strong references to ``aclose`` tasks started by ``close()`` until they finish.
_CLOSING: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class TimerSettings:
    """A Redis timer store's settings: the lock store's Redis keys plus the timer keys."""

    redis: RedisSettings = field(default_factory=lambda: RedisSettings(db=DEFAULT_TIMER_DB))
    #: Seconds between two polls of a :class:`~turnstile.stores.timers.manager.TimerManager`.
    poll_interval: float = DEFAULT_POLL_INTERVAL
    #: How many buckets timers are spread over; every pod must use the same number.
    buckets: int = DEFAULT_BUCKETS
    #: Seconds a failing Redis operation retries before the store switches to memory.
    fallback_after: float = DEFAULT_FALLBACK_AFTER
    #: Seconds a polled timer stays leased to its poller; unacknowledged, it is due again.
    lease: float = DEFAULT_LEASE

    @classmethod
    def from_kwargs(
        cls,
        kwargs: Mapping[str, Any] | None,
        *,
        url: str | None = None,
        section: str = "timer_store",
    ) -> TimerSettings:
        """Read Rasa's ``endpoint_config.kwargs`` (and ``endpoint_config.url``)."""
        reader = SettingsReader(kwargs, section=section)
        redis = RedisSettings.read(reader, default_db=DEFAULT_TIMER_DB, url=url)
        settings = cls(
            redis=redis,
            poll_interval=reader.number("poll_interval", DEFAULT_POLL_INTERVAL, minimum=0,
                                        exclusive_min=True),
            buckets=reader.integer("buckets", DEFAULT_BUCKETS, minimum=1, maximum=MAX_BUCKETS),
            fallback_after=reader.number("fallback_after", DEFAULT_FALLBACK_AFTER, minimum=0),
            lease=reader.number("lease", DEFAULT_LEASE, minimum=0, exclusive_min=True),
        )
        warn_unknown(reader, REDIS_KEYS | TIMER_KEYS, what=section)
        return settings

