"""Rendering store specs into endpoints.yml: Rasa's keys, secrets as ${VAR}, other sections kept.

``_rasa_read_endpoint_config`` mirrors Rasa Pro 3.21's ``rasa.utils.endpoints.read_endpoint_config``
(read from the published wheel's ``rasa/utils/endpoints.py`` and ``rasa/shared/utils/yaml.py``):
an implicit resolver tags *plain* scalars matching ``^(.*)\\$\\{(.*)\\}(.*)$`` as ``!env_var``,
whose constructor runs ``os.path.expandvars`` and raises when a ``$word`` is left unexpanded
(keys in ``SENSITIVE_DATA`` are left as written); ``EndpointConfig(**section)`` then takes
``url``, ``params``, ``headers``, ``basic_auth``, ``token``, ``token_name``, ``cafile``,
``actions_module`` and ``type``/``store_type`` out, and the rest is ``kwargs``. Importing the
real function needs aiohttp, sanic, structlog, ruamel, pykwalify and more, so it is mirrored.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml

from turnstile.operator.decide.render import (
    checksum,
    conflicts,
    load_endpoints,
    merge_section,
    plain_env,
    render_files,
    secret_env,
    secret_files,
    section,
)
from turnstile.operator.model.errors import ConflictError, EndpointsYamlError
from turnstile.operator.model.specs import StoreSpec, parse_store
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.locks.redis import RedisTicketLockStore

PASSWORD = "hunter2-Sup3r-s3cret"

_SENSITIVE_DATA = {
    "api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "public_key", "private_key", "client_id", "client_secret", "token_url", "jwt_secret",
}
_ENDPOINT_ATTRS = (
    "url", "params", "headers", "basic_auth", "token", "token_name", "cafile", "actions_module",
)


class _RasaLoader(yaml.SafeLoader):
    pass


class RasaExpansionError(Exception):
    pass


def _env_var_constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    value = str(loader.construct_scalar(node))
    expanded = os.path.expandvars(value)
    not_expanded = [w for w in expanded.split() if w.startswith("$") and w in value]
    if not_expanded:
        raise RasaExpansionError(
            f"Error when trying to expand the environment variables in '{value}'. Please make "
            f"sure to also set these environment variables: '{not_expanded}'."
        )
    return expanded


_RasaLoader.add_implicit_resolver("!env_var", re.compile(r"^(.*)\$\{(.*)\}(.*)$"), None)
_RasaLoader.add_constructor("!env_var", _env_var_constructor)


def _rasa_read_endpoint_config(text: str, endpoint_type: str) -> dict[str, Any] | None:
    """``{"type": ..., "url": ..., "kwargs": {...}}`` as Rasa's EndpointConfig would hold it."""
    content = yaml.load(text, Loader=_RasaLoader) or {}
    if content.get(endpoint_type) is None:
        return None
    data = dict(content[endpoint_type])
    config = {attr: data.pop(attr, None) for attr in _ENDPOINT_ATTRS}
    config["type"] = data.pop("store_type", data.pop("type", None))
    config["kwargs"] = data
    return config


def _store(
    kind: str = "LockStore", name: str = "s", cm: str | None = "bot", **spec: Any
) -> StoreSpec:
    body: dict[str, Any] = {"redis": {"host": "redis.db.svc", **spec.pop("redis", {})}, **spec}
    if cm:
        body["configMap"] = {"name": cm}
    return parse_store({"kind": kind, "metadata": {"name": name, "namespace": "ns"}, "spec": body})


PASSWORDED = {"passwordSecretRef": {"name": "redis-auth", "key": "pw"}, "username": "bot"}


def test_standard_section_has_rasas_keys() -> None:
    out = section(_store(redis={"port": 6380, "db": 2, "keyPrefix": "bot1", "socketTimeout": 5},
                         lockLifetime=30))
    assert out == {
        "type": "turnstile.rasa.TicketLockStore",
        "deployment_mode": "standard",
        "host": "redis.db.svc",
        "port": 6380,
        "db": 2,
        "key_prefix": "bot1",
        "socket_timeout": 5,
        "lock_lifetime": 30,
    }


