"""Building the Redis ticket lock store from Rasa's keys: bad settings fail at construction."""

from __future__ import annotations

import logging

import pytest

from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks.redis import (
    RedisTicketLockStore,
    ask_again_key,
    conversation_tag,
    done_key,
    queue_key,
)


def test_rasas_keys_are_read() -> None:
    store = RedisTicketLockStore.from_kwargs(
        {
            "host": "redis.example",
            "port": "6380",
            "db": 2,
            "username": "bot",
            "password": "pw",
            "use_ssl": "true",
            "ssl_ca_certs": "/ca.pem",
            "key_prefix": "bot1",
            "socket_timeout": "3",
            "lock_lifetime": "12",
        }
    )
    s = store.settings
    assert (s.host, s.port, s.db, s.username, s.password) == ("redis.example", 6380, 2, "bot", "pw")
    assert s.use_ssl and s.ssl_ca_certs == "/ca.pem"
    assert (s.key_prefix, s.socket_timeout, store.lock_lifetime) == ("bot1", 3.0, 12.0)
    assert "pw" not in repr(s)


def test_endpoint_url_is_the_host_fallback_and_db_defaults_to_rasas_1() -> None:
    store = RedisTicketLockStore.from_kwargs({}, url="redis-master")
    assert (store.settings.host, store.settings.db) == ("redis-master", 1)


def test_cluster_and_sentinel_modes() -> None:
    cluster = RedisTicketLockStore.from_kwargs(
        {"deployment_mode": "cluster", "endpoints": ["a:7000", "b:7001"]}
    )
    assert cluster.settings.endpoints == (("a", 7000), ("b", 7001))
    sentinel = RedisTicketLockStore.from_kwargs(
        {"deployment_mode": "sentinel", "endpoints": "s1:26379,s2:26379", "sentinel_service": "m"}
    )
    assert sentinel.settings.sentinel_service == "m"
    assert len(sentinel.settings.endpoints) == 2


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"deployment_mode": "replicated"}, "lock_store.deployment_mode"),
        ({"deployment_mode": "sentinel"}, "lock_store.endpoints"),
        ({"deployment_mode": "cluster", "endpoints": ["no-port"]}, "lock_store.endpoints"),
        ({"deployment_mode": "sentinel", "endpoints": ["h:99999"]}, "lock_store.endpoints"),
        ({"key_prefix": "my-bot"}, "lock_store.key_prefix"),
        ({"port": "http"}, "lock_store.port"),
        ({"lock_lifetime": "0"}, "lock_store.lock_lifetime"),
        ({"lock_lifetime": "forever"}, "lock_store.lock_lifetime"),
    ],
)
def test_bad_settings_raise_one_error_naming_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisTicketLockStore.from_kwargs(kwargs)
    assert info.value.key == key
    assert str(info.value).startswith(key + ":")


def test_a_bad_password_type_is_named_but_never_shown() -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisTicketLockStore.from_kwargs({"password": ["secret"]})
    assert "secret" not in str(info.value)


def test_unknown_keys_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        RedisTicketLockStore.from_kwargs({"hots": "x", "type": "turnstile.rasa.TicketLockStore"})
    assert "hots" in caplog.text
    assert "type" not in caplog.text.split("key(s):")[-1]


@pytest.mark.parametrize("conversation", ["abc", "", "}x", "a{b}c", "{", "%7B", "x y:z"])
def test_every_conversation_gets_one_nonempty_hash_tag(conversation: str) -> None:
    key = queue_key(conversation, "bot1")
    tag = key[key.index("{") + 1 : key.index("}", key.index("{"))]
    assert tag == conversation_tag(conversation) and tag
    assert key.startswith("bot1:turnstile:lock:{")
    for wake in (done_key(key, 17), ask_again_key(key)):
        assert wake.startswith(key)  # same tag, same slot


def test_conversation_tags_do_not_collide() -> None:
    names = ["", "%", "%25", "{", "%7B", "}", "%7D", "a", "a%"]
    assert len({conversation_tag(n) for n in names}) == len(names)
