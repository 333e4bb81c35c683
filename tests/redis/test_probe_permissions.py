"""The probe proves what a bot will do: ACL users that can PING but not run the store fail it.

Each user here is made with ``ACL SETUSER`` on real Redis (every node of a Cluster), and the
probe is the one the operator's ``Connected`` condition and ``turnstile check`` use. Without
``store=`` the probe only proves the mode (PING), which is what it did before: those users
passed it and every bot message then failed with NOPERM.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.platform.redis_servers import RedisCluster, RedisServer
from turnstile.stores.acl import Store, acl_rule
from turnstile.stores.config import RedisSettings
from turnstile.stores.probe import probe

PASSWORD = "probe-acl-pw"


def _nodes(topology: RedisServer | RedisCluster) -> list[RedisServer]:
    return topology.live_nodes() if isinstance(topology, RedisCluster) else [topology]


def _user(topology: RedisServer | RedisCluster, *rule: str) -> str:
    user = "probe" + uuid.uuid4().hex[:8]
    for node in _nodes(topology):
        assert node.execute("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", *rule) == "OK"
    return user


def _store_user(
    topology: RedisServer | RedisCluster, store: Store, prefix: str, *, drop: str | None = None
) -> str:
    rule = acl_rule(store, prefix, cluster=isinstance(topology, RedisCluster))
    if drop is not None:
        rule.remove(drop)
    return _user(topology, *rule)


def _settings(topology: RedisServer | RedisCluster, user: str, prefix: str) -> RedisSettings:
    common: dict[str, Any] = {"username": user, "password": PASSWORD, "key_prefix": prefix}
    if isinstance(topology, RedisCluster):
        node = topology.live_nodes()[0]
        return RedisSettings(deployment_mode="cluster", endpoints=((node.host, node.port),),
                             db=0, **common)
    return RedisSettings(host=topology.host, port=topology.port, db=0, **common)


@pytest.fixture(params=["standard", "cluster"])
def topology(request: pytest.FixtureRequest) -> Iterator[RedisServer | RedisCluster]:
    yield request.getfixturevalue({"standard": "redis_server", "cluster": "redis_cluster"}[
        request.param])


@pytest.mark.parametrize("store", ["lock_store", "timer_store"])
async def test_a_user_with_exactly_the_rule_passes_and_the_operations_ran(
    topology: Any, store: Store
) -> None:
    prefix = "p" + uuid.uuid4().hex[:6]
    user = _store_user(topology, store, prefix)
    report = await probe(_settings(topology, user, prefix), store=store)
    assert report.ok, report.message
    assert ("lock cycle with a waiter ran" if store == "lock_store"
            else "timer was written and deleted") in report.message
    assert PASSWORD not in repr(report)


@pytest.mark.parametrize(("drop", "named"), [
    ("+evalsha", "no permissions to run the 'evalsha' command"),
    ("+blpop", "no permissions to run the 'blpop' command"),
    ("+rpush", "a script calls RPUSH (script 'ticket release', line "),
])
async def test_a_user_missing_one_command_passes_ping_but_not_the_store(
    topology: Any, drop: str, named: str
) -> None:
    prefix = "p" + uuid.uuid4().hex[:6]
    user = _store_user(topology, "lock_store", prefix, drop=drop)
    settings = _settings(topology, user, prefix)
    assert (await probe(settings)).ok  # PING alone: what the operator reported before
    report = await probe(settings, store="lock_store")
    assert not report.ok
    assert report.reason == "MissingPermission", report.message
    assert f"ACL user {user!r}" in report.message
    assert named in report.message, report.message


async def test_a_user_on_other_keys_is_told_the_key_is_refused(topology: Any) -> None:
    user = _store_user(topology, "timer_store", "other")
    report = await probe(_settings(topology, user, "mine"), store="timer_store")
    assert not report.ok
    assert report.reason == "MissingPermission", report.message
    # Redis 7 and Valkey word it differently; the store adds the same words on every server.
    assert "NOPERM" in report.message, report.message
    assert "a key this user may not access" in report.message, report.message


async def test_a_user_allowed_only_get_and_set_is_not_reported_as_bad_credentials(
    redis_server: RedisServer,
) -> None:
    user = _user(redis_server, "resetkeys", "~*", "-@all", "+get", "+set")
    report = await probe(_settings(redis_server, user, "bot"), store="lock_store")
    assert not report.ok
    assert report.reason == "MissingPermission", report.message
    assert "credentials" not in report.message
    assert "NOPERM" in report.message


async def test_a_user_that_may_dryrun_gets_every_missing_command_named(
    redis_server: RedisServer,
) -> None:
    # The timer rule minus HMGET (called only when fired timers are acknowledged, which the
    # probe does not do) plus ACL DRYRUN: the operations pass, and ACL DRYRUN finds the rest.
    rule = acl_rule("timer_store", "bot")
    rule.remove("+hmget")
    user = _user(redis_server, *rule, "+acl|dryrun")
    report = await probe(_settings(redis_server, user, "bot"), store="timer_store")
    assert not report.ok
    assert report.reason == "MissingPermission", report.message
    assert "ACL DRYRUN finds more" in report.message
    assert "may not run HMGET on keys bot:turnstile:timers:*" in report.message


async def test_connection_failures_say_why(redis_server: RedisServer) -> None:
    refused = await probe(RedisSettings(host="127.0.0.1", port=_closed_port()), timeout=2.0)
    assert refused.reason == "Unreachable"
    assert "connection refused: nothing listens" in refused.message, refused.message
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        quiet = await probe(RedisSettings(host="127.0.0.1", port=port, socket_timeout=0.5),
                            timeout=1.5)
    assert not quiet.ok
    assert "no answer in time" in quiet.message or "did not answer within" in quiet.message, (
        quiet.message)
    tls_on_plain = await probe(
        RedisSettings(host=redis_server.host, port=redis_server.port, use_ssl=True,
                      ssl_cert_reqs="none"),
        timeout=1.5,
    )
    assert not tls_on_plain.ok
    assert "does not speak TLS on this port" in tls_on_plain.message, tls_on_plain.message


async def test_plain_redis_client_on_a_tls_port_is_told_to_turn_tls_on(
    redis_tls_server: RedisServer,
) -> None:
    report = await probe(RedisSettings(host=redis_tls_server.host, port=redis_tls_server.port),
                         timeout=1.5)
    assert not report.ok
    assert "it may require TLS (set use_ssl)" in report.message, report.message


def _closed_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])