def test_the_failover_budget_renders_the_key_the_store_reads() -> None:
    """``failoverTimeout`` (Turnstile's stores only) lands as ``failover_timeout``, which the
    library reads with the section's other Redis keys; unset, the section leaves the library's
    default (60 s) in force."""
    out = section(_store(redis={"failoverTimeout": 90, "socketTimeout": 2}))
    assert (out["failover_timeout"], out["socket_timeout"]) == (90, 2)
    assert "failover_timeout" not in section(_store(redis={}))
    def read(rendered: dict[str, Any]) -> RedisSettings:
        return RedisSettings.read(SettingsReader(rendered, section="lock_store"))

    assert read(out).failover_timeout == 90.0
    assert read(section(_store(redis={}))).failover_timeout == 60.0


def test_durable_replicas_render_the_durable_mode_key_the_store_reads() -> None:
    store = _store(durableReplicas=1)
    out = section(store)
    assert out["lock_durable_replicas"] == 1
    kwargs = {k: v for k, v in out.items() if k != "type"}
    durable = RedisTicketLockStore.from_kwargs(kwargs).durable
    assert durable is not None and durable.replicas == 1
    assert "lock_durable_replicas" not in section(_store(durableReplicas=0))
    assert "lock_durable_replicas" not in section(_store())


def test_cluster_section_lists_endpoints_and_never_a_db() -> None:
    store = _store(redis={"deploymentMode": "cluster", "endpoints": ["n1:7000", "n2:7001"], "db": 0,
                          "host": None})
    out = section(store)
    assert out["endpoints"] == ["n1:7000", "n2:7001"]
    assert "db" not in out and "host" not in out


def test_sentinel_section_names_the_service() -> None:
    store = _store("TimerStore", redis={"deploymentMode": "sentinel", "host": None,
                                        "endpoints": ["s1:26379"], "sentinelService": "main"},
                   pollInterval=0.5)
    out = section(store)
    assert out["type"] == "turnstile.rasa.TimerStore"
    assert out["sentinel_service"] == "main"
    assert out["poll_interval"] == 0.5


def test_rasa_implementation_uses_rasas_builtin_types() -> None:
    lock = _store(implementation="rasa", lockLifetime=45)
    timer = _store("TimerStore", implementation="rasa", pollInterval=2)
    assert section(lock)["type"] == "concurrent_redis"
    assert "lock_lifetime" not in section(lock)  # Rasa reads TICKET_LOCK_LIFETIME instead
    assert dict(plain_env("LockStore", lock))["TICKET_LOCK_LIFETIME"] == "45"
    assert section(timer)["type"] == "redis"
    assert section(timer)["poll_interval"] == 2


def test_password_is_a_var_reference_with_a_stable_name() -> None:
    lock = _store(redis=PASSWORDED)
    timer = _store("TimerStore", redis=PASSWORDED)
    assert section(lock)["password"] == "${TURNSTILE_LOCK_STORE_PASSWORD}"
    assert section(timer)["password"] == "${TURNSTILE_TIMER_STORE_PASSWORD}"
    assert secret_env("LockStore", lock) == [("TURNSTILE_LOCK_STORE_PASSWORD", "redis-auth", "pw")]
    assert secret_env("TimerStore", {"redis": {"host": "h", **PASSWORDED}}) == [
        ("TURNSTILE_TIMER_STORE_PASSWORD", "redis-auth", "pw")
    ]
    assert secret_env("LockStore", {"redis": {"host": "h"}}) == []


def test_var_reference_is_emitted_plain_so_rasa_expands_it() -> None:
    text = render_files([_store(redis=PASSWORDED)])
    rendered = next(iter(text.values()))
    assert "password: ${TURNSTILE_LOCK_STORE_PASSWORD}\n" in rendered  # not quoted


def test_tls_files_are_referenced_by_path() -> None:
    store = _store("TimerStore", redis={"tls": {"enabled": True, "caSecretRef": {"name": "ca"},
                                                "clientCertSecretRef": {"name": "client"}}})
    out = section(store)
    assert out["use_ssl"] is True
    assert out["ssl_ca_certs"] == "/etc/turnstile/timer_store/ca.crt"
    assert out["ssl_certfile"] == "/etc/turnstile/timer_store/tls.crt"
    assert out["ssl_keyfile"] == "/etc/turnstile/timer_store/tls.key"
    assert secret_files("TimerStore", store) == [
        ("/etc/turnstile/timer_store/ca.crt", "ca", "ca.crt"),
        ("/etc/turnstile/timer_store/tls.crt", "client", "tls.crt"),
        ("/etc/turnstile/timer_store/tls.key", "client", "tls.key"),
    ]


