"""``transition_from`` / ``transition_until`` in a ``lock_store`` section: what is accepted, and
every bad value refused at construction naming the key (``locks.transition``)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pytest

from tests.unit.test_lua_keys import calls, tokenize, undeclared_keys
from turnstile.rasa import TicketLockStore as DropIn
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks import rasa_protocols
from turnstile.stores.locks.rasa_protocols import ConcurrentRedisProtocol, RedisDocumentProtocol
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.locks.transition import (
    RasaPreviousStore,
    TransitionTicketLockStore,
    TurnstilePreviousStore,
    build_lock_store,
    parse_until,
)

pytestmark = pytest.mark.unit

FUTURE = "2099-01-01T00:00:00Z"
NEW = {"host": "new-redis", "key_prefix": "botv2"}


def build(transition_from: Any = None, until: Any = FUTURE, **new: Any) -> Any:
    kwargs: dict[str, Any] = {**NEW, **new}
    if transition_from is not None:
        kwargs["transition_from"] = transition_from
    if until is not None:
        kwargs["transition_until"] = until
    return build_lock_store(kwargs)


def refused(**kwargs: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        build(**kwargs)
    return info.value


def test_without_transition_keys_it_is_the_plain_redis_store() -> None:
    assert type(build_lock_store(NEW)) is RedisTicketLockStore


@pytest.mark.parametrize(
    ("store_type", "protocol", "prefix", "db"),
    [
        ("concurrent_redis", ConcurrentRedisProtocol, "bot:concurrent_lock:", 1),
        ("redis", RedisDocumentProtocol, "bot:lock:", 0),
    ],
)
def test_rasas_stores_are_spoken_with_their_keys_and_default_db(
    store_type: str, protocol: type, prefix: str, db: int
) -> None:
    store = build({"type": store_type, "host": "old-redis", "key_prefix": "bot"})
    assert isinstance(store, TransitionTicketLockStore) and store.in_transition
    assert isinstance(store.previous, RasaPreviousStore)
    assert type(store.previous.protocol) is protocol
    assert store.previous.protocol.prefix == prefix
    assert store.previous.protocol.settings.db == db
    assert store.previous.protocol.settings.host == "old-redis"


def test_rasas_stores_without_a_prefix_use_rasas_default_keys() -> None:
    store = build({"type": "concurrent_redis", "host": "old"})
    assert store.previous.protocol.prefix == "concurrent_lock:"


def test_a_turnstile_store_with_another_prefix_is_a_second_turnstile_store() -> None:
    store = build({"type": "turnstile.rasa.TicketLockStore", "host": "new-redis",
                   "key_prefix": "bot", "lock_lifetime": 30})
    assert isinstance(store.previous, TurnstilePreviousStore)
    previous = store.previous.store
    assert isinstance(previous, RedisTicketLockStore)
    assert previous.settings.key_prefix == "bot" and previous.lock_lifetime == 30
    assert store.current.settings.key_prefix == "botv2"


def test_the_drop_in_class_reads_the_transition_from_endpoints_yml() -> None:
    class Config:
        url = None
        kwargs = {**NEW, "transition_from": {"type": "redis", "host": "old", "db": 1},
                  "transition_until": FUTURE}

    store = DropIn(endpoint_config=Config())
    assert isinstance(store.store, TransitionTicketLockStore)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-01T18:30:00Z", 1796149800.0),
        ("2026-12-01T19:30:00+01:00", 1796149800.0),
        ("2026-12-01t18:30:00.5z", 1796149800.5),
        (1796149800, 1796149800.0),
        (1796149800.25, 1796149800.25),
        ("1796149800", 1796149800.0),
        (dt.datetime(2026, 12, 1, 18, 30), 1796149800.0),  # YAML's own parse: UTC
        (dt.datetime(2026, 12, 1, 18, 30, tzinfo=dt.timezone.utc), 1796149800.0),
    ],
)
def test_transition_until_as_rfc3339_or_unix_timestamp(value: Any, expected: float) -> None:
    assert parse_until(value, key="k") == expected


@pytest.mark.parametrize(
    "value",
    ["tomorrow", "2026-12-01", "2026-12-01T18:30:00", "", None, True, -5, 0, "nan",
     float("inf"), [1], {"at": 1}],
)
def test_a_bad_transition_until_is_refused_naming_the_key(value: Any) -> None:
    error = refused(transition_from={"type": "redis", "host": "old"}, until=value)
    assert error.key == "lock_store.transition_until"
    assert "RFC 3339" in str(error) and "Unix timestamp" in str(error)


def test_transition_until_without_transition_from_is_refused() -> None:
    error = refused(transition_from=None, until=FUTURE)
    assert error.key == "lock_store.transition_from"


@pytest.mark.parametrize("value", ["concurrent_redis", ["redis"], 5])
def test_transition_from_must_be_a_mapping(value: Any) -> None:
    error = refused(transition_from=value)
    assert error.key == "lock_store.transition_from"
    assert "mapping" in error.expected


@pytest.mark.parametrize("store_type", [None, "in_memory", "mongo", "my.module.Store"])
def test_an_unknown_previous_type_is_refused_with_the_accepted_ones(store_type: Any) -> None:
    error = refused(transition_from={"type": store_type, "host": "old"})
    assert error.key == "lock_store.transition_from.type"
    assert error.value == store_type
    assert "concurrent_redis" in error.expected and "turnstile.rasa.TicketLockStore" in (
        error.expected
    )


def test_a_bad_previous_setting_names_its_nested_key_and_never_the_password() -> None:
    error = refused(transition_from={"type": "redis", "host": "old", "port": "http"})
    assert error.key == "lock_store.transition_from.port"
    error = refused(transition_from={"type": "redis", "host": "old", "password": ["s3cret"]})
    assert error.key == "lock_store.transition_from.password"
    assert "s3cret" not in str(error)


def test_a_previous_turnstile_store_that_locks_in_the_same_place_is_refused() -> None:
    same = {"type": "turnstile.rasa.TicketLockStore", **NEW, "password": "s3cret"}
    error = refused(transition_from=same, password="s3cret")
    assert error.key == "lock_store.transition_from"
    assert "key_prefix" in error.expected
    assert "s3cret" not in str(error)


@pytest.mark.parametrize(
    "change", [{"key_prefix": "bot"}, {"db": 3}, {"host": "old-redis"}, {"port": 6380}]
)
def test_any_lock_affecting_difference_makes_a_valid_turnstile_transition(
    change: dict[str, Any]
) -> None:
    previous = {"type": "turnstile.rasa.TicketLockStore", **NEW, **change}
    assert isinstance(build(previous).previous, TurnstilePreviousStore)


def test_a_past_transition_until_is_accepted_logs_once_and_keeps_no_previous_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="turnstile.stores.locks.transition"):
        store = build({"type": "concurrent_redis", "host": "old"}, until=time.time() - 5)
    assert isinstance(store, TransitionTicketLockStore)
    assert store.previous is None and not store.in_transition
    lines = [r for r in caplog.records if "is past" in r.getMessage()]
    assert len(lines) == 1


def test_the_transition_ends_by_the_clock() -> None:
    store = build({"type": "concurrent_redis", "host": "old"}, until=time.time() + 3600)
    now = [time.time()]
    store._clock = lambda: now[0]
    assert store.in_transition
    now[0] += 7200
    assert not store.in_transition


def test_unknown_keys_in_the_previous_section_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        build({"type": "redis", "host": "old", "hots": "typo"})
    assert any("hots" in r.getMessage() for r in caplog.records)


RASA_SCRIPTS = {n: v for n, v in vars(rasa_protocols).items() if isinstance(v, LuaScript)}


@pytest.mark.parametrize("name", sorted(RASA_SCRIPTS))
def test_every_key_a_rasa_protocol_script_touches_is_declared(name: str) -> None:
    script = RASA_SCRIPTS[name]
    assert calls(tokenize(script.source))
    assert undeclared_keys(script.source) == []
