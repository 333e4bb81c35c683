"""The connection layer's pure parts: which errors are worth a retry, script hashing."""

from __future__ import annotations

import hashlib

import pytest
from redis import exceptions as rex
from redis.asyncio.connection import Connection

from turnstile.stores._redis.connection import RedisConnection, is_retryable
from turnstile.stores._redis.scripts import LuaScript
from turnstile.stores.config import RedisSettings


@pytest.mark.parametrize(
    "exc",
    [
        rex.ConnectionError("refused"),
        rex.TimeoutError("slow"),
        rex.ReadOnlyError("READONLY You can't write against a read only replica."),
        rex.ClusterDownError("CLUSTERDOWN The cluster is down"),
        rex.TryAgainError("TRYAGAIN"),
        rex.BusyLoadingError("LOADING"),
        rex.ResponseError("UNBLOCKED force unblock from blocking operation"),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_failover_symptoms_are_retried(exc: BaseException) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        rex.AuthenticationError("invalid username-password pair"),
        rex.ResponseError("ERR wrong number of arguments"),
        rex.NoPermissionError("NOPERM"),
        ValueError("bug"),
    ],
)
def test_wrong_credentials_and_bugs_are_not_retried(exc: BaseException) -> None:
    assert not is_retryable(exc)


async def test_a_connection_closed_under_a_command_is_retried() -> None:
    """What a failover's refresh did to a blocked pop on a loaded machine (issue 23's run):
    redis-py's ``disconnect()`` left the stream writer None and the command in flight failed
    with an AttributeError inside redis-py. Raised here by a real redis-py connection that has
    no stream (never connected, as after ``disconnect()``)."""
    conn = Connection(host="127.0.0.1", port=6379)
    with pytest.raises(AttributeError) as raised:
        await conn._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    assert is_retryable(raised.value)


def test_an_attribute_error_of_our_own_is_a_bug_not_retried() -> None:
    value = None
    with pytest.raises(AttributeError) as raised:
        value.writelines([])  # type: ignore[attr-defined]
    assert not is_retryable(raised.value)


def test_script_sha_is_the_redis_sha1_of_its_source() -> None:
    script = LuaScript("noop", "return 1")
    assert script.sha == hashlib.sha1(b"return 1").hexdigest()


def test_connection_reports_where_without_credentials() -> None:
    settings = RedisSettings(
        deployment_mode="sentinel",
        endpoints=(("10.1.1.1", 26379),),
        password="hunter2",
        sentinel_service="bots",
    )
    connection = RedisConnection(settings)
    assert settings.where == "sentinel bots@10.1.1.1:26379"
    assert "hunter2" not in repr(connection.settings)