def test_merge_keeps_other_sections_and_their_order() -> None:
    existing = (
        "action_endpoint:\n  url: http://actions:5055/webhook\n"
        "lock_store:\n  type: in_memory\n"
        "tracker_store:\n  type: sql\n  password: ${DB_PASSWORD}\n"
    )
    merged = merge_section(existing, "lock_store", section(_store()))
    data = yaml.safe_load(merged)
    assert list(data) == ["action_endpoint", "lock_store", "tracker_store"]
    assert data["action_endpoint"] == {"url": "http://actions:5055/webhook"}
    assert data["tracker_store"] == {"type": "sql", "password": "${DB_PASSWORD}"}
    assert data["lock_store"]["type"] == "turnstile.rasa.TicketLockStore"
    assert "password: ${DB_PASSWORD}\n" in merged  # a user's reference stays expandable


def test_merge_none_removes_only_that_section() -> None:
    text = merge_section("lock_store:\n  type: x\ntimer_store:\n  type: y\n", "lock_store", None)
    assert yaml.safe_load(text) == {"timer_store": {"type": "y"}}


def test_merge_is_idempotent() -> None:
    once = merge_section("", "timer_store", section(_store("TimerStore")))
    assert merge_section(once, "timer_store", section(_store("TimerStore"))) == once


@pytest.mark.parametrize("bad", ["- a list\n", "key: [unclosed\n", "just a string\n"])
def test_a_file_that_is_not_a_mapping_is_not_overwritten(bad: str) -> None:
    with pytest.raises(EndpointsYamlError):
        merge_section(bad, "lock_store", section(_store()))


def test_two_stores_of_one_kind_in_one_configmap_conflict() -> None:
    a, b = _store(name="a"), _store(name="b")
    timer = _store("TimerStore", name="t")
    assert list(conflicts([a, b, timer]).values()) == [["a", "b"]]
    with pytest.raises(ConflictError, match="a, b"):
        render_files([a, b])


def test_a_lock_store_and_a_timer_store_share_a_configmap() -> None:
    files = render_files([_store(name="l"), _store("TimerStore", name="t")])
    (text,) = files.values()
    assert list(yaml.safe_load(text)) == ["lock_store", "timer_store"]


def test_checksum_is_stable() -> None:
    assert checksum("a") == checksum("a") != checksum("b")
    assert checksum("a").startswith("sha256:")


