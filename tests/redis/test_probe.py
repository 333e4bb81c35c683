"""The store probe against real Redis in every mode: what the operator and `turnstile check` see."""

from __future__ import annotations

import pytest

from tests.platform.redis_fixtures import REDIS_PASSWORD
from tests.platform.redis_servers import RedisCluster, RedisServer, SentinelGroup
from turnstile.stores.config import RedisSettings
from turnstile.stores.probe import probe


async def test_standard_probe_pings_the_server(redis_server: RedisServer) -> None:
    report = await probe(RedisSettings(host=redis_server.host, port=redis_server.port))
    assert report.ok, report.message
    assert report.mode == "standard"
    assert report.master == f"{redis_server.host}:{redis_server.port}"
    assert report.nodes == 1
    assert report.latency_ms is not None and report.latency_ms >= 0


async def test_wrong_password_is_reported_without_the_password(
    redis_password_server: RedisServer,
) -> None:
    settings = RedisSettings(
        host=redis_password_server.host,
        port=redis_password_server.port,
        password="not-the-right-one-s3cr3t",
    )
    report = await probe(settings)
    assert not report.ok
    assert report.reason == "AuthenticationFailed"
    assert "s3cr3t" not in repr(report)
    good = await probe(RedisSettings(
        host=redis_password_server.host, port=redis_password_server.port, password=REDIS_PASSWORD
    ))
    assert good.ok, good.message
    assert REDIS_PASSWORD not in repr(good)


async def test_unreachable_server_is_reported_quickly() -> None:
    report = await probe(RedisSettings(host="127.0.0.1", port=1), timeout=2.0)
    assert not report.ok
    assert report.reason == "Unreachable"
    assert "127.0.0.1:1" in report.message


async def test_tls_probe_uses_the_ca(redis_tls_server: RedisServer) -> None:
    settings = RedisSettings(
        host=redis_tls_server.host,
        port=redis_tls_server.port,
        use_ssl=True,
        ssl_ca_certs=str(redis_tls_server.ca_cert),
        ssl_certfile=str(redis_tls_server.client_cert),
        ssl_keyfile=str(redis_tls_server.client_key),
    )
    report = await probe(settings)
    assert report.ok, report.message


async def test_cluster_probe_checks_state_and_slot_coverage(redis_cluster: RedisCluster) -> None:
    host, port = redis_cluster.startup_nodes[0]
    settings = RedisSettings(
        deployment_mode="cluster", endpoints=tuple(redis_cluster.startup_nodes), host=host,
        port=port, db=0,
    )
    report = await probe(settings)
    assert report.ok, report.message
    assert report.mode == "cluster"
    assert report.nodes == 6
    assert "16384/16384" in report.message


async def test_sentinel_probe_names_the_master_and_checks_quorum(
    redis_sentinel: SentinelGroup,
) -> None:
    settings = RedisSettings(
        deployment_mode="sentinel",
        endpoints=tuple(redis_sentinel.sentinel_addresses),
        sentinel_service=redis_sentinel.service_name,
    )
    report = await probe(settings)
    assert report.ok, report.message
    host, port = redis_sentinel.current_master()
    assert report.master == f"{host}:{port}"
    assert report.sentinels == 3
    assert report.nodes == 2


async def test_sentinel_probe_follows_a_failover(fresh_redis_sentinel: SentinelGroup) -> None:
    group = fresh_redis_sentinel
    settings = RedisSettings(
        deployment_mode="sentinel",
        endpoints=tuple(group.sentinel_addresses),
        sentinel_service=group.service_name,
    )
    before = await probe(settings)
    assert before.ok, before.message
    old = group.kill_master()
    new = group.wait_for_failover(old, timeout=30)
    after = await probe(settings)
    assert after.ok, after.message
    assert after.master == f"{new[0]}:{new[1]}" != before.master


async def test_unknown_sentinel_service_is_master_unknown(redis_sentinel: SentinelGroup) -> None:
    settings = RedisSettings(
        deployment_mode="sentinel",
        endpoints=tuple(redis_sentinel.sentinel_addresses),
        sentinel_service="nosuchservice",
    )
    report = await probe(settings)
    assert not report.ok
    assert report.reason == "MasterUnknown"


@pytest.mark.parametrize("mode", ["sentinel", "cluster"])
async def test_nothing_listening_is_unreachable(mode: str) -> None:
    settings = RedisSettings(
        deployment_mode=mode,  # type: ignore[arg-type]
        endpoints=(("127.0.0.1", 1),),
    )
    report = await probe(settings, timeout=2.0)
    assert not report.ok
    assert report.reason == "Unreachable", report
