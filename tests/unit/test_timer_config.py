"""Timer store settings come from Rasa's ``endpoints.yml`` keys and fail early when wrong."""

from __future__ import annotations

import logging

import pytest

from turnstile.stores.errors import ConfigurationError
from turnstile.stores.timers.api import TimerSettings
from turnstile.stores.timers.buckets import DEFAULT_BUCKETS
from turnstile.stores.timers.redis import RedisTimerStore


def test_defaults_match_rasas_timer_store():
    settings = TimerSettings.from_kwargs({})
    assert settings.redis.deployment_mode == "standard"
    assert settings.redis.host == "localhost"
    assert settings.redis.db == 2
    assert settings.poll_interval == 1.0
    assert settings.buckets == DEFAULT_BUCKETS == 64
    assert settings.fallback_after == 2.0


def test_values_from_environment_expansion_arrive_as_strings_and_are_read():
    settings = TimerSettings.from_kwargs(
        {
            "host": "redis.svc",
            "port": "6380",
            "db": "3",
            "key_prefix": "bot1",
            "poll_interval": "0.5",
            "buckets": "128",
            "fallback_after": "5",
        }
    )
    assert (settings.redis.host, settings.redis.port, settings.redis.db) == ("redis.svc", 6380, 3)
    assert settings.redis.key_prefix == "bot1"
    assert (settings.poll_interval, settings.buckets, settings.fallback_after) == (0.5, 128, 5.0)


def test_cluster_and_sentinel_modes_read_endpoints():
    cluster = TimerSettings.from_kwargs(
        {"deployment_mode": "cluster", "endpoints": ["10.0.0.1:7000", "10.0.0.2:7000"]}
    )
    assert cluster.redis.endpoints == (("10.0.0.1", 7000), ("10.0.0.2", 7000))
    sentinel = TimerSettings.from_kwargs(
        {"deployment_mode": "sentinel", "endpoints": "s1:26379,s2:26379",
         "sentinel_service": "timers"}
    )
    assert sentinel.redis.sentinel_service == "timers"
    assert len(sentinel.redis.endpoints) == 2


@pytest.mark.parametrize(
    ("kwargs", "key", "accepted"),
    [
        ({"buckets": 0}, "timer_store.buckets", "an integer from 1 to 4096"),
        ({"buckets": "many"}, "timer_store.buckets", "an integer from 1 to 4096"),
        ({"buckets": 5000}, "timer_store.buckets", "an integer from 1 to 4096"),
        ({"poll_interval": 0}, "timer_store.poll_interval", "a number > 0"),
        ({"poll_interval": "soon"}, "timer_store.poll_interval", "a number > 0"),
        ({"fallback_after": -1}, "timer_store.fallback_after", "a number >= 0"),
        ({"deployment_mode": "sentinel"}, "timer_store.endpoints", "sentinel mode needs"),
        ({"deployment_mode": "ring"}, "timer_store.deployment_mode", "one of standard"),
        ({"key_prefix": "bot-1"}, "timer_store.key_prefix", "alphanumeric"),
        ({"port": 70000}, "timer_store.port", "an integer from 1 to 65535"),
    ],
)
def test_a_bad_value_names_the_key_the_value_and_what_is_accepted(kwargs, key, accepted):
    with pytest.raises(ConfigurationError) as info:
        RedisTimerStore.from_kwargs(kwargs)
    assert info.value.key == key
    assert accepted in str(info.value)


def test_a_password_never_appears_in_an_error():
    with pytest.raises(ConfigurationError) as info:
        TimerSettings.from_kwargs({"password": ["hunter2"]})
    assert "hunter2" not in str(info.value)


def test_unknown_keys_are_logged_not_fatal(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        TimerSettings.from_kwargs({"type": "turnstile.rasa.TimerStore", "bukets": 8})
    assert "bukets" in caplog.text
    assert "type" not in caplog.text.split("ignoring unknown key(s):")[-1]


def test_the_store_falls_back_after_at_most_fallback_after_seconds():
    store = RedisTimerStore.from_kwargs({"failover_timeout": 30, "fallback_after": 1.5})
    assert store._conn.settings.failover_timeout == 1.5
    store = RedisTimerStore.from_kwargs({"failover_timeout": 0.5})
    assert store._conn.settings.failover_timeout == 0.5
