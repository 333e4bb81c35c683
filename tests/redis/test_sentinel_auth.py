"""Sentinels that require a password: ``sentinel_username``/``sentinel_password``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.platform.redis_fixtures import (
    REDIS_PASSWORD,
    SENTINEL_PASSWORD,
    require_redis,
    require_redis_tls,
)
from tests.platform.redis_servers import SentinelGroup, store_kwargs
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.errors import TurnstileError
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.probe import probe
from turnstile.stores.timers.api import SessionTimer
from turnstile.stores.timers.redis import RedisTimerStore


def _kwargs(group: SentinelGroup, **extra: Any) -> dict[str, Any]:
    return store_kwargs(
        group,
        **{"db": 0, "password": REDIS_PASSWORD, "sentinel_password": SENTINEL_PASSWORD,
           "failover_timeout": 10, **extra},
    )


async def test_locks_and_timers_through_password_protected_sentinels(
    redis_sentinel_auth: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kwargs = _kwargs(redis_sentinel_auth)
    locks = RedisTicketLockStore.from_kwargs(kwargs)
    timers = RedisTimerStore.from_kwargs({**kwargs, "key_prefix": "s" + uuid.uuid4().hex[:10]})
    try:
        tokens = []
        for _ in range(5):
            async with locks.lock(f"sa-{uuid.uuid4().hex}") as held:
                tokens.append(held.fencing_token)
        assert all(t > 0 for t in tokens)
        now = time.time()
        await timers.store_timer("alice", "s1", now - 1, {"k": "v"})
        assert await timers.get_timer("alice") == SessionTimer("alice", "s1", now - 1, {"k": "v"})
        claimed = await timers.claim_timers(await timers.get_expired_timers(now))
        assert [t.sender_id for t in claimed] == ["alice"]
        assert not timers.using_fallback
    finally:
        await locks.close()
        await timers.aclose()
    report = await probe(RedisSettings.read(SettingsReader(kwargs, section="lock_store")))
    assert report.ok and report.sentinels == 3, report
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SENTINEL_PASSWORD not in logged and REDIS_PASSWORD not in logged


@pytest.mark.parametrize("bad", [{"sentinel_password": "not-the-sentinel-pw"}, {}])
async def test_a_wrong_or_missing_sentinel_password_names_the_key(
    redis_sentinel_auth: SentinelGroup, bad: dict[str, Any]
) -> None:
    kwargs = _kwargs(redis_sentinel_auth)
    del kwargs["sentinel_password"]
    kwargs.update(bad)
    store = RedisTicketLockStore.from_kwargs(kwargs)
    started = time.monotonic()
    try:
        with pytest.raises(TurnstileError) as caught:
            async with store.lock(f"sa-{uuid.uuid4().hex}"):
                pass
    finally:
        await store.close()
    assert time.monotonic() - started < 5, "refused credentials must not be retried"
    message = str(caught.value)
    assert "sentinel_password" in message and "sentinels refused" in message
    assert "not-the-sentinel-pw" not in message and REDIS_PASSWORD not in message
    settings = RedisSettings.read(SettingsReader(kwargs, section="lock_store"))
    assert "not-the-sentinel-pw" not in repr(settings)
    report = await probe(settings)
    assert not report.ok and report.reason == "AuthenticationFailed", report
    assert "sentinel_password" in report.message
    assert "not-the-sentinel-pw" not in report.message


@pytest.fixture(scope="module")
def tls_sentinel_group() -> Iterator[SentinelGroup]:
    """TLS everywhere (one CA), passwords on the data nodes and on the sentinels."""
    require_redis("redis-server", "redis-sentinel", "redis-cli")
    require_redis_tls()
    with SentinelGroup(
        replicas=1, sentinels=3, quorum=2, password=REDIS_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD, tls=True,
    ) as group:
        yield group


async def test_locks_and_timers_through_tls_sentinels(tls_sentinel_group: SentinelGroup) -> None:
    group = tls_sentinel_group
    kwargs = _kwargs(group, use_ssl=True, sentinel_use_ssl=True, ssl_ca_certs=str(group.ca_cert))
    locks = RedisTicketLockStore.from_kwargs(kwargs)
    timers = RedisTimerStore.from_kwargs({**kwargs, "key_prefix": "s" + uuid.uuid4().hex[:10]})
    try:
        async with locks.lock(f"tls-{uuid.uuid4().hex}") as held:
            assert held.fencing_token > 0
        await timers.store_timer("alice", "s1", 1.0)
        assert await timers.get_timer("alice") == SessionTimer("alice", "s1", 1.0)
        assert not timers.using_fallback
    finally:
        await locks.close()
        await timers.aclose()
    settings = RedisSettings.read(SettingsReader(kwargs, section="lock_store"))
    report = await probe(settings)
    assert report.ok and report.sentinels == 3, report
    # Plain text to TLS-only sentinels does not get an answer.
    plain = RedisSettings.read(SettingsReader({**kwargs, "sentinel_use_ssl": False}, section="x"))
    report = await probe(plain, timeout=3)
    assert not report.ok, report
