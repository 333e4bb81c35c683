"""Credential providers on real Redis: a rotated password file, an ElastiCache IAM token."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.platform.redis_servers import RedisServer, store_kwargs
from turnstile.stores._redis import credentials as creds
from turnstile.stores._redis.connection import RedisConnection
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.locks.redis import RedisTicketLockStore

USER = "rotating"


def _acl(server: RedisServer, *rule: str) -> None:
    assert server.execute("ACL", "SETUSER", USER, "reset", "on", *rule, "~*", "&*", "+@all") == "OK"


def _clients_of(server: RedisServer, user: str) -> int:
    listing = str(server.execute("CLIENT", "LIST"))
    return sum(1 for line in listing.splitlines() if f" user={user} " in line)


async def test_a_rotated_password_file_reaches_new_connections_without_a_failed_cycle(
    fresh_redis_server: RedisServer, tmp_path: Path
) -> None:
    server = fresh_redis_server
    _acl(server, ">old-password-1")
    secret = tmp_path / "password"
    secret.write_text("old-password-1\n")  # a trailing newline, as `echo` leaves it
    kwargs = store_kwargs(
        server, db=0, username=USER, password_file=str(secret), failover_timeout=10
    )
    store = RedisTicketLockStore.from_kwargs(kwargs)
    done = failed = 0
    stop = asyncio.Event()

    async def cycles() -> None:
        nonlocal done, failed
        for _ in range(100_000):  # bounded; ends on ``stop``
            if stop.is_set():
                return
            try:
                async with store.lock(f"rot-{uuid.uuid4().hex}") as held:
                    assert held.fencing_token > 0
                done += 1
            except Exception:
                failed += 1
            await asyncio.sleep(0.002)

    streams = [asyncio.create_task(cycles()) for _ in range(4)]
    try:
        await asyncio.sleep(0.5)
        before = done
        assert before > 0 and _clients_of(server, USER) > 0
        # Rotate: the server takes the new password (the old one stops working), the mounted
        # Secret changes, and every open connection of the user is cut (new ones must AUTH).
        _acl(server, ">new-password-2")
        tmp = tmp_path / "password.tmp"
        tmp.write_text("new-password-2")
        tmp.replace(secret)  # atomic, as the kubelet's symlink swap
        server.execute("CLIENT", "KILL", "USER", USER)
        await asyncio.sleep(1.0)
        assert done > before + 10, (before, done)
        assert _clients_of(server, USER) > 0  # reconnected, with the new password
    finally:
        stop.set()
        await asyncio.gather(*streams)
        await store.close()
    assert failed == 0, f"{failed} of {done + failed} lock cycles failed during the rotation"
    # A new store (a restarted pod) reads the new password too.
    fresh = RedisTicketLockStore.from_kwargs(kwargs)
    try:
        async with fresh.lock("after-rotation") as held:
            assert held.fencing_token > 0
    finally:
        await fresh.close()


def test_password_file_errors_name_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError) as caught:
        RedisSettings.read(SettingsReader({"password_file": str(missing)}, section="lock_store"))
    assert str(caught.value).startswith(
        "lock_store.password_file: a readable file holding the password"
    )
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value")
    with pytest.raises(ConfigurationError) as caught:
        RedisSettings.read(
            SettingsReader({"password_file": str(secret), "password": "x"}, section="lock_store")
        )
    assert "lock_store.password_file" in str(caught.value)
    settings = RedisSettings.read(SettingsReader({"password_file": str(secret)}, section="s"))
    provider = creds.credential_provider(settings)
    assert isinstance(provider, creds.PasswordFileProvider)
    assert provider.get_credentials() == ("s3cret-value",)
    assert "s3cret-value" not in repr(provider) + repr(settings)


# ---- ElastiCache IAM ----------------------------------------------------------------------

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLETURNSTILE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars",
}


def _iam_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        **FAKE_AWS,
        "IAM_CLOUD_PROVIDER": "aws",
        "ELASTICACHE_REDIS_AWS_IAM_ENABLED": "true",
        "AWS_ELASTICACHE_CLUSTER_NAME": "turnstile-cache",
        "AWS_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setattr(creds, "aws_credentials", _env_credentials)


def _env_credentials() -> creds.AwsCredentials:
    import os  # noqa: PLC0415

    return (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ["AWS_SESSION_TOKEN"])


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_elasticache_iam_token_authenticates_and_is_renewed_before_expiry(
    fresh_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fresh_redis_server
    _iam_env(monkeypatch)
    clock = _Clock(1_767_225_600.0)  # 2026-01-01T00:00:00Z
    real = creds.ElastiCacheIAMProvider

    def with_clock(*args: Any, **kwargs: Any) -> creds.ElastiCacheIAMProvider:
        return real(*args, **{**kwargs, "clock": clock, "credentials": _env_credentials})

    monkeypatch.setattr(creds, "ElastiCacheIAMProvider", with_clock)
    kwargs = store_kwargs(server, db=0, username=USER, failover_timeout=5)
    settings = RedisSettings.read(SettingsReader(kwargs, section="lock_store"))
    provider = creds.credential_provider(settings)
    assert isinstance(provider, real)
    user, token = provider.get_credentials()
    assert user == USER
    assert token.startswith("turnstile-cache/?Action=connect&User=rotating&X-Amz-Algorithm=")
    assert "X-Amz-Expires=900" in token and "X-Amz-Date=20260101T000000Z" in token
    assert "X-Amz-Security-Token=" in token and "X-Amz-Signature=" in token
    assert FAKE_AWS["AWS_SECRET_ACCESS_KEY"] not in token + repr(provider)
    _acl(server, f">{token}")  # the server stands in for ElastiCache: the token is the password

    store = RedisTicketLockStore.from_kwargs(kwargs)
    try:
        async with store.lock("iam") as held:
            assert held.fencing_token > 0
    finally:
        await store.close()

    # Within the token's life minus the 60 s margin: the same token.
    clock.now += 900 - 61
    assert provider.get_credentials()[1] == token
    # Past it: a new token, which new connections present (the old one is refused now).
    clock.now += 2
    renewed = provider.get_credentials()[1]
    assert renewed != token and provider.signed == 2
    _acl(server, f">{renewed}")
    connection = RedisConnection(settings)  # its own provider, on the same (moved) clock
    try:
        assert await connection.run(lambda c: c.ping())  # the redis-py client
    finally:
        await connection.close()
    store = RedisTicketLockStore.from_kwargs(kwargs)  # and the multiplexed lane
    try:
        async with store.lock("iam-renewed") as held:
            assert held.fencing_token > 0
    finally:
        await store.close()
    # A token that is not the user's password is refused at once, naming no secret.
    _acl(server, ">something-else")
    refused = RedisConnection(settings)
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="refused the credentials") as caught:
            await refused.run(lambda c: c.ping())
    finally:
        await refused.close()
    assert time.monotonic() - started < 5
    assert renewed not in str(caught.value)


def _auth_stats(server: RedisServer) -> tuple[int, int]:
    stats = server.info("commandstats").get("cmdstat_auth", "")
    fields = dict(part.split("=") for part in str(stats).split(",") if "=" in part)
    return int(fields.get("calls", 0)), int(fields.get("failed_calls", 0))


async def test_the_multiplexed_lane_re_auths_with_a_fresh_token(
    fresh_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fresh_redis_server
    _iam_env(monkeypatch)
    clock = _Clock(1_767_225_600.0)
    real = creds.ElastiCacheIAMProvider
    made: list[creds.ElastiCacheIAMProvider] = []

    def quick(*args: Any, **kwargs: Any) -> creds.ElastiCacheIAMProvider:
        provider = real(*args, **{**kwargs, "clock": clock, "credentials": _env_credentials})
        provider.reauth_every = 0.2  # ElastiCache's 12 h, shortened
        made.append(provider)
        return provider

    monkeypatch.setattr(creds, "ElastiCacheIAMProvider", quick)
    kwargs = store_kwargs(server, db=0, username=USER, failover_timeout=5)
    token = quick(USER, "turnstile-cache", "eu-west-1").token()
    _acl(server, f">{token}")
    store = RedisTicketLockStore.from_kwargs(kwargs)
    try:
        async with store.lock("reauth"):
            pass
        clock.now += 900  # the token expired: the next re-AUTH signs a new one
        renewed = made[-1].token()
        assert renewed != token
        _acl(server, f">{renewed}")  # only the new token is accepted from now on
        calls, failed = _auth_stats(server)
        await asyncio.sleep(0.7)
        calls_after, failed_after = _auth_stats(server)
        assert calls_after >= calls + 2, (calls, calls_after)
        assert failed_after == failed, "a re-AUTH presented a stale token"
        async with store.lock("reauth-after"):  # the same lane, still working
            pass
    finally:
        await store.close()


async def test_a_password_for_a_redis_without_one_works_as_with_redis_py(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py connects when a password is set and Redis has none (its default user is
    ``nopass``), so Rasa's own stores do; the lock scripts' connection must too, and say so."""
    store = RedisTicketLockStore(
        RedisSettings(host=redis_server.host, port=redis_server.port, password="not-needed")
    )
    try:
        with caplog.at_level("WARNING", logger="turnstile.stores._redis.multiplexed"):
            for _ in range(2):
                async with store.lock(f"nopass-{uuid.uuid4().hex}") as held:
                    assert held.fencing_token > 0
    finally:
        await store.close()
    warnings = [r.getMessage() for r in caplog.records if "has no password" in r.getMessage()]
    assert len(warnings) <= 1 and "not-needed" not in " ".join(warnings)
