"""The multiplexed script connection against a real redis-server.

What a user relies on: many concurrent callers each get their own reply over one connection; a
caller that is cancelled or times out never shifts the replies of the others; a dead server
fails every waiting call with an error the store retries; credentials, ``db`` and TLS behave
as with redis-py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rex

from tests.platform.redis_fixtures import REDIS_ACL_PASSWORD, REDIS_ACL_USER, REDIS_PASSWORD
from tests.platform.redis_servers import RedisServer
from turnstile.stores._redis.connection import RedisConnection
from turnstile.stores._redis.multiplexed import MultiplexedConnection, open_multiplexed
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.config import RedisSettings
from turnstile.stores.errors import StoreUnavailableError

NAME = "turnstile-mux-test"


def _settings(server: RedisServer, **extra: Any) -> RedisSettings:
    return RedisSettings(**{"host": server.host, "port": server.port, "db": 0,
                            "socket_timeout": 2.0, **extra})


@pytest.fixture
async def mux(redis_server: RedisServer) -> AsyncIterator[MultiplexedConnection]:
    conn = await open_multiplexed(
        (redis_server.host, redis_server.port), _settings(redis_server), db=0, client_name=NAME
    )
    yield conn
    conn.close()


async def _clients_named(server: RedisServer, name: str) -> int:
    plain = aioredis.Redis(host=server.host, port=server.port, decode_responses=True)
    try:
        return sum(1 for c in await plain.client_list() if c.get("name") == name)
    finally:
        await plain.connection_pool.disconnect()


async def test_concurrent_callers_each_get_their_own_reply_on_one_connection(
    redis_server: RedisServer, mux: MultiplexedConnection
) -> None:
    tag = random.getrandbits(32)

    async def roundtrip(i: int) -> str:
        await asyncio.sleep(random.random() / 100)
        await mux.call("SET", f"mux:{tag}:{i}", f"value-{i}")
        return str(await mux.call("GET", f"mux:{tag}:{i}"))

    got = await asyncio.gather(*(roundtrip(i) for i in range(300)))
    assert got == [f"value-{i}" for i in range(300)]
    assert await _clients_named(redis_server, NAME) == 1


async def test_a_cancelled_caller_does_not_shift_the_next_replies(
    mux: MultiplexedConnection,
) -> None:
    """The reply of a cancelled call still arrives; it must be dropped, not handed on."""
    key = f"mux:empty:{random.getrandbits(32)}"
    slow = asyncio.create_task(mux.call("BLPOP", key, "0.3"))  # the server holds the reply
    await asyncio.sleep(0.05)
    after = asyncio.create_task(mux.call("ECHO", "mine"))
    await asyncio.sleep(0.01)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await asyncio.wait_for(after, 2.0) == "mine"
    assert await mux.call("ECHO", "still in step") == "still in step"
    assert mux.is_open


async def test_a_reply_slower_than_socket_timeout_fails_every_waiting_call(
    redis_server: RedisServer,
) -> None:
    settings = _settings(redis_server, socket_timeout=0.3)
    conn = await open_multiplexed(
        (redis_server.host, redis_server.port), settings, db=0, client_name=NAME
    )
    key = f"mux:empty:{random.getrandbits(32)}"
    stuck = asyncio.create_task(conn.call("BLPOP", key, "2"))
    await asyncio.sleep(0.05)
    behind = asyncio.create_task(conn.call("PING"))
    with pytest.raises(rex.TimeoutError, match=r"did not reply within 0\.3s"):
        await stuck
    with pytest.raises(rex.ConnectionError, match="longer than socket_timeout"):
        await behind
    assert not conn.is_open
    with pytest.raises(rex.ConnectionError):
        await conn.call("PING")


async def test_a_killed_server_fails_waiting_calls_and_the_store_rides_it_out(
    fresh_redis_server: RedisServer,
) -> None:
    server = fresh_redis_server
    settings = _settings(server, failover_timeout=15.0)
    conn = await open_multiplexed((server.host, server.port), settings, db=0, client_name=NAME)
    key = f"mux:empty:{random.getrandbits(32)}"
    waiting = asyncio.create_task(conn.call("BLPOP", key, "5"))
    await asyncio.sleep(0.1)
    server.kill()
    with pytest.raises(rex.ConnectionError, match="closed"):
        await asyncio.wait_for(waiting, 5.0)
    assert not conn.is_open

    # Through RedisConnection the same loss is retried on a new connection once it is back.
    connection = RedisConnection(settings)
    script = LuaScript("incr", "return redis.call('INCR', KEYS[1])")
    try:
        server.start()
        assert await connection.eval(script, ["n"], []) == 1
        server.kill()
        later = asyncio.create_task(connection.eval(script, ["n"], []))
        await asyncio.sleep(0.5)
        server.start()
        # The restarted server has no data (no persistence), and an empty script cache:
        # EVALSHA fails with NOSCRIPT and the script is sent whole.
        assert await asyncio.wait_for(later, 15.0) == 1
    finally:
        await connection.close()


async def test_scripts_are_loaded_again_after_script_flush(redis_server: RedisServer) -> None:
    connection = RedisConnection(_settings(redis_server))
    script = LuaScript("echo", "return ARGV[1]")
    try:
        assert await connection.eval(script, [], ["one"]) == "one"
        await connection.run(lambda c: c.script_flush())
        assert await connection.eval(script, [], ["two"]) == "two"
    finally:
        await connection.close()


async def test_db_is_selected(redis_server: RedisServer) -> None:
    conn = await open_multiplexed(
        (redis_server.host, redis_server.port), _settings(redis_server), db=5, client_name=NAME
    )
    key = f"mux:db:{random.getrandbits(32)}"
    try:
        await conn.call("SET", key, "in five")
    finally:
        conn.close()
    plain = aioredis.Redis(host=redis_server.host, port=redis_server.port, db=5)
    try:
        assert await plain.get(key) == b"in five"
    finally:
        await plain.connection_pool.disconnect()


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, REDIS_PASSWORD), (REDIS_ACL_USER, REDIS_ACL_PASSWORD)],
)
async def test_credentials_are_sent(
    redis_password_server: RedisServer, username: str | None, password: str
) -> None:
    server = redis_password_server
    settings = _settings(server, username=username, password=password)
    conn = await open_multiplexed((server.host, server.port), settings, db=0, client_name=NAME)
    try:
        assert await conn.call("PING") == "PONG"
    finally:
        conn.close()


@pytest.mark.parametrize("username", [None, REDIS_ACL_USER])
async def test_wrong_credentials_are_refused_without_the_password_in_the_message(
    redis_password_server: RedisServer, username: str | None
) -> None:
    server = redis_password_server
    wrong = "not-the-password-8c1f"
    settings = _settings(server, username=username, password=wrong)
    with pytest.raises(rex.AuthenticationError) as caught:
        await open_multiplexed((server.host, server.port), settings, db=0, client_name=NAME)
    assert wrong not in str(caught.value)
    connection = RedisConnection(settings)
    try:
        with pytest.raises(StoreUnavailableError, match="refused the credentials") as store_err:
            await connection.eval(LuaScript("one", "return 1"), [], [])
        assert wrong not in str(store_err.value)
    finally:
        await connection.close()


async def test_no_password_where_one_is_required_is_not_retried(
    redis_password_server: RedisServer,
) -> None:
    server = redis_password_server
    connection = RedisConnection(_settings(server, failover_timeout=20.0))
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailableError, match="refused the credentials"):
            await connection.eval(LuaScript("one", "return 1"), [], [])
        # Refused at once, not after 20 s of retries (NOAUTH is not a failover).
        assert asyncio.get_running_loop().time() - started < 10.0
    finally:
        await connection.close()


async def test_tls_with_verification(redis_tls_server: RedisServer) -> None:
    server = redis_tls_server
    settings = _settings(server, use_ssl=True, ssl_ca_certs=str(server.ca_cert))
    conn = await open_multiplexed((server.host, server.port), settings, db=0, client_name=NAME)
    try:
        assert await conn.call("ECHO", "over tls") == "over tls"
    finally:
        conn.close()


async def test_a_call_made_after_others_still_times_out(redis_server: RedisServer) -> None:
    """One watchdog serves the whole queue: a slow call queued behind answered ones is still
    failed once it passes socket_timeout, not left waiting for its (late) reply."""
    settings = _settings(redis_server, socket_timeout=0.3)
    conn = await open_multiplexed(
        (redis_server.host, redis_server.port), settings, db=0, client_name=NAME
    )
    loop = asyncio.get_running_loop()
    assert await conn.call("PING") == "PONG"  # arms the watchdog for this call's deadline
    await asyncio.sleep(0.2)
    key = f"mux:empty:{random.getrandbits(32)}"
    sent = loop.time()
    with pytest.raises(rex.TimeoutError):
        await asyncio.wait_for(conn.call("BLPOP", key, "5"), 4.0)
    # Its own deadline, not the earlier call's. Compared as the watchdog does (``now >= sent +
    # timeout``): on uvloop's millisecond clock ``now - sent`` can come out a hair under 0.3 in
    # floating point (10871.98 - 10871.68 == 0.29999999999927) when the call failed on time.
    assert loop.time() >= sent + 0.3
    assert not conn.is_open
