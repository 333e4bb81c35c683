"""``turnstile check`` against real Redis: a bot's endpoints.yml, ${VAR}s from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.platform.redis_fixtures import REDIS_PASSWORD
from tests.platform.redis_servers import RedisCluster, RedisServer, SentinelGroup
from turnstile.cli import main


def test_check_passes_for_working_stores_in_every_mode(  # noqa: PLR0917 (fixtures)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_password_server: RedisServer,
    redis_cluster: RedisCluster,
    redis_sentinel: SentinelGroup,
) -> None:
    monkeypatch.setenv("TURNSTILE_LOCK_STORE_PASSWORD", REDIS_PASSWORD)
    server = redis_password_server
    sentinels = "".join(f"  - {e}\n" for e in redis_sentinel.endpoints)
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "lock_store:\n  type: turnstile.rasa.TicketLockStore\n  deployment_mode: standard\n"
        f"  host: {server.host}\n  port: {server.port}\n"
        "  password: ${TURNSTILE_LOCK_STORE_PASSWORD}\n"
        "timer_store:\n  type: redis\n  deployment_mode: sentinel\n  endpoints:\n" + sentinels
        + f"  sentinel_service: {redis_sentinel.service_name}\n"
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "lock_store: OK standard" in out
    assert "timer_store: OK sentinel" in out
    assert REDIS_PASSWORD not in out
    nodes = "".join(f"  - {e}\n" for e in redis_cluster.endpoints)
    path.write_text("lock_store:\n  type: concurrent_redis\n  deployment_mode: cluster\n"
                    "  endpoints:\n" + nodes)
    assert main(["check", str(path)]) == 0
    assert "lock_store: OK cluster" in capsys.readouterr().out


def test_check_fails_on_a_wrong_password(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_password_server: RedisServer,
) -> None:
    monkeypatch.setenv("TURNSTILE_LOCK_STORE_PASSWORD", "not-it-xyz")
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "lock_store:\n  type: turnstile.rasa.TicketLockStore\n"
        f"  host: {redis_password_server.host}\n  port: {redis_password_server.port}\n"
        "  password: ${TURNSTILE_LOCK_STORE_PASSWORD}\n"
    )
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "lock_store: FAIL AuthenticationFailed" in out
    assert "not-it-xyz" not in out
