"""The stores under an ACL user limited to exactly the documented rule (``stores.acl``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.platform.redis_servers import RedisCluster, RedisServer, store_kwargs
from turnstile.cli import main
from turnstile.stores.acl import Store, acl_rule, missing_permissions
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.timers.api import SessionTimer
from turnstile.stores.timers.redis import RedisTimerStore

PASSWORD = "acl-limited-pw"


def _nodes(topology: RedisServer | RedisCluster) -> list[RedisServer]:
    return topology.live_nodes() if isinstance(topology, RedisCluster) else [topology]


def _limit(
    topology: RedisServer | RedisCluster, user: str, store: Store, prefix: str | None,
    *, drop: str | None = None,
) -> None:
    rule = acl_rule(store, prefix, cluster=isinstance(topology, RedisCluster))
    if drop is not None:
        rule.remove(drop)
    for node in _nodes(topology):
        assert node.execute("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", *rule) == "OK"


def _denied(topology: RedisServer | RedisCluster, user: str) -> list[str]:
    denied = []
    for node in _nodes(topology):
        for entry in node.execute("ACL", "LOG") or []:
            fields = dict(zip(entry[::2], entry[1::2], strict=False))
            if fields.get("username") == user:
                denied.append(f"{fields.get('reason')} {fields.get('object')}")
    return denied


@pytest.fixture(params=["standard", "cluster"])
def topology(request: pytest.FixtureRequest) -> Iterator[RedisServer | RedisCluster]:
    yield request.getfixturevalue({"standard": "redis_server", "cluster": "redis_cluster"}[
        request.param])


async def test_locks_under_exactly_the_lock_rule(topology: Any) -> None:
    user, prefix = "locks" + uuid.uuid4().hex[:8], "p" + uuid.uuid4().hex[:8]
    _limit(topology, user, "lock_store", prefix)
    kwargs = store_kwargs(topology, db=0, username=user, password=PASSWORD, key_prefix=prefix,
                          failover_timeout=5)
    holder, waiter = (RedisTicketLockStore.from_kwargs(kwargs) for _ in range(2))
    cid = f"acl-{uuid.uuid4().hex}"
    tokens: list[int] = []

    async def wait_then_hold() -> None:
        async with waiter.lock(cid, wait_time=10) as held:
            tokens.append(held.fencing_token)

    try:
        async with holder.lock(cid) as first:
            tokens.append(first.fencing_token)
            task = asyncio.ensure_future(wait_then_hold())
            await asyncio.sleep(0.3)  # the waiter blocks on its wake-up list (BLPOP)
            assert not task.done()
        await asyncio.wait_for(task, 10)  # woken by the release (RPUSH in the script)
        assert tokens[1] > tokens[0]
        assert await holder.get_lock(cid) is None
        await holder.delete_lock(cid)
    finally:
        await holder.close()
        await waiter.close()
    assert _denied(topology, user) == []


async def test_timers_under_exactly_the_timer_rule(topology: Any) -> None:
    user, prefix = "timers" + uuid.uuid4().hex[:8], "p" + uuid.uuid4().hex[:8]
    _limit(topology, user, "timer_store", prefix)
    kwargs = store_kwargs(topology, db=0, username=user, password=PASSWORD, key_prefix=prefix,
                          failover_timeout=5)
    store = RedisTimerStore.from_kwargs(kwargs)
    try:
        now = time.time()
        await store.store_timer("alice", "s1", now - 1, {"k": 1})
        assert await store.get_timer("alice") == SessionTimer("alice", "s1", now - 1, {"k": 1})
        claimed = await store.claim_timers(await store.get_expired_timers(now))
        assert [t.sender_id for t in claimed] == ["alice"]
        await store.store_timer("bob", "s1", now + 3600)
        await store.delete_timer("bob")
        assert not store.using_fallback
    finally:
        await store.aclose()
    assert _denied(topology, user) == []


async def test_dryrun_names_a_missing_command_and_pattern(redis_server: RedisServer) -> None:
    user = "short" + uuid.uuid4().hex[:8]
    _limit(redis_server, user, "lock_store", "bot", drop="+blpop")
    client = aioredis.Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    try:
        missing = await missing_permissions(client, user, "lock_store", "bot")
        assert len(missing) == 1, missing
        assert "may not run BLPOP on keys bot:turnstile:lock:*" in missing[0]
        assert "add +blpop ~bot:turnstile:lock:*" in missing[0]
        _limit(redis_server, user, "lock_store", "bot")
        assert await missing_permissions(client, user, "lock_store", "bot") == []
        # The rule of another prefix: every keyed command is missing on these keys.
        assert len(await missing_permissions(client, user, "lock_store", "other")) > 5
    finally:
        await (getattr(client, "aclose", None) or client.close)()  # redis-py 4.5: close


def test_turnstile_check_acl_names_the_missing_command_and_pattern(
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = "bot" + uuid.uuid4().hex[:8]
    _limit(redis_server, user, "lock_store", "bot", drop="+blpop")
    _limit(redis_server, user + "t", "timer_store", "bot")
    monkeypatch.setenv("BOT_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("ADMIN_PASSWORD", "")
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "lock_store:\n  type: turnstile.rasa.TicketLockStore\n"
        f"  host: {redis_server.host}\n  port: {redis_server.port}\n  db: 0\n"
        f"  username: {user}\n  password: ${{BOT_REDIS_PASSWORD}}\n  key_prefix: bot\n"
        "timer_store:\n  type: turnstile.rasa.TimerStore\n"
        f"  host: {redis_server.host}\n  port: {redis_server.port}\n  db: 0\n"
        f"  username: {user}t\n  password: ${{BOT_REDIS_PASSWORD}}\n  key_prefix: bot\n"
    )
    # The check runs the store's operations, so the missing BLPOP shows without --acl (the
    # waiter's wake-up is what Redis refused), and the timer user passes.
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert (f"lock_store: FAIL MissingPermission: Redis ({redis_server.host}:"
            f"{redis_server.port}/0) refused ticket wait to ACL user '{user}': NOPERM") in out
    assert "'blpop'" in out, out
    assert "timer_store: OK standard" in out and "timer scripts" in out
    # The store's own user may not run ACL DRYRUN: the check says so and how to proceed.
    assert main(["check", "--acl", str(path)]) == 1
    out = capsys.readouterr().out
    assert "may not run ACL DRYRUN" in out and "--acl-admin-user" in out
    # With a user that may (the open default user here), the missing permission is named.
    assert main(["check", "--acl", "--acl-admin-user", "default",
                 "--acl-admin-password-env", "ADMIN_PASSWORD", str(path)]) == 1
    out = capsys.readouterr().out
    assert (f"lock_store: ACL FAIL user '{user}' may not run BLPOP on keys "
            "bot:turnstile:lock:*") in out
    assert "add +blpop ~bot:turnstile:lock:*" in out
    assert "timer_store: ACL OK" in out and "bot:turnstile:timers:*" in out
    assert PASSWORD not in out
    _limit(redis_server, user, "lock_store", "bot")
    assert main(["check", "--acl", "--acl-admin-user", "default",
                 "--acl-admin-password-env", "ADMIN_PASSWORD", str(path)]) == 0
    assert "lock_store: ACL OK" in capsys.readouterr().out
