"""The exceptions of the store library.

Callers of ``turnstile.stores`` never need to catch ``redis.exceptions.*``: Redis errors are
translated at the connection boundary and chained with ``raise ... from exc``, so the cause is
still in the traceback. No message ever carries a password.

The tree::

    TurnstileError
     ├── ConfigurationError          a store's settings are wrong (names the key, the bad value
     │                               and what is accepted); raised at construction
     ├── StoreUnavailableError       Redis did not answer within the retry budget
     │    └── PermissionDeniedError  Redis refused a command or key to the ACL user (NOPERM)
     └── LockError
          └── LockTimeoutError       the lock was not acquired within ``wait_time``
"""

from __future__ import annotations

from typing import Any


class TurnstileError(Exception):
    """The root of every error the store library raises."""


class ConfigurationError(TurnstileError, ValueError):
    """A setting is invalid: ``key: what is accepted (got value)``."""

    def __init__(self, key: str, value: Any, expected: str, *, secret: bool = False) -> None:
        self.key = key
        self.value = "<redacted>" if secret else value
        self.expected = expected
        super().__init__(f"{key}: {expected} (got {self.value!r})")


class StoreUnavailableError(TurnstileError, ConnectionError):
    """Redis could not be reached, or kept failing, for longer than the retry budget."""


class PermissionDeniedError(StoreUnavailableError):
    """Redis answered ``NOPERM``: the ACL user may not run a command the store needs, or not on
    the store's keys. Retrying cannot help; the message names what Redis refused."""


class LockError(TurnstileError):
    """A ticket lock could not be acquired or kept."""


class LockTimeoutError(LockError, TimeoutError):
    """The lock was not acquired within the wait time."""