@pytest.mark.parametrize("kind", ["LockStore", "TimerStore"])
@pytest.mark.parametrize(
    "redis",
    [
        {**PASSWORDED},
        {"deploymentMode": "cluster", "host": None, "endpoints": ["n1:7000"], **PASSWORDED},
        {"deploymentMode": "sentinel", "host": None, "endpoints": ["s1:26379", "s2:26379"],
         "db": 3, **PASSWORDED, "tls": {"enabled": True, "caSecretRef": {"name": "ca"}}},
    ],
)
@pytest.mark.parametrize("implementation", ["turnstile", "rasa"])
def test_rendered_section_loads_with_rasas_reader_and_the_store_settings(
    kind: str, redis: dict[str, Any], implementation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(kind, redis=redis, implementation=implementation)
    (text,) = render_files([store]).values()
    section_name = store.info.section
    env_name = store.info.password_env
    monkeypatch.delenv(env_name, raising=False)
    with pytest.raises(RasaExpansionError, match=env_name):
        _rasa_read_endpoint_config(text, section_name)  # unset: Rasa refuses to start
    monkeypatch.setenv(env_name, PASSWORD)
    config = _rasa_read_endpoint_config(text, section_name)
    assert config is not None
    assert config["url"] is None  # Turnstile renders host, never Rasa's deprecated url
    kwargs = config["kwargs"]
    assert kwargs["password"] == PASSWORD
    assert kwargs["username"] == "bot"
    assert config["type"] == section(store)["type"]
    settings = RedisSettings.read(SettingsReader(kwargs, section=section_name))
    assert settings.password == PASSWORD
    assert settings.deployment_mode == store.redis.deployment_mode
    if store.redis.tls.enabled:
        assert settings.use_ssl and settings.ssl_ca_certs == f"{store.info.tls_dir}/ca.crt"


def test_password_value_never_appears_in_rendered_output() -> None:
    store = _store(redis=PASSWORDED)
    (text,) = render_files([store]).values()
    assert PASSWORD not in text
    assert "redis-auth" not in text  # not even the Secret's name: that is in the status


def test_sections_are_written_in_one_order_whichever_store_came_first() -> None:
    user = "action_endpoint:\n  url: http://actions:5055/webhook\n"
    lock, timer = section(_store()), section(_store("TimerStore"))
    lock_first = merge_section(merge_section(user, "lock_store", lock), "timer_store", timer)
    timer_first = merge_section(merge_section(user, "timer_store", timer), "lock_store", lock)
    assert lock_first == timer_first
    assert list(load_endpoints(lock_first)) == ["action_endpoint", "lock_store", "timer_store"]


USERS_FILE = """\
# Bot endpoints: edited by hand, comments and all
action_endpoint:
  url: "http://actions:5055/webhook"   # the action server

tracker_store:
  type: sql
  port: 05432        # 5432 to Rasa (YAML 1.2), octal 2842 to YAML 1.1
  dialect: off
  timeout: 1:30
  host: "${DB_HOST}"
  password: ${DB_PASSWORD}

# locks (Turnstile writes this one)
lock_store:
  type: in_memory
# models come last
models: {url: 'http://models', wait_time_between_pulls: 10}
"""


def _rasa_load(text: str) -> Any:
    """What Rasa's loader (ruamel.yaml, YAML 1.2) reads."""
    from ruamel.yaml import YAML  # noqa: PLC0415

    return YAML(typ="safe", pure=True).load(text)


def _without_lines(text: str, first: str, last_excluded: str) -> str:
    lines = text.splitlines(keepends=True)
    start = lines.index(first)
    end = lines.index(last_excluded, start)
    return "".join(lines[:start] + lines[end:])


def test_writing_the_section_keeps_every_other_byte_of_a_users_file() -> None:
    merged = merge_section(USERS_FILE, "lock_store", section(_store()))
    # Only the lock_store lines changed: the rest of the file is the user's, byte for byte.
    assert _without_lines(merged, "lock_store:\n", "# models come last\n") == _without_lines(
        USERS_FILE, "lock_store:\n", "# models come last\n"
    )
    before, after = _rasa_load(USERS_FILE), _rasa_load(merged)
    assert after["tracker_store"] == before["tracker_store"] == {
        "type": "sql", "port": 5432, "dialect": "off", "timeout": "1:30",
        "host": "${DB_HOST}", "password": "${DB_PASSWORD}",
    }  # fmt: skip
    assert '  host: "${DB_HOST}"\n' in merged  # still quoted: Rasa does not expand it
    assert after["lock_store"] == section(_store())
    assert list(after) == ["action_endpoint", "tracker_store", "lock_store", "models"]


def test_adding_and_removing_a_section_leaves_the_users_file_as_it_was() -> None:
    added = merge_section(USERS_FILE, "timer_store", section(_store("TimerStore")))
    assert added.startswith(USERS_FILE)  # appended: nothing before it moved
    assert _rasa_load(added)["timer_store"] == section(_store("TimerStore"))
    assert merge_section(added, "timer_store", None) == USERS_FILE


def test_the_operators_own_values_read_back_the_same_in_yaml_1_2() -> None:
    store = _store(redis={"host": "redis", "keyPrefix": "1e3"})
    text = merge_section("", "lock_store", section(store))
    assert _rasa_load(text)["lock_store"]["key_prefix"] == "1e3"  # not the float 1000.0


def test_a_file_rasa_would_refuse_for_a_duplicate_key_is_reported() -> None:
    from turnstile.operator.decide.render import endpoints_problem  # noqa: PLC0415

    assert endpoints_problem("lock_store:\n  type: a\nlock_store:\n  type: b\n") == (
        "not valid YAML at line 3"
    )
