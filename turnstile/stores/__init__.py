"""The store library: async Redis lock and timer stores, and their in-memory defaults.

Bot pods install this with redis-py alone; it never imports the operator, kopf or the
Kubernetes client (an import-linter contract in ``make lint`` keeps it so).

* Locks: :class:`TicketLockStore` is the API; :class:`InMemoryTicketLockStore` and
  :class:`RedisTicketLockStore` (standard, cluster, sentinel) implement it.
* Timers: :class:`BaseTimerStore` is Rasa's timer store contract; :class:`InMemoryTimerStore` and
  :class:`RedisTimerStore` implement it; :class:`TimerManager` fires due timers, once, from any
  number of pods.
* :func:`probe` proves a Redis deployment works in its declared mode (the operator and
  ``turnstile check`` use it).

The layers, top to bottom (import-linter contracts in ``pyproject.toml`` keep them):

* ``locks`` (ticket locks) and ``timers`` (session timers): each an ``api`` module (values and
  the abstract store), a ``memory`` store, a ``redis`` store and its ``lua`` scripts; the two
  never import each other;
* ``_redis``: the shared Redis plumbing (connection and failover, Lua scripts, the multiplexed
  connection and its RESP codec, cancellation-safe awaiting); private, and it knows neither
  locks nor timers;
* ``config`` (settings read from ``endpoints.yml``), ``errors``, and ``probe`` (which uses
  ``_redis``): the modules the operator and the CLI import too.

This module re-exports the public names; import them from here.
"""

from turnstile.stores._redis.connection import RedisConnection
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.errors import (
    ConfigurationError,
    LockError,
    LockTimeoutError,
    StoreUnavailableError,
    TurnstileError,
)
from turnstile.stores.locks.api import (
    DEFAULT_LOCK_LIFETIME,
    HeldTicket,
    LockContext,
    Ticket,
    TicketLock,
    TicketLockStore,
)
from turnstile.stores.locks.memory import InMemoryTicketLockStore
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.probe import ProbeReport, probe
from turnstile.stores.timers.api import BaseTimerStore, Claimed, SessionTimer, TimerSettings
from turnstile.stores.timers.manager import TimerManager
from turnstile.stores.timers.memory import InMemoryTimerStore
from turnstile.stores.timers.redis import RedisTimerStore

__all__ = [
    "DEFAULT_LOCK_LIFETIME",
    "BaseTimerStore",
    "Claimed",
    "ConfigurationError",
    "HeldTicket",
    "InMemoryTicketLockStore",
    "InMemoryTimerStore",
    "LockContext",
    "LockError",
    "LockTimeoutError",
    "ProbeReport",
    "RedisConnection",
    "RedisSettings",
    "RedisTicketLockStore",
    "RedisTimerStore",
    "SessionTimer",
    "SettingsReader",
    "StoreUnavailableError",
    "Ticket",
    "TicketLock",
    "TicketLockStore",
    "TimerManager",
    "TimerSettings",
    "TurnstileError",
    "probe",
]
