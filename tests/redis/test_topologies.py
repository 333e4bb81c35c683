"""Smoke tests for the real Redis topologies in ``tests/platform/redis_servers.py``.

Why: every store test trusts these fixtures to be what they claim (auth really enforced, TLS
really required, cluster really sharded, failover really happening).  If one of these fails,
fix the platform before debugging any store test.
"""

from __future__ import annotations

import socket

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.retry import Retry
from redis.sentinel import Sentinel

from tests.platform.redis_fixtures import (
    REDIS_ACL_PASSWORD,
    REDIS_ACL_USER,
    REDIS_PASSWORD,
)
from tests.platform.redis_servers import RedisCluster, RedisServer, SentinelGroup, key_slot

pytestmark = pytest.mark.redis


def _client(server: RedisServer, **kw: object) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, socket_timeout=5, **kw)  # type: ignore[arg-type]


def _no_retry_client(server: RedisServer, **kw: object) -> redis.Redis:
    """For expected failures: redis-py 6+ retries connection/auth errors with backoff by
    default, which would only make these tests slow."""
    return _client(server, retry=Retry(NoBackoff(), 0), **kw)


# ---- standalone -------------------------------------------------------------------------


def test_standalone_answers_ping(redis_server: RedisServer) -> None:
    with _client(redis_server) as r:
        assert r.ping() is True
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.cli("PING") == "PONG"


def test_flushed_redis_is_empty(flushed_redis: RedisServer) -> None:
    with _client(flushed_redis) as r:
        assert r.dbsize() == 0
        r.set("left-over", "1")  # the next user of flushed_redis must not see this


def test_standalone_restart_keeps_port(fresh_redis_server: RedisServer) -> None:
    port = fresh_redis_server.port
    fresh_redis_server.kill()
    assert not fresh_redis_server.is_running
    fresh_redis_server.restart()
    assert fresh_redis_server.port == port
    with _client(fresh_redis_server) as r:
        assert r.ping() is True


def test_password_server_refuses_unauthenticated(redis_password_server: RedisServer) -> None:
    with _no_retry_client(redis_password_server) as r, pytest.raises(redis.AuthenticationError):
        r.ping()
    with (
        _no_retry_client(redis_password_server, password="wrong") as r,
        pytest.raises(redis.AuthenticationError),
    ):
        r.ping()


def test_password_server_accepts_password_and_acl_user(
    redis_password_server: RedisServer,
) -> None:
    with _client(redis_password_server, password=REDIS_PASSWORD) as r:
        assert r.ping() is True
    with _client(redis_password_server, username=REDIS_ACL_USER, password=REDIS_ACL_PASSWORD) as r:
        assert r.ping() is True
        assert r.acl_whoami() == REDIS_ACL_USER
    with redis.Redis.from_url(redis_password_server.url, socket_timeout=5) as r:
        assert r.ping() is True


def test_tls_server_answers_over_tls(redis_tls_server: RedisServer) -> None:
    s = redis_tls_server
    with _client(s, ssl=True, ssl_ca_certs=str(s.ca_cert)) as r:
        assert r.ping() is True
    with _client(
        s,
        ssl=True,
        ssl_ca_certs=str(s.ca_cert),
        ssl_certfile=str(s.client_cert),
        ssl_keyfile=str(s.client_key),
    ) as r:
        assert r.ping() is True
    assert s.url.startswith("rediss://")


def test_tls_server_refuses_plaintext(redis_tls_server: RedisServer) -> None:
    with (
        _no_retry_client(redis_tls_server, socket_connect_timeout=5) as r,
        pytest.raises((redis.ConnectionError, redis.TimeoutError)),
    ):
        r.ping()
    # Raw plaintext on the TLS port: the server drops us (reset or EOF), never answers PONG.
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.connect(redis_tls_server.address)
        sock.sendall(b"PING\r\n")
        try:
            answer = sock.recv(100)
        except ConnectionResetError:
            answer = b""
        assert b"PONG" not in answer


# ---- cluster ----------------------------------------------------------------------------


def test_cluster_is_ok_with_all_slots(redis_cluster: RedisCluster) -> None:
    for node in redis_cluster.nodes:
        info = redis_cluster.cluster_info(node)
        assert info["cluster_state"] == "ok", node
        assert info["cluster_slots_assigned"] == "16384", node
        assert info["cluster_known_nodes"] == "6", node
    assert len(redis_cluster.masters()) == 3
    assert len(redis_cluster.replicas()) == 3
    assert len(redis_cluster.endpoints) == 6

    nodes = [ClusterNode(n.host, n.port) for n in redis_cluster.nodes]
    client = ClusterClient(startup_nodes=nodes, socket_timeout=5)
    try:
        for i in range(20):
            client.set(f"smoke:{i}", i)
        assert client.get("smoke:7") == b"7"
        assert client.cluster_keyslot("smoke:7") == key_slot("smoke:7")
        owner = redis_cluster.master_for_key("smoke:7")
        assert owner.execute("GET", "smoke:7") == "7"
    finally:
        client.close()


def test_cluster_failover(fresh_redis_cluster: RedisCluster) -> None:
    cluster = fresh_redis_cluster
    key = "failover:key"
    old = cluster.master_for_key(key)
    old.execute("SET", key, "v")
    assert old.execute("WAIT", 1, 2000) >= 1  # replicated before we crash the master

    killed = cluster.kill_master_for_key(key)
    assert killed is old and not old.is_running
    new = cluster.wait_for_failover(old, timeout=20)

    assert new is not old
    assert new.role() == "master"
    assert cluster.master_for_key(key) is new
    assert new.execute("GET", key) == "v", new.execute("INFO", "replication")
    for node in cluster.live_nodes():
        assert cluster.cluster_info(node)["cluster_state"] == "ok", node

    cluster.restart_node(old)
    assert old.role() == "slave"
    assert len(cluster.masters()) == 3


# ---- sentinel ---------------------------------------------------------------------------


def test_sentinel_reports_master(redis_sentinel: SentinelGroup) -> None:
    assert redis_sentinel.current_master() == redis_sentinel.master.address
    assert len(redis_sentinel.endpoints) == 3
    sentinel = Sentinel(redis_sentinel.sentinel_addresses, socket_timeout=5)
    assert sentinel.discover_master(redis_sentinel.service_name) == redis_sentinel.master.address
    master = sentinel.master_for(redis_sentinel.service_name, socket_timeout=5)
    try:
        assert master.ping() is True
    finally:
        master.close()
        for s in sentinel.sentinels:
            s.close()


def test_sentinel_failover(fresh_redis_sentinel: SentinelGroup) -> None:
    group = fresh_redis_sentinel
    old = group.kill_master()
    new = group.wait_for_failover(old, timeout=30)

    assert new != old
    with redis.Redis(host=new[0], port=new[1], socket_timeout=5) as r:
        assert r.ping() is True
        assert r.role()[0] == b"master"

    # The old master comes back as a replica of the new one.
    group.restart(group.data_node_by_port(old[1]))
    assert group.data_node_by_port(old[1]).role() == "slave"
    assert group.current_master() == new
