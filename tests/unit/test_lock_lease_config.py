"""The holder lease (``lock_lease``) as a setting: read from Rasa's keys, checked at construction,
and what each store does with it. Its behaviour on real Redis is in tests/redis/test_lock_lease.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from turnstile.stores.config import RedisSettings
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks.api import DEFAULT_LOCK_LEASE, check_lease
from turnstile.stores.locks.memory import InMemoryTicketLockStore
from turnstile.stores.locks.redis import RedisTicketLockStore

ACCEPTED = "0 (off) or a number of seconds >= 0.5"


def test_the_lease_is_on_with_ten_seconds_by_default() -> None:
    store = RedisTicketLockStore.from_kwargs({})
    assert store.lock_lease == DEFAULT_LOCK_LEASE == 10.0
    assert store.hold_lease(60.0) == 10.0


@pytest.mark.parametrize(("raw", "lease"), [("2.5", 2.5), (3, 3.0), ("0", None), (0, None),
                                            ("", DEFAULT_LOCK_LEASE)])
def test_lock_lease_is_read_from_the_section(raw: Any, lease: float | None) -> None:
    store = RedisTicketLockStore.from_kwargs({"lock_lease": raw})
    assert store.lock_lease == lease


@pytest.mark.parametrize("raw", ["-1", "0.1", "soon", "inf", True, [10]])
def test_a_bad_lock_lease_names_the_key_the_value_and_what_is_accepted(raw: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisTicketLockStore.from_kwargs({"lock_lease": raw})
    assert info.value.key == "lock_store.lock_lease"
    assert str(info.value) == f"lock_store.lock_lease: {ACCEPTED} (got {raw!r})"


@pytest.mark.parametrize("value", [-1.0, 0.2, float("nan"), float("inf"), True, "10"])
def test_the_constructors_check_the_lease_too(value: Any) -> None:
    settings = RedisSettings()
    with pytest.raises(ConfigurationError, match=r"^lock_lease: 0 \(off\)"):
        RedisTicketLockStore(settings, lock_lease=value)
    with pytest.raises(ConfigurationError, match=r"^lock_lease: 0 \(off\)"):
        InMemoryTicketLockStore(lock_lease=value)


def test_a_lease_not_shorter_than_the_lifetime_means_the_whole_lifetime() -> None:
    store = RedisTicketLockStore(RedisSettings(), lock_lifetime=5, lock_lease=5)
    assert store.hold_lease(5.0) is None
    assert store.hold_lease(20.0) == 5.0
    assert RedisTicketLockStore(RedisSettings(), lock_lease=None).hold_lease(60.0) is None
    assert check_lease(0) is None and check_lease(0.5) == 0.5


def test_lock_lease_is_a_known_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        RedisTicketLockStore.from_kwargs({"lock_lease": 4, "lock_lifetime": 30})
    assert "unknown" not in caplog.text.lower()


async def test_the_memory_store_accepts_a_lease_and_holds_for_the_whole_lifetime() -> None:
    store = InMemoryTicketLockStore(lock_lifetime=30, lock_lease=1)
    assert store.lock_lease == 1.0 and store.hold_lease(30.0) is None
    async with store.lock("c") as held:
        assert held.lease is None and not held.lost
        assert not held.lost_event.is_set()
        lock = await store.get_lock("c")
        assert lock is not None
        assert lock.tickets[0].expires - held.ticket.expires == 0
        assert held.ticket.expires > store._clock() + 25  # the lifetime, not the lease
