"""RedisConnection against real servers: failovers are ridden out, bad credentials are not."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from tests.platform.redis_fixtures import REDIS_PASSWORD
from tests.platform.redis_servers import RedisCluster, RedisServer, SentinelGroup
from turnstile.stores._redis.connection import RedisConnection
from turnstile.stores.config import RedisSettings
from turnstile.stores.errors import StoreUnavailableError


def _addresses(endpoints: list[str]) -> tuple[tuple[str, int], ...]:
    return tuple((h, int(p)) for h, p in (e.rsplit(":", 1) for e in endpoints))


async def _counter_stream(connection: RedisConnection, key: str, seconds: float) -> int:
    """INCR ``key`` for ``seconds``; any error escapes to the test."""
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await connection.run(lambda c: c.incr(key), what="INCR")
        done += 1
        await asyncio.sleep(0.005)
    return done


async def test_sentinel_failover_is_invisible_to_the_caller(
    fresh_redis_sentinel: SentinelGroup,
) -> None:
    group = fresh_redis_sentinel
    settings = RedisSettings(
        deployment_mode="sentinel",
        endpoints=_addresses(group.endpoints),
        sentinel_service=group.service_name,
        db=0,
        socket_timeout=2,
    )
    connection = RedisConnection(settings)
    try:
        await connection.run(lambda c: c.ping())
        old = connection.master_address
        stream = asyncio.create_task(_counter_stream(connection, "n", 12.0))
        await asyncio.sleep(0.5)
        killed = group.kill_master()
        done = await stream
        assert done > 0
        assert killed == old
        assert connection.master_address is not None
        assert connection.master_address != old
        assert await connection.run(lambda c: c.ping())
    finally:
        await connection.close()


# uvloop's loop.close() blocked forever after this test (a Cluster master killed mid-stream),
# outside any timeout's reach, in CI and by hand: the failover itself passes on uvloop, the
# loop's teardown does not return. Asyncio only until that is understood (noted as open).
@pytest.mark.asyncio_only
async def test_cluster_failover_is_invisible_to_the_caller(
    fresh_redis_cluster: RedisCluster,
) -> None:
    cluster = fresh_redis_cluster
    settings = RedisSettings(
        deployment_mode="cluster", endpoints=_addresses(cluster.endpoints), socket_timeout=2
    )
    connection = RedisConnection(settings)
    try:
        stream = asyncio.create_task(_counter_stream(connection, "{k}n", 12.0))
        await asyncio.sleep(0.5)
        cluster.kill_master_for_key("{k}n")
        assert await stream > 0
        value = await connection.run(lambda c: c.get("{k}n"))
        assert int(value) > 0
    finally:
        await connection.close()


async def test_a_restarted_standalone_server_is_reconnected(
    fresh_redis_server: RedisServer,
) -> None:
    server = fresh_redis_server
    connection = RedisConnection(RedisSettings(host=server.host, port=server.port, db=0))
    try:
        await connection.run(lambda c: c.set("k", "v"))
        server.kill()
        restart = asyncio.get_running_loop().run_in_executor(None, server.restart)
        assert await connection.run(lambda c: c.ping())
        await restart
    finally:
        await connection.close()


async def test_a_dead_server_fails_after_the_budget_with_a_clear_error() -> None:
    with RedisServer(name="doomed") as server:
        port = server.port
    settings = RedisSettings(host="127.0.0.1", port=port, failover_timeout=0.3)
    connection = RedisConnection(settings)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        await connection.run(lambda c: c.ping(), what="PING")
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "PING" in str(caught.value)
    await connection.close()


async def test_wrong_password_fails_at_once_and_never_shows_the_password(
    redis_password_server: RedisServer,
) -> None:
    server = redis_password_server
    good = RedisSettings(host=server.host, port=server.port, password=REDIS_PASSWORD, db=0)
    ok = RedisConnection(good)
    assert await ok.run(lambda c: c.ping())
    await ok.close()

    bad = RedisConnection(replace(good, password="not-the-password", failover_timeout=30))
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        await bad.run(lambda c: c.ping())
    assert time.monotonic() - started < 5, "wrong credentials must not be retried"
    assert "not-the-password" not in str(caught.value)
    assert "credentials" in str(caught.value)
    await bad.close()


async def test_tls_with_the_ca_connects(redis_tls_server: RedisServer) -> None:
    server = redis_tls_server
    settings = RedisSettings(
        host=server.host,
        port=server.port,
        db=0,
        use_ssl=True,
        ssl_ca_certs=str(server.ca_cert),
        ssl_certfile=str(server.client_cert),
        ssl_keyfile=str(server.client_key),
    )
    connection = RedisConnection(settings)
    try:
        assert await connection.run(lambda c: c.ping())
    finally:
        await connection.close()
