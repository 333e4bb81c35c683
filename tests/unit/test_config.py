"""Store settings: Rasa's keys in, checked values out, one clear error per bad key."""

from __future__ import annotations

import pytest

from turnstile.stores.config import RedisSettings, SettingsReader, parse_address
from turnstile.stores.errors import ConfigurationError


def read(values: dict[str, object], **kwargs: object) -> RedisSettings:
    return RedisSettings.read(SettingsReader(values, section="lock_store"), **kwargs)  # type: ignore[arg-type]


def test_defaults_match_rasa_documentation() -> None:
    settings = read({})
    assert (settings.deployment_mode, settings.host, settings.port, settings.db) == (
        "standard",
        "localhost",
        6379,
        1,
    )
    assert settings.socket_timeout == 10.0
    assert settings.key_prefix is None
    assert settings.use_ssl is False


def test_strings_from_env_expansion_are_coerced() -> None:
    settings = read({"port": "6380", "db": "3", "use_ssl": "true", "socket_timeout": "2.5"})
    assert (settings.port, settings.db, settings.use_ssl, settings.socket_timeout) == (
        6380,
        3,
        True,
        2.5,
    )


def test_sentinel_endpoints_accept_a_list_or_a_comma_separated_string() -> None:
    as_list = read({"deployment_mode": "sentinel", "endpoints": ["10.0.0.1:26379", "s2:26380"]})
    as_text = read({"deployment_mode": "sentinel", "endpoints": "10.0.0.1:26379, s2:26380"})
    assert as_list.endpoints == as_text.endpoints == (("10.0.0.1", 26379), ("s2", 26380))
    assert as_list.sentinel_service == "mymaster"


def test_cluster_without_endpoints_seeds_from_host_and_port() -> None:
    settings = read({"deployment_mode": "cluster", "host": "redis-0", "port": 7000})
    assert settings.endpoints == (("redis-0", 7000),)


def test_rasa_url_is_a_host_fallback() -> None:
    assert read({}, url="redis.internal").host == "redis.internal"
    assert read({"host": "h"}, url="redis.internal").host == "h"


def test_ipv6_endpoint() -> None:
    assert parse_address("[::1]:26379", key="endpoints") == ("::1", 26379)


@pytest.mark.parametrize(
    ("values", "key", "expected"),
    [
        ({"deployment_mode": "replicated"}, "lock_store.deployment_mode", "one of standard"),
        ({"deployment_mode": "sentinel"}, "lock_store.endpoints", "at least one sentinel"),
        (
            {"deployment_mode": "sentinel", "endpoints": ["host-without-port"]},
            "lock_store.endpoints",
            "host:port",
        ),
        ({"endpoints": ["h:99999"]}, "lock_store.endpoints", "1 to 65535"),
        ({"key_prefix": "my-bot"}, "lock_store.key_prefix", "alphanumeric"),
        ({"port": "http"}, "lock_store.port", "an integer from 1 to 65535"),
        ({"port": 0}, "lock_store.port", "an integer from 1 to 65535"),
        ({"db": -1}, "lock_store.db", "an integer >= 0"),
        ({"socket_timeout": 0}, "lock_store.socket_timeout", "a number > 0"),
        ({"socket_timeout": "nan"}, "lock_store.socket_timeout", "a number > 0"),
        ({"use_ssl": "maybe"}, "lock_store.use_ssl", "true or false"),
        ({"host": "redis://h:6379"}, "lock_store.host", "without a scheme"),
        ({"endpoints": {"a": 1}}, "lock_store.endpoints", "list of"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_accepted(
    values: dict[str, object], key: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read(values)
    message = str(caught.value)
    assert message.startswith(f"{key}: ")
    assert expected in message
    assert caught.value.key == key


def test_password_never_appears_in_repr_or_errors() -> None:
    settings = read({"password": "s3cr3t-value"})
    assert settings.password == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in settings.where
    with pytest.raises(ConfigurationError) as caught:
        read({"password": ["s3cr3t-value"]})
    assert "s3cr3t-value" not in str(caught.value)
    assert "<redacted>" in str(caught.value)


def test_unknown_keys_are_reported_for_a_typo() -> None:
    reader = SettingsReader({"sentinal_service": "x", "host": "h", "type": "a.B"}, section="s")
    RedisSettings.read(reader)
    assert reader.unknown(()) == ["sentinal_service"]
