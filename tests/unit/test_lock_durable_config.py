"""Durable mode (``lock_durable_replicas``, ``lock_durable_timeout``) as a setting: read from the
``lock_store`` section, off by default, bad values named. Its behaviour on real Redis is in
tests/redis/test_locks_durable.py."""

from __future__ import annotations

from typing import Any

import pytest

from turnstile.stores.config import DEFAULT_DURABLE_TIMEOUT, DurableSettings
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks.redis import RedisTicketLockStore


def test_durable_mode_is_off_by_default_and_with_zero_replicas() -> None:
    assert RedisTicketLockStore.from_kwargs({}).durable is None
    assert RedisTicketLockStore.from_kwargs({"lock_durable_replicas": 0}).durable is None
    assert RedisTicketLockStore.from_kwargs({"lock_durable_timeout": 1}).durable is None


@pytest.mark.parametrize(("replicas", "timeout", "expected"), [
    (1, None, DurableSettings(1, DEFAULT_DURABLE_TIMEOUT)),
    ("2", "0.5", DurableSettings(2, 0.5)),
    (16, 10, DurableSettings(16, 10.0)),
])
def test_durable_mode_is_read_from_the_section(
    replicas: Any, timeout: Any, expected: DurableSettings
) -> None:
    kwargs = {"lock_durable_replicas": replicas}
    if timeout is not None:
        kwargs["lock_durable_timeout"] = timeout
    store = RedisTicketLockStore.from_kwargs(kwargs)
    assert store.durable == expected
    assert store.durable.timeout_ms == int(expected.timeout * 1000)


@pytest.mark.parametrize("raw", ["-1", "17", "two", 1.5, True])
def test_a_bad_replica_count_names_the_key_the_value_and_what_is_accepted(raw: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisTicketLockStore.from_kwargs({"lock_durable_replicas": raw})
    assert info.value.key == "lock_store.lock_durable_replicas"
    assert str(info.value) == (
        f"lock_store.lock_durable_replicas: an integer from 0 to 16 (got {raw!r})"
    )


@pytest.mark.parametrize("raw", ["0", "-1", "11", "soon", "inf", True])
def test_a_bad_timeout_names_the_key_the_value_and_what_is_accepted(raw: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisTicketLockStore.from_kwargs({"lock_durable_replicas": 1,
                                          "lock_durable_timeout": raw})
    assert str(info.value) == (
        "lock_store.lock_durable_timeout: a number of seconds from 0.001 to 10 "
        f"(got {raw!r})"
    )
