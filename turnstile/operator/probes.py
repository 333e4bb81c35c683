"""Run the store library's probe for a store, with the store's Secrets, as a bot would connect.

The probe itself is :func:`turnstile.stores.probe.probe` (shared with ``turnstile check`` and bot
images). This module turns a :class:`~turnstile.operator.model.specs.StoreSpec` plus resolved
:class:`~turnstile.operator.decide.credentials.Credentials` into
:class:`~turnstile.stores.config.RedisSettings` (:func:`settings_for`, pure) and, for TLS, writes
the certificate material to a private temporary directory that exists only for the probe.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from turnstile.operator.decide.credentials import Credentials, redact
from turnstile.operator.model.specs import StoreSpec
from turnstile.stores.acl import Store
from turnstile.stores.config import RedisSettings, parse_address
from turnstile.stores.probe import ProbeReport, probe


def settings_for(
    store: StoreSpec, credentials: Credentials, *, tls_dir: Path | None = None
) -> RedisSettings:
    """The settings a bot would build from the rendered section, with real values."""
    redis = store.redis
    endpoints = tuple(
        parse_address(item, key=f"spec.redis.endpoints[{i}]")
        for i, item in enumerate(redis.endpoints)
    )
    if redis.deployment_mode == "cluster" and not endpoints and redis.host:
        endpoints = ((redis.host, redis.port),)
    ca = cert = key = None
    if tls_dir is not None:
        if credentials.ca_pem is not None:
            ca = str(tls_dir / "ca.crt")
        if credentials.cert_pem is not None:
            cert, key = str(tls_dir / "tls.crt"), str(tls_dir / "tls.key")
    return RedisSettings(
        deployment_mode=redis.deployment_mode,
        host=redis.host or "localhost",
        port=redis.port,
        db=store.db,
        username=redis.username,
        password=credentials.password,
        use_ssl=redis.tls.enabled,
        ssl_ca_certs=ca,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_cert_reqs="required" if redis.tls.verify else "none",
        ssl_check_hostname=redis.tls.check_hostname,
        key_prefix=redis.key_prefix,
        socket_timeout=redis.socket_timeout or RedisSettings.socket_timeout,
        endpoints=endpoints,
        sentinel_service=redis.sentinel_service or "mymaster",
        sentinel_username=redis.sentinel.username,
        sentinel_password=credentials.sentinel_password,
        sentinel_use_ssl=redis.sentinel.tls,
    )


def _exercised(store: StoreSpec) -> Store | None:
    """Which store's operations the probe runs: Turnstile's own; Rasa's stores are pinged."""
    if store.implementation != "turnstile":
        return None
    return "lock_store" if store.info.section == "lock_store" else "timer_store"


def _write(path: Path, blob: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)


#: Seconds beyond the probe timeout a whole check may take (connection set-up and close
#: included) before it is given up as unreachable.
CLOSE_GRACE = 1.0


async def check(store: StoreSpec, credentials: Credentials, *, timeout: float) -> ProbeReport:
    """Probe the store's Redis; the report's message is scrubbed of every secret value.

    The whole check, closing the connection included, ends within ``timeout`` plus
    :data:`CLOSE_GRACE` seconds: a host that accepts connections and never answers costs a
    reconcile (and so a store's deletion waiting behind it) no more than that.
    """
    bound = max(timeout, 0.1) + CLOSE_GRACE
    try:
        return await asyncio.wait_for(_check(store, credentials, timeout=timeout), timeout=bound)
    except (TimeoutError, asyncio.TimeoutError):
        where = settings_for(store, credentials).where
        return ProbeReport(
            ok=False,
            mode=store.redis.deployment_mode,
            reason="Unreachable",
            message=f"Redis ({where}) did not answer within {bound:g}s",
        )


async def _check(store: StoreSpec, credentials: Credentials, *, timeout: float) -> ProbeReport:
    if not store.redis.tls.enabled:
        report = await probe(settings_for(store, credentials), timeout=timeout,
                             store=_exercised(store), db_key="spec.redis.db")
    else:
        with tempfile.TemporaryDirectory(prefix="turnstile-tls-") as raw_dir:
            tls_dir = Path(raw_dir)
            for name, blob in (
                ("ca.crt", credentials.ca_pem),
                ("tls.crt", credentials.cert_pem),
                ("tls.key", credentials.key_pem),
            ):
                if blob is not None:
                    _write(tls_dir / name, blob)
            settings = settings_for(store, credentials, tls_dir=tls_dir)
            report = await probe(
                settings, timeout=timeout, store=_exercised(store), db_key="spec.redis.db"
            )
    return replace(report, message=redact(report.message, credentials))
