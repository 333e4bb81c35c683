"""``turnstile locks show|ls|release`` on real Redis, in all three deployment modes.

The CLI reads an endpoints.yml written for the test topology and runs in a thread (it runs its
own event loop), while the test's stores hold and wait on the conversations it looks at.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.platform.redis_servers import RedisServer
from tests.redis.test_acl import PASSWORD as ACL_PASSWORD
from tests.redis.test_acl import _limit
from tests.redis.test_locks import MODES, kwargs_for, wait_for_tickets
from turnstile.cli import main
from turnstile.stores.locks.api import HeldTicket
from turnstile.stores.locks.redis import RedisTicketLockStore
from turnstile.stores.timers.redis import RedisTimerStore


@dataclass
class Setup:
    store: RedisTicketLockStore
    timers: RedisTimerStore
    endpoints: Path


@pytest.fixture(params=MODES)
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    fixture = {"standard": "redis_server", "cluster": "redis_cluster",
               "sentinel": "redis_sentinel"}[request.param]
    topology = request.getfixturevalue(fixture)
    kwargs = kwargs_for(topology)
    # A fresh timer key_prefix: ``timers ls`` sees this test's timers only.
    timer_kwargs = kwargs_for(topology, key_prefix="t" + uuid.uuid4().hex[:12])
    path = tmp_path / "endpoints.yml"
    path.write_text(yaml.safe_dump({
        "lock_store": {"type": "turnstile.rasa.TicketLockStore", **kwargs},
        "timer_store": {"type": "turnstile.rasa.TimerStore", **timer_kwargs},
    }))
    store = RedisTicketLockStore.from_kwargs(kwargs)
    timers = RedisTimerStore.from_kwargs(timer_kwargs)
    yield Setup(store, timers, path)
    await store.close()
    await timers.aclose()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Queue:
    """A held conversation with waiters, each an ``async with store.lock(...)`` task."""

    def __init__(self, store: RedisTicketLockStore, cid: str) -> None:
        self.store, self.cid = store, cid
        self.held: list[HeldTicket] = []
        self.go: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def add(self) -> asyncio.Event:
        go = asyncio.Event()
        self.go.append(go)

        async def hold() -> None:
            async with self.store.lock(self.cid, lock_lifetime=20) as held:
                self.held.append(held)
                await go.wait()

        self.tasks.append(asyncio.create_task(hold()))
        await wait_for_tickets(self.store, self.cid, len(self.tasks))
        return go

    async def close(self) -> None:
        for go in self.go:
            go.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 10)


def conversation(prefix: str = "insp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_show_ls_and_release_of_a_held_conversation(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"grp{uuid.uuid4().hex[:8]}"
    cid, other = f"{group}-a", f"{group}-b"
    queue, second = Queue(setup.store, cid), Queue(setup.store, other)
    ep = ("--endpoints", str(setup.endpoints))
    try:
        for _ in range(3):
            await queue.add()
        await second.add()
        assert len(queue.held) == 1
        holder = queue.held[0].fencing_token
        lock = await setup.store.get_lock(cid)
        assert lock is not None
        numbers = [t.number for t in lock.tickets]

        code, out, _ = await cli(capsys, "locks", "show", *ep, "--json", cid)
        assert code == 0
        shown = json.loads(out)
        assert shown["holder"]["number"] == holder == numbers[0]
        assert [w["number"] for w in shown["waiters"]] == numbers[1:]
        assert 0 < shown["waiters"][0]["expires_in"] <= 20

        code, out, _ = await cli(capsys, "locks", "show", *ep, cid)
        assert code == 0
        lines = out.splitlines()
        assert lines[2].split()[:2] == ["holder", str(holder)]
        assert lines[3].split()[:3] == ["waiter", "1", str(numbers[1])]
        assert lines[4].split()[:3] == ["waiter", "2", str(numbers[2])]

        code, out, _ = await cli(capsys, "locks", "ls", *ep, "--prefix", group, "--json")
        assert code == 0
        listing = json.loads(out)
        assert listing["scanned"] is True and listing["stopped_at_limit"] is False
        assert {c["conversation_id"] for c in listing["conversations"]} == {cid, other}
        code, out, _ = await cli(capsys, "locks", "ls", *ep, "--prefix", group, "--limit", "1")
        assert code == 0
        assert "scanned" in out and "stopped at the limit of 1" in out

        code, _, err = await cli(capsys, "locks", "release", *ep, cid, "--ticket", "12345")
        assert code == 1
        assert "ticket 12345 is not in the queue" in err and "nothing released" in err

        code, out, _ = await cli(capsys, "locks", "release", *ep, cid, "--ticket", str(holder))
        assert code == 0, out
        assert f"released ticket {holder}" in out
        for _ in range(300):  # the first waiter's task gets in
            if len(queue.held) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(queue.held) == 2
        assert queue.held[1].fencing_token == numbers[1] > holder
        code, out, _ = await cli(capsys, "locks", "show", *ep, "--json", cid)
        assert json.loads(out)["holder"]["number"] == numbers[1]
    finally:
        await queue.close()
        await second.close()


async def test_a_free_conversation_shows_free(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await cli(
        capsys, "locks", "show", "--endpoints", str(setup.endpoints), conversation()
    )
    assert code == 0
    assert "free: no live ticket" in out


async def test_timers_show_and_ls_list_scheduled_timers(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    ep = ("--endpoints", str(setup.endpoints))
    now = time.time()
    first, second, third = conversation("tim"), conversation("tim"), conversation("tim")
    await setup.timers.store_timer(second, "s2", now + 600, {"api_token": "sekrit-value"})
    await setup.timers.store_timer(first, "s1", now + 300)
    await setup.timers.store_timer(third, None, now + 900)

    code, out, _ = await cli(capsys, "timers", "show", *ep, "--json", second)
    assert code == 0
    shown = json.loads(out)["timer"]
    assert shown["scheduled_time"] == pytest.approx(now + 600)
    assert shown["session_id"] == "s2" and shown["metadata_keys"] == ["api_token"]
    assert 590 < shown["due_in"] <= 600 and shown["leased"] is False
    code, out, _ = await cli(capsys, "timers", "show", *ep, second)
    assert code == 0 and second in out and "api_token" in out
    assert "sekrit" not in out
    code, out, _ = await cli(capsys, "timers", "show", *ep, conversation())
    assert code == 0 and "no pending timer" in out

    code, out, _ = await cli(capsys, "timers", "ls", *ep, "--json")
    assert code == 0
    listing = json.loads(out)
    assert [t["sender_id"] for t in listing["timers"]] == [first, second, third]
    assert listing["stopped_at_limit"] is False
    code, out, _ = await cli(capsys, "timers", "ls", *ep, "--limit", "2")
    assert code == 0
    assert "stopped at the limit of 2" in out
    rows = out.splitlines()[2:]
    assert [r.split()[0] for r in rows] == [first, second]
    assert "sekrit" not in out


@pytest.mark.parametrize(("argv", "message"), [
    (["ls", "--limit", "zero"], "--limit: a whole number >= 1 up to 1000000 (got 'zero')"),
    (["release", "c", "--ticket", "-3"], "--ticket: a whole number >= 1 (got '-3')"),
    (["timers", "ls", "--limit", "0"], "--limit: a whole number >= 1 up to 100000 (got '0')"),
])
def test_bad_arguments_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text("lock_store:\n  type: turnstile.rasa.TicketLockStore\n"
                    "timer_store:\n  type: turnstile.rasa.TimerStore\n")
    command = [] if argv[0] == "timers" else ["locks"]
    assert main([*command, *argv, "--endpoints", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_other_store_types_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text("lock_store:\n  type: redis\n  password: hunter2-secret\n")
    assert main(["locks", "show", "--endpoints", str(path), "c"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "lock_store type redis is not Turnstile's" in err
    assert "hunter2" not in err
    path.write_text("timer_store:\n  type: redis\n")
    assert main(["timers", "ls", "--endpoints", str(path)]) == 2
    assert "timer_store type redis is not Turnstile's" in capsys.readouterr().err


def test_bad_settings_and_missing_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text("lock_store:\n  type: turnstile.rasa.TicketLockStore\n  port: many\n"
                    "  password: hunter2-secret\n")
    assert main(["locks", "show", "--endpoints", str(path), "c"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("turnstile locks show: ") and "port" in err and "'many'" in err
    assert err.count("\n") == 1 and "hunter2" not in err
    assert main(["locks", "ls", "--endpoints", str(tmp_path / "nope.yml")]) == 2
    assert "nope.yml: No such file or directory" in capsys.readouterr().err


async def test_under_the_bots_own_acl_rules(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """show, release and the timer commands need only the stores' ACL rules; ls needs SCAN,
    which the lock rule leaves out, and says so (the password never printed)."""
    tag = uuid.uuid4().hex[:8]
    lock_user, timer_user, prefix = f"il{tag}", f"it{tag}", f"p{tag}"
    _limit(redis_server, lock_user, "lock_store", prefix)
    _limit(redis_server, timer_user, "timer_store", prefix)
    monkeypatch.setenv("INSPECT_PW", ACL_PASSWORD)
    common = {"host": redis_server.host, "port": redis_server.port, "db": 0,
              "key_prefix": prefix, "password": "${INSPECT_PW}"}
    path = tmp_path / "endpoints.yml"
    path.write_text(yaml.safe_dump({
        "lock_store": {"type": "turnstile.rasa.TicketLockStore", "username": lock_user,
                       **common},
        "timer_store": {"type": "turnstile.rasa.TimerStore", "username": timer_user, **common},
    }))
    ep = ("--endpoints", str(path))
    mine = {k: v for k, v in common.items() if k != "password"}  # the default user
    store = RedisTicketLockStore.from_kwargs(mine)
    timers = RedisTimerStore.from_kwargs(mine)
    queue = Queue(store, conversation())
    try:
        await queue.add()
        await queue.add()
        await timers.store_timer(queue.cid, "s", time.time() + 60)
        code, out, _ = await cli(capsys, "locks", "show", *ep, "--json", queue.cid)
        assert code == 0 and len(json.loads(out)["waiters"]) == 1
        code, out, err = await cli(capsys, "locks", "ls", *ep)
        assert code == 1
        assert "refused SCAN" in err and "use show" in err
        code, out, _ = await cli(capsys, "timers", "ls", *ep, "--json")
        assert code == 0 and [t["sender_id"] for t in json.loads(out)["timers"]] == [queue.cid]
        code, out, _ = await cli(capsys, "timers", "show", *ep, queue.cid)
        assert code == 0 and queue.cid in out
        holder = queue.held[0].fencing_token
        code, out, err = await cli(capsys, "locks", "release", *ep, queue.cid,
                                   "--ticket", str(holder))
        assert code == 0, err
        for _ in range(300):
            if len(queue.held) == 2:
                break
            await asyncio.sleep(0.01)
        assert queue.held[1].fencing_token > holder
        assert ACL_PASSWORD not in out + err
    finally:
        await queue.close()
        await store.close()
        await timers.aclose()
