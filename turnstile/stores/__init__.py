"""The store library: async Redis lock and timer stores, and their in-memory defaults.

Bot pods install this with redis-py alone; it never imports the operator, kopf or the
Kubernetes client (an import-linter contract in ``make lint`` keeps it so).
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

__all__ = [
    "ConfigurationError",
    "LockError",
    "LockNotOwnedError",
    "LockTimeoutError",
    "RedisConnection",
    "RedisSettings",
    "SettingsReader",
    "StoreUnavailableError",
    "TurnstileError",
]
