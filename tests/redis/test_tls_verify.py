"""TLS verifies the server by default: against the system trust store when no CA is given.

The "system" trust store is one the test writes: ``SSL_CERT_FILE`` names a bundle holding the
test CA, set before the TLS context is made (OpenSSL reads it when the default verify paths
are loaded, as ``ssl.create_default_context`` does for both connection paths).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.platform.redis_fixtures import require_redis_tls
from tests.platform.redis_servers import RedisServer, store_kwargs
from turnstile.stores import config
from turnstile.stores._redis.connection import RedisConnection
from turnstile.stores.config import RedisSettings, SettingsReader
from turnstile.stores.errors import ConfigurationError, TurnstileError
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.probe import probe


@pytest.fixture(scope="module")
def wrong_name_server() -> Iterator[RedisServer]:
    """A TLS server whose certificate (from its own CA) names another host."""
    require_redis_tls()
    with RedisServer(
        tls=True, tls_server_names="DNS:redis.elsewhere.invalid", name="redis-tls-wrongname"
    ) as server:
        yield server


def _trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *cas: Path) -> None:
    """Make ``cas`` the system trust store for this test (and nothing else)."""
    bundle = tmp_path / "system-bundle.pem"
    bundle.write_text("".join(ca.read_text() for ca in cas))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))


def _kwargs(server: RedisServer, **extra: Any) -> dict[str, Any]:
    return store_kwargs(server, **{"db": 0, "use_ssl": True, "failover_timeout": 10, **extra})


async def _lock_cycle(kwargs: dict[str, Any]) -> int:
    store = RedisTicketLockStore.from_kwargs(kwargs)
    try:
        async with store.lock(f"tls-{uuid.uuid4().hex}") as held:
            return held.fencing_token
    finally:
        await store.close()


async def test_a_ca_in_the_system_store_is_trusted_without_ssl_ca_certs(
    redis_tls_server: RedisServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _trust(monkeypatch, tmp_path, redis_tls_server.ca_cert)
    kwargs = _kwargs(redis_tls_server)
    assert "ssl_ca_certs" not in kwargs
    assert await _lock_cycle(kwargs) > 0  # the multiplexed lane
    settings = RedisSettings.read(SettingsReader(kwargs, section="lock_store"))
    assert settings.verifies_server and settings.verifies_hostname
    connection = RedisConnection(settings)  # the redis-py client
    try:
        assert await connection.run(lambda c: c.ping())
    finally:
        await connection.close()
    report = await probe(settings)
    assert report.ok, report.message


async def test_an_untrusted_certificate_is_refused_at_once(
    redis_tls_server: RedisServer,
    wrong_name_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _trust(monkeypatch, tmp_path, wrong_name_server.ca_cert)  # some other CA only
    kwargs = _kwargs(redis_tls_server)
    started = time.monotonic()
    with pytest.raises(TurnstileError) as caught:
        await _lock_cycle(kwargs)
    assert time.monotonic() - started < 5, "a refused certificate must not be retried"
    message = str(caught.value)
    assert "TLS certificate refused" in message
    assert "certificate" in message and "system trust store" in message
    settings = RedisSettings.read(SettingsReader(kwargs, section="lock_store"))
    connection = RedisConnection(settings)
    try:
        with pytest.raises(TurnstileError, match="TLS certificate refused"):
            await connection.run(lambda c: c.ping())
    finally:
        await connection.close()
    report = await probe(settings)
    assert not report.ok and report.reason == "TLSVerificationFailed", report


async def test_a_certificate_for_another_host_name_is_refused(
    wrong_name_server: RedisServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _trust(monkeypatch, tmp_path, wrong_name_server.ca_cert)
    for extra in ({}, {"ssl_ca_certs": str(wrong_name_server.ca_cert)}):
        with pytest.raises(TurnstileError) as caught:
            await _lock_cycle(_kwargs(wrong_name_server, **extra))
        message = str(caught.value)
        assert "TLS certificate refused" in message
        assert "mismatch" in message, message  # OpenSSL: "IP address mismatch, ..."
    settings = RedisSettings.read(SettingsReader(_kwargs(wrong_name_server), section="x"))
    report = await probe(settings)
    assert not report.ok and report.reason == "TLSVerificationFailed", report
    assert "mismatch" in report.message
    # Host name checks alone can be turned off, explicitly; the CA is still verified.
    assert await _lock_cycle(_kwargs(wrong_name_server, ssl_check_hostname=False)) > 0


async def test_ssl_cert_reqs_none_connects_and_warns(
    redis_tls_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _trust(monkeypatch, tmp_path)  # an empty system store: nothing is trusted
    monkeypatch.setattr(config, "_WARNED_TLS", set())  # a fresh process, as far as warnings go
    caplog.set_level(logging.WARNING, logger="turnstile.stores.config")
    assert await _lock_cycle(_kwargs(redis_tls_server, ssl_cert_reqs="none")) > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("does not verify the server's certificate" in w for w in warnings), warnings
    assert any("ssl_cert_reqs is 'none'" in w for w in warnings), warnings
    # Said once per process: the same settings read again (an operator re-check) stay quiet.
    caplog.clear()
    assert await _lock_cycle(_kwargs(redis_tls_server, ssl_cert_reqs="none")) > 0
    assert not [r for r in caplog.records if "ssl_cert_reqs" in r.getMessage()]


def test_a_bad_ssl_cert_reqs_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisSettings.read(SettingsReader({"ssl_cert_reqs": "sometimes"}, section="lock_store"))
    assert str(caught.value) == (
        "lock_store.ssl_cert_reqs: one of required, optional, none (got 'sometimes')"
    )
