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
"""

from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.connection import RedisConnection
from turnstile.stores.errors import (
    ConfigurationError,
    LockError,
    LockNotOwnedError,
    LockTimeoutError,
    StoreUnavailableError,
    TurnstileError,
)
from turnstile.stores.probe import ProbeReport, probe
from turnstile.stores.redis_tickets import RedisTicketLockStore
from turnstile.stores.tickets import (
    DEFAULT_LOCK_LIFETIME,
    HeldTicket,
    InMemoryTicketLockStore,
    LockContext,
    Ticket,
    TicketLock,
    TicketLockStore,
)
from turnstile.stores.timer_manager import TimerManager
from turnstile.stores.timer_redis import RedisTimerStore
from turnstile.stores.timers import (
    BaseTimerStore,
    Claimed,
    InMemoryTimerStore,
    SessionTimer,
    TimerSettings,
)

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
    "LockNotOwnedError",
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
